"""The limits of what the app accepts, and the checks of what visitors and operators send it.

Plain Python, no gradio and no torch, so that `python app.py --help` (which reads its defaults here) starts at once.
Every check returns the value it accepts or raises ValueError with a message for the visitor, naming the control.
"""

from __future__ import annotations

import math
import re
import reprlib
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
# The largest whole number a float (and so the page's JavaScript) holds exactly; no integer control goes near it.
MAX_EXACT_INTEGER = 2**53
# How much of a visitor's value a refusal (and the log) quotes back: each string, and the whole echo.
ECHO_CHARS = 60
ECHO_LIMIT = 200
LOG_CHARS = 300  # a refusal's log line


def number(name: str, value, integer: bool = False, bounds: tuple[float, float] | None = None):
    """A number from a control, checked before anything formats or converts it: the API may send anything (text,
    None, a bool, NaN, infinity, an integer of 400 digits, which no float holds). The one place a visitor's number
    becomes a finite float (an int for ``integer``); ValueError naming the control otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {shown(value)}")  # noqa: TRY004 (one type for visitors)
    try:
        as_float = float(value)  # an int too large for a float raises here, before any message formats it
    except OverflowError:
        raise ValueError(f"{name} must be a finite number, got {shown(value)}") from None
    if not math.isfinite(as_float):
        raise ValueError(f"{name} must be a finite number, got {shown(value)}")
    if integer:
        if not as_float.is_integer():
            raise ValueError(f"{name} must be a whole number, got {shown(value)}")
        value = int(value)
    else:
        value = as_float
    if bounds is not None and not bounds[0] <= value <= bounds[1]:
        got = _show(value) if isinstance(value, float) else shown(value)  # a long whole number is cut short
        raise ValueError(f"{name} must be between {_show(bounds[0])} and {_show(bounds[1])}, got {got}")
    if integer and abs(value) > MAX_EXACT_INTEGER:
        raise ValueError(f"{name} must be a whole number of at most {MAX_EXACT_INTEGER:,}, got {shown(value)}")
    return value


def _show(value) -> str:
    """A checked number (finite, within a float's range) as a message shows it."""
    return f"{value:g}" if isinstance(value, float) else str(value)


class _Echo(reprlib.Repr):
    """repr with every part cut short (``reprlib``), and no integer written out whole: Python refuses to write one
    of over 4300 digits, and a long one says nothing more."""

    def __init__(self):
        super().__init__()  # Python 3.12 takes these as arguments; 3.10 and 3.11 as attributes
        self.maxlevel = 2
        self.maxstring = self.maxother = self.maxlong = ECHO_CHARS
        self.maxlist = self.maxtuple = self.maxdict = self.maxset = self.maxfrozenset = self.maxdeque = 3

    def repr_int(self, x, level):
        if x.bit_length() > 128:
            digits = int(x.bit_length() * math.log10(2))
            return f"<a {'negative ' if x < 0 else ''}whole number of about {digits:,} digits>"
        return super().repr_int(x, level)


_ECHO = _Echo()


def shown(value) -> str:
    """Any value a visitor sent, as a refusal or the log quotes it: the one place an echo is made. Its repr (which
    escapes control characters and lone surrogates, so it is printable), each part cut to ``ECHO_CHARS`` and the
    whole to ``ECHO_LIMIT``: a name of a million characters comes back as its first and last few. Never fails.

    >>> shown("x" * 1_000_000) == "'" + "x" * 27 + "..." + "x" * 28 + "'"
    True
    >>> shown(10**400), shown([float("nan"), None])
    ('<a whole number of about 400 digits>', '[nan, None]')
    """
    try:
        text = _ECHO.repr(value)
    except Exception:  # noqa: BLE001 (an object whose own repr fails: the echo says so, and the refusal stands)
        text = "<a value that cannot be shown>"
    return text if len(text) <= ECHO_LIMIT else text[: ECHO_LIMIT - 3] + "..."


def one_line(message: str, limit: int = LOG_CHARS) -> str:
    """A message that may quote a visitor's value whole (gradio's refusals do), as one short log line: whitespace
    runs made one space, each word cut to ``ECHO_CHARS`` (a million-character value keeps its ends, and the words
    after it stay), unprintable characters escaped, the whole cut to ``limit`` characters.

    >>> one_line("Value: '" + "x" * 1_000_000 + "\\x1b[2J'\\n is not a choice")
    "Value: 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxx...xxxxxxxxxxxxxxxxxxxxxxxxx\\\\x1b[2J' is not a choice"
    """
    words, length = [], 0
    for match in re.finditer(r"\S+", message):
        word = match.group()
        if len(word) > ECHO_CHARS:
            word = word[: ECHO_CHARS // 2] + "..." + word[-ECHO_CHARS // 2 :]
        words.append("".join(c if c.isprintable() else repr(c)[1:-1] for c in word))
        length += len(words[-1]) + 1
        if length > limit:
            break
    text = " ".join(words)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def question(text) -> str:
    """The question as sent; whether it is empty or too long for the model's context is the library's check."""
    if not isinstance(text, str):
        raise ValueError(f"the question must be text, got {shown(text)}")  # noqa: TRY004
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
        raise ValueError(f"decoding must be 'greedy' or 'sampling', got {shown(mode)}")
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
    """A method parameter from its slider (``param``: a ``decoding.methods.Param``): a finite number first (`number`),
    then in its valid domain (the library's own check) and in the slider's range."""
    if param.kind == "text":  # a text box (ICD's instruction): text of bounded length; the model checks the rest
        return param.validate(value)
    value = param.validate(number(param.name, value, integer=param.integer))
    if not param.low <= value <= param.high:
        raise ValueError(f"{param.name} must be between {param.low:g} and {param.high:g} here, got {_show(value)}")
    return value


def choice(kind: str, value, choices) -> str:
    """A name picked from a menu (a method, a model, a control, a colour mode, a decoding mode), or ValueError
    quoting what was sent (cut short: `shown`) and the choices."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"unknown {kind} {shown(value)}; choose one of {', '.join(choices)}")
    return value


def control(value, controls, none: str = "none") -> str | None:
    """The control of the third panel (``controls``: the registry's control names; ``none``, the default: no third
    panel): its name, or None."""
    if value is None or value == none:
        return None
    return choice("control", value, (none, *controls))
