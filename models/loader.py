"""Load any supported Hugging Face image-text-to-text checkpoint and wrap it in its family's adapter."""

from __future__ import annotations

import os

import torch

from .adapters import ADAPTERS, SUPPORTED_FAMILIES
from .adapters.base import FamilyAdapter

QUANTIZATION_MODES = (None, "4bit", "8bit")
_DTYPE_NAMES = {
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
}
HUB_PROBE_TIMEOUT_S = 5.0


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says which and why."""


# ---- device, dtype, quantization ----------------------------------------------------------------------------------

def choose_device(device: str | torch.device | None = None) -> torch.device:
    """The given device, else ``cuda`` when available, else ``cpu``."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {str(device)!r} was asked for but CUDA is not available on this machine")
    return device


def choose_dtype(device: str | torch.device, dtype: str | torch.dtype | None = None) -> torch.dtype:
    """The given dtype (a torch dtype or a name such as "bf16", "fp16", "fp32", "auto"), else the device's default:
    bf16 on CUDA where supported, else fp16 on CUDA; fp32 on CPU (and other devices)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if isinstance(dtype, str) and dtype.lower() != "auto":
        try:
            return _DTYPE_NAMES[dtype.lower()]
        except KeyError:
            raise ModelLoadError(f"unknown dtype {dtype!r}; use one of {', '.join(_DTYPE_NAMES)} or 'auto'") from None
    if dtype is not None and not isinstance(dtype, str):
        raise ModelLoadError(f"dtype must be a torch.dtype, a name or None, not {type(dtype).__name__}")
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def quantization_config(quantization: str | None, device: torch.device, dtype: torch.dtype):
    """A ``BitsAndBytesConfig`` for "4bit" (nf4, compute dtype = ``dtype``) or "8bit"; None for None. Raises
    ``ModelLoadError`` when this machine cannot run it (no CUDA device, bitsandbytes missing)."""
    if isinstance(quantization, str):
        quantization = quantization.lower().replace("-", "")
        quantization = None if quantization in ("", "none") else quantization
    if quantization not in QUANTIZATION_MODES:
        raise ModelLoadError(f"quantization must be one of None, '4bit', '8bit'; got {quantization!r}")
    if quantization is None:
        return None
    if device.type != "cuda" or not torch.cuda.is_available():
        raise ModelLoadError(
            f"{quantization} quantization needs a CUDA GPU (bitsandbytes); this load is on {str(device)!r}"
            + ("" if torch.cuda.is_available() else " and no CUDA device is available")
        )
    try:
        import bitsandbytes  # noqa: F401
    except Exception as e:  # ImportError, or a broken install
        raise ModelLoadError(f"{quantization} quantization needs bitsandbytes (pip install bitsandbytes): {e}") from e
    from transformers import BitsAndBytesConfig

    if quantization == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype)
    return BitsAndBytesConfig(load_in_8bit=True)


# ---- where the checkpoint is -----------------------------------------------------------------------------------------

def _looks_like_path(name: str) -> bool:
    if name in (".", "..") or name.startswith(("/", "./", "../", "~", ".\\", "..\\")) or os.path.isabs(name):
        return True
    parts = [p for p in name.replace("\\", "/").split("/")]
    if len(parts) > 2 or "" in parts:
        return True  # a Hub id is "name" or "org/name"
    return len(parts) == 2 and os.path.exists(parts[0])  # "dir/missing": a path whose start exists


def _hub_offline() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE", os.environ.get("TRANSFORMERS_OFFLINE", ""))
    if value.strip().upper() in ("1", "ON", "YES", "TRUE"):
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except Exception:  # noqa: BLE001 (an old or broken huggingface_hub: then we are not told to stay offline)
        return False


def _probe_hub(name: str) -> None:
    """One metadata request with a short timeout, so that an unreachable Hub or a wrong id fails in about a second
    (the download path retries with back-off for tens of seconds before giving up)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        HfApi().model_info(name, timeout=HUB_PROBE_TIMEOUT_S)
    except GatedRepoError as e:
        raise ModelLoadError(f"model {name!r} is gated on the Hugging Face Hub: accept its licence and log in") from e
    except RepositoryNotFoundError as e:
        raise ModelLoadError(
            f"model {name!r} is not on the Hugging Face Hub (or it is private: log in) and not in the local cache"
        ) from e
    except Exception as e:
        raise ModelLoadError(
            f"model {name!r} is not in the local Hugging Face cache and the Hub cannot be reached "
            f"({type(e).__name__}: {e}); set HF_HUB_OFFLINE=1 to skip the Hub, or use a local folder"
        ) from e


def _load_config(source: str, trust_remote_code: bool, **kwargs):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code, **kwargs)


