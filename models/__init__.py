"""Model loading and the per-family adapters that the decoding engine talks to."""

from .adapters import ADAPTERS, SUPPORTED_FAMILIES
from .adapters.base import FamilyAdapter, RowInputs
from .loader import ModelLoadError, choose_device, choose_dtype, load_model
from .tiny import TINY_FAMILIES, build_tiny, random_llava_1_5_7b

__all__ = [
    "ADAPTERS",
    "SUPPORTED_FAMILIES",
    "TINY_FAMILIES",
    "FamilyAdapter",
    "ModelLoadError",
    "RowInputs",
    "build_tiny",
    "choose_device",
    "choose_dtype",
    "load_model",
    "random_llava_1_5_7b",
]
