"""Hugging Face Spaces with ZeroGPU: the GPU decorator, how long a comparison asks the GPU for, where models load.

On ZeroGPU a GPU is attached only while a ``spaces.GPU`` function runs (60 s a call by default); the *declared*
duration is checked against the visitor's remaining daily quota, shorter declarations get queue priority, and one
above the tier's cap fails ("ZeroGPU illegal duration") — so the comparison declares what this request needs,
computed from its new tokens, its rows and its pre-steps (``gpu_seconds``). Models load onto ``cuda`` at start-up,
outside the decorated function (ZeroGPU emulates CUDA there; loading inside is much slower), and ``spaces`` must be
imported before anything touches CUDA: app.py imports this module first. Off ZeroGPU (``SPACES_ZERO_GPU`` unset)
``spaces.GPU`` returns the function itself, and without the ``spaces`` package ``gpu`` does the same.
Facts from huggingface/hub-docs ``docs/hub/spaces-zerogpu.md`` (snapshot 2026-08) and the ``spaces`` package 0.51.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping

try:  # before torch touches CUDA: "CUDA has been initialized before importing the `spaces` package" otherwise
    import spaces
except ImportError:
    spaces = None

ZERO_GPU_ENV = "SPACES_ZERO_GPU"
# ZeroGPU runs these torch versions only (hub-docs, spaces-zerogpu.md "Supported versions"); it installs one of them
# itself, so requirements.txt must admit them (tests/test_zerogpu.py checks it).
ZERO_GPU_TORCH = ("2.8.0", "2.9.1", "2.10.0", "2.11.0")
ZERO_GPU_PYTHON = ("3.10.13", "3.12.12")

# The declared duration: a fixed part (the prefill, the first forward's kernels) and a part per decoded token, for a
# 7B model in bf16 on ZeroGPU's half card; each extra row of the batch costs a little (one batched forward a token,
# README "Speed"). Estimates, not yet measured on a ZeroGPU Space: an operator can scale them (CD_GPU_SCALE).
BASE_SECONDS = 8.0
SECONDS_PER_TOKEN = 0.04
EXTRA_ROW_SHARE = 0.08  # of a token's time, per row beyond the first
MIN_SECONDS, MAX_SECONDS = 20, 120  # ZeroGPU's default is 60 s; longer calls need a tier that allows them
# Tokens a method decodes before the answer (decoding.branch_rows): CODE's self-description, Self-Aug's choice.
PRE_STEP_TOKENS = {"code": 512, "savcd": 32}
# What an unreadable or out-of-range max_new_tokens counts as: more than any run may ask (the run then refuses it).
UNREADABLE_TOKENS = 512
BEAM_ROWS = {"opera": 30}  # 5 beams and 5 x 5 candidate rows a token (decoding.beam)


def on_zero_gpu(env: Mapping[str, str] = os.environ) -> bool:
    return env.get(ZERO_GPU_ENV, "").lower() in ("1", "true")


def load_device(requested: str | None, env: Mapping[str, str] = os.environ) -> str | None:
    """Where models load at start-up: on ZeroGPU always ``cuda`` (outside the GPU function, as ZeroGPU wants), else
    what the operator asked for (None: the loader's own choice)."""
    return "cuda" if on_zero_gpu(env) else requested


def rows_of(method: str) -> int:
    """Rows one side of ``method`` decodes a token: the original, its contrast rows (a beam method: its beams and
    candidates), and the row visual dependence is measured on."""
    from decoding.methods import get_method

    return BEAM_ROWS.get(method, 1 + len(get_method(method).contrast_roles)) + 1


def gpu_seconds(method: str, max_new_tokens, control: str | None = None, scale: float = 1.0) -> int:
    """Seconds a comparison declares to ZeroGPU: baseline, method and control sides together, their pre-steps
    included, within [MIN_SECONDS, MAX_SECONDS]. Anything unreadable counts as the largest request, so a bad value
    is refused by the run itself, never by the GPU's clock.

    >>> gpu_seconds("vcd", 64), gpu_seconds("code", 64), gpu_seconds("vcd", 1), gpu_seconds("vcd", float("inf"))
    (20, 39, 20, 36)
    """
    from decoding.methods import REGISTRY

    from demo.checks import max_new_tokens as checked_new_tokens

    try:  # the run's own check (a huge integer or infinity included), so nothing here converts an unchecked value
        tokens = checked_new_tokens(max_new_tokens)
    except ValueError:
        tokens = UNREADABLE_TOKENS
    sides = [m for m in ("baseline", method, control) if m in REGISTRY or m == "baseline"]
    rows = sum(2 if side == "baseline" else rows_of(side) for side in sides)
    decoded = tokens + max(PRE_STEP_TOKENS.get(side, 0) for side in sides)
    seconds = BASE_SECONDS + decoded * SECONDS_PER_TOKEN * (1 + EXTRA_ROW_SHARE * (rows - 1))
    return int(min(MAX_SECONDS, max(MIN_SECONDS, math.ceil(seconds * scale))))


def gpu(fn: Callable, duration: Callable | None = None) -> Callable:
    """``fn`` as a ZeroGPU function (``duration``: a function of fn's own arguments giving seconds), or ``fn``
    itself where the ``spaces`` package is absent; off ZeroGPU ``spaces.GPU`` is a no-op too."""
    if spaces is None:
        return fn
    return spaces.GPU(fn, duration=duration)