def _resolve(name: str, trust_remote_code: bool):
    """(source, hub kwargs, config). Fails fast with ``ModelLoadError`` for a missing folder, a malformed Hub id, or
    a Hub id that is neither cached nor reachable."""
    expanded = os.path.expanduser(name)
    if os.path.isdir(expanded):
        try:
            return expanded, {}, _load_config(expanded, trust_remote_code)
        except Exception as e:
            raise ModelLoadError(f"{name!r} is a folder but not a loadable model checkpoint: {e}") from e
    if os.path.exists(expanded):
        raise ModelLoadError(f"{name!r} is a file, not a model folder or a Hugging Face Hub id")
    if _looks_like_path(name):
        raise ModelLoadError(f"model folder {name!r} does not exist")

    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError as e:
        raise ModelLoadError(f"{name!r} is neither an existing folder nor a valid Hugging Face Hub id: {e}") from e
    try:  # the local cache first: no network at all
        return name, {"local_files_only": True}, _load_config(name, trust_remote_code, local_files_only=True)
    except Exception as e:  # noqa: BLE001 (any failure from the cache: the Hub is tried next, and both are reported)
        cache_error = e
    if _hub_offline():
        raise ModelLoadError(
            f"model {name!r} is not in the local Hugging Face cache and the Hub is offline (HF_HUB_OFFLINE is set): "
            f"{cache_error}"
        ) from cache_error
    _probe_hub(name)
    try:
        return name, {}, _load_config(name, trust_remote_code)
    except Exception as e:
        raise ModelLoadError(
            f"model {name!r} is not in the local Hugging Face cache and could not be fetched from the Hub: {e}"
        ) from e


# ---- the loader ------------------------------------------------------------------------------------------------------

def adapter_class(model_type: str) -> type[FamilyAdapter]:
    try:
        return ADAPTERS[model_type]
    except KeyError:
        raise ModelLoadError(
            f"unsupported model family {model_type!r}; supported families: {', '.join(SUPPORTED_FAMILIES)}"
        ) from None


def load_model(
    name_or_path: str | os.PathLike,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    quantization: str | None = None,
    trust_remote_code: bool = False,
    attn_implementation: str | None = None,
) -> FamilyAdapter:
    """Load a Hugging Face image-text-to-text checkpoint (Hub id or local folder) and its processor.

    device: default cuda if available, else cpu. dtype: default bf16 on CUDA when supported, else fp16; fp32 on CPU.
    quantization: None, "4bit" (nf4, compute dtype = dtype) or "8bit", through bitsandbytes (CUDA only).
    Returns the family's ``FamilyAdapter`` around the model (in eval mode) and processor; any failure is a
    ``ModelLoadError`` naming the model.
    """
    name = os.fspath(name_or_path)
    device = choose_device(device)
    dtype = choose_dtype(device, dtype)
    quant = quantization_config(quantization, device, dtype)  # before any I/O: fail fast

    source, hub_kwargs, config = _resolve(name, trust_remote_code)
    cls = adapter_class(getattr(config, "model_type", None))
    try:
        cls.check_config(config)  # before any weights are read
    except ValueError as e:
        raise ModelLoadError(f"could not load model {name!r}: {e}") from e
    try:
        return _load(cls, name, source, config, hub_kwargs, device=device, dtype=dtype, quant=quant,
                     trust_remote_code=trust_remote_code, attn_implementation=attn_implementation)
    except ModelLoadError:
        raise
    except Exception as first_error:
        if hub_kwargs.get("local_files_only") and not _hub_offline():
            try:  # the config was cached but not everything else: fetch the rest
                _probe_hub(name)
                return _load(cls, name, source, config, {}, device=device, dtype=dtype, quant=quant,
                             trust_remote_code=trust_remote_code, attn_implementation=attn_implementation)
            except Exception as e:
                raise ModelLoadError(f"could not load model {name!r}: {e}") from e
        raise ModelLoadError(f"could not load model {name!r}: {first_error}") from first_error


def _load(cls, name, source, config, hub_kwargs, *, device, dtype, quant, trust_remote_code, attn_implementation):
    from transformers import AutoModelForImageTextToText

    from ._processors import load_processor

    processor = load_processor(
        source, getattr(config, "model_type", None), cls.processor_class, trust_remote_code=trust_remote_code,
        **hub_kwargs
    )
    kwargs = dict(config=config, dtype=dtype, trust_remote_code=trust_remote_code, **hub_kwargs)
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    if quant is not None:
        kwargs["quantization_config"] = quant
    if device.type == "cuda":
        kwargs["device_map"] = {"": str(device) if device.index is not None else "cuda:0"}
    model = AutoModelForImageTextToText.from_pretrained(source, **kwargs)
    if quant is None and device.type != "cuda":
        model = model.to(device)
    model.eval()
    _ensure_pad_token(model, processor)
    return cls(model, processor, model_id=name)


def _ensure_pad_token(model, processor) -> None:
    generation_config = getattr(model, "generation_config", None)
    if generation_config is None or generation_config.pad_token_id is not None:
        return
    tokenizer = getattr(processor, "tokenizer", None)
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        eos = generation_config.eos_token_id
        if eos is None:
            eos = getattr(tokenizer, "eos_token_id", None)
        pad = eos[0] if isinstance(eos, (list, tuple)) and eos else eos
    if pad is not None:
        generation_config.pad_token_id = int(pad)
