"""The decoding options every run shares, as one record: greedy or sampled, temperature, top-p, top-k, seed.

Importing this module costs nothing (no torch): the app and the evaluation command check a visitor's or a user's
options with it before any model is loaded.
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class SamplingConfig:
    """Greedy by default. The papers' numbers use sampling at temperature 1, top-p 1, no top-k.

    Both sides draw from their own generator seeded with the same ``seed``: common random numbers, so where the two
    distributions agree the two answers agree, and differences come from the method rather than the dice.

    >>> SamplingConfig(do_sample=True, top_p=0.9).to_dict()
    {'do_sample': True, 'temperature': 1.0, 'top_p': 0.9, 'top_k': 0, 'seed': 0}
    >>> SamplingConfig(top_p=0)
    Traceback (most recent call last):
    ...
    ValueError: top_p must be in (0, 1], got 0
    """

    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0

    def __post_init__(self):
        if not isinstance(self.do_sample, bool):
            raise ValueError(f"do_sample must be True or False, got {self.do_sample!r}")
        if not (_real(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be a number > 0, got {self.temperature!r}")
        if not (_real(self.top_p) and 0 < self.top_p <= 1):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not (_integer(self.top_k) and self.top_k >= 0):
            raise ValueError(f"top_k must be an integer >= 0 (0 = off), got {self.top_k!r}")
        if not _integer(self.seed):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    def warpers(self):
        """transformers' temperature / top-k / top-p warpers, applied after the method's rule and its plausibility
        mask: the plausible set is the original branch's (VCD, Leng et al. 2024, eq. 4), never the warped one's."""
        from transformers.generation.logits_process import (
            LogitsProcessorList,
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        warpers = LogitsProcessorList()
        if self.temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(float(self.temperature)))
        if self.top_k > 0:
            warpers.append(TopKLogitsWarper(self.top_k))
        if self.top_p < 1.0:
            warpers.append(TopPLogitsWarper(float(self.top_p)))
        return warpers


def _real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _integer(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_max_new_tokens(max_new_tokens) -> int:
    """The one check of ``max_new_tokens``: an integer >= 1 (ValueError otherwise).

    >>> check_max_new_tokens(0)
    Traceback (most recent call last):
    ...
    ValueError: max_new_tokens must be an integer >= 1, got 0
    """
    if not _integer(max_new_tokens) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    return int(max_new_tokens)
