"""The limits of what the app accepts, and the checks of what visitors and operators send it.

Plain Python, no gradio and no torch, so that `python app.py --help` (which reads its defaults here) starts at once.
Every check returns the value it accepts or raises ValueError with a message for the visitor, naming the control.
"""

from __future__ import annotations

import math
from pathlib import Path

from decoding.sampling import SamplingConfig

MAX_NEW_TOKENS_LIMIT = 256
DEFAULT_MAX_NEW_TOKENS = 64
DEFAULT_MAX_FILE_SIZE = "10mb"
DEFAULT_MAX_PIXELS = 24_000_000
DEFAULT_QUEUE_SIZE = 16
# A question's length is checked against the model's context by the library, after tokenizing it; this cap only keeps
# a visitor from making the server tokenize megabytes first. It is far above any model's context in characters.
MAX_QUESTION_CHARS = 20_000
MAX_SEED = 2**32 - 1
# The decoding controls' ranges; the API is held to them too.
TEMPERATURE_RANGE = (0.05, 2.0)
TOP_P_RANGE = (0.05, 1.0)
TOP_K_RANGE = (0, 200)
DECODING_MODES = ("greedy", "sampling")


def number(name: str, value, integer: bool = False, bounds: tuple[float, float] | None = None):
    """A number from a control (the API may send anything: text, None, NaN, huge values)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")  # noqa: TRY004 (one type for visitors)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if integer:
        if value != int(value):
            raise ValueError(f"{name} must be a whole number, got {value!r}")
        value = int(value)
    else:
        value = float(value)
    if bounds is not None and not bounds[0] <= value <= bounds[1]:
        raise ValueError(f"{name} must be between {_show(bounds[0])} and {_show(bounds[1])}, got {_show(value)}")
    return value


def _show(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def question(text) -> str:
    """The question as sent; whether it is empty or too long for the model's context is the library's check."""
    if not isinstance(text, str):
        raise ValueError(f"the question must be text, got {type(text).__name__}")  # noqa: TRY004
    if len(text) > MAX_QUESTION_CHARS:
        raise ValueError(f"the question is too long: {len(text)} characters, the limit is {MAX_QUESTION_CHARS}")
    return text


def upload_path(payload, upload_folder: str | Path) -> str | None:
    """The stored file of an image payload (None: no image). gradio refuses a payload naming a file it did not store;
    this checks again that the file lies in its upload folder, so that no path a visitor writes is ever opened."""
    if payload is None:
        return None
    if not (isinstance(payload, dict) and isinstance(payload.get("path"), str)):
        raise ValueError("The image must be sent as an uploaded file.")  # noqa: TRY004
    path = Path(payload["path"]).resolve()
    if not path.is_relative_to(Path(upload_folder).resolve()):
        raise ValueError("The image must be a file uploaded to this app.")
    return str(path)


def parse_file_size(size: str | int) -> int:
    """Bytes from "10mb", "500kb", "1gb" or a number of bytes (units of 1024, as gradio counts them)."""
    if isinstance(size, int) and not isinstance(size, bool):
        return size
    text = str(size).strip().lower().replace(" ", "")
    units = {"gb": 1024**3, "mb": 1024**2, "kb": 1024, "b": 1}
    for unit, factor in units.items():
        if text.endswith(unit) and text[: -len(unit)].isdigit():
            return int(text[: -len(unit)]) * factor
    if text.isdigit():
        return int(text)
    raise ValueError(f"a file size is a number of bytes or a number with kb, mb or gb, got {size!r}")


def sampling(mode, temperature, top_p, top_k, seed) -> SamplingConfig:
    """The decoding options of the "Decoding" controls, each held to its control's range."""
    if not isinstance(mode, str) or mode not in DECODING_MODES:
        raise ValueError(f"decoding must be 'greedy' or 'sampling', got {mode!r}")
    return SamplingConfig(
        do_sample=mode == "sampling",
        temperature=number("temperature", temperature, bounds=TEMPERATURE_RANGE),
        top_p=number("top-p", top_p, bounds=TOP_P_RANGE),
        top_k=number("top-k", top_k, integer=True, bounds=TOP_K_RANGE),
        seed=number("seed", seed, integer=True, bounds=(0, MAX_SEED)),
    )


def max_new_tokens(value) -> int:
    return number("max new tokens", value, integer=True, bounds=(1, MAX_NEW_TOKENS_LIMIT))


def slider_value(param, value):
    """A method parameter from its slider (``param``: a ``decoding.methods.Param``): in its valid domain (the
    library's own check) and in the slider's range."""
    if param.kind == "text":  # a text box (ICD's instruction): text of bounded length; the model checks the rest
        return param.validate(value)
    value = param.validate(value)
    if not param.low <= value <= param.high:
        raise ValueError(f"{param.name} must be between {param.low:g} and {param.high:g} here, got {value:g}")
    return value


def control(value, controls, none: str = "none") -> str | None:
    """The control of the third panel (``controls``: the registry's control names; ``none``, the default: no third
    panel): its name, or None."""
    if value is None or value == none:
        return None
    if not isinstance(value, str) or value not in controls:
        raise ValueError(f"unknown control {value!r}; choose {none!r} or one of {', '.join(controls)}")
    return value
