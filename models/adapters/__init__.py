"""Per-family adapters and the registry that picks one by ``config.model_type``."""

from .base import FamilyAdapter, RowInputs
from .gemma3 import Gemma3Adapter
from .idefics3 import Idefics3Adapter
from .instructblip import InstructBlipAdapter
from .internvl import InternVLAdapter
from .llava import LlavaAdapter
from .llava_next import LlavaNextAdapter
from .llava_onevision import LlavaOnevisionAdapter
from .qwen2_vl import Qwen2_5_VLAdapter, Qwen2VLAdapter
from .qwen3_vl import Qwen3VLAdapter

ADAPTERS: dict[str, type[FamilyAdapter]] = {
    "llava": LlavaAdapter,
    "llava_next": LlavaNextAdapter,
    "llava_onevision": LlavaOnevisionAdapter,
    "qwen2_vl": Qwen2VLAdapter,
    "qwen2_5_vl": Qwen2_5_VLAdapter,
    "qwen3_vl": Qwen3VLAdapter,
    "gemma3": Gemma3Adapter,
    "idefics3": Idefics3Adapter,
    "internvl": InternVLAdapter,
    "instructblip": InstructBlipAdapter,
}

SUPPORTED_FAMILIES: tuple[str, ...] = tuple(ADAPTERS)

__all__ = [
    "ADAPTERS",
    "SUPPORTED_FAMILIES",
    "FamilyAdapter",
    "Gemma3Adapter",
    "Idefics3Adapter",
    "InstructBlipAdapter",
    "InternVLAdapter",
    "RowInputs",
    "LlavaAdapter",
    "LlavaNextAdapter",
    "LlavaOnevisionAdapter",
    "Qwen2VLAdapter",
    "Qwen2_5_VLAdapter",
    "Qwen3VLAdapter",
]
