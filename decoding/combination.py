"""What a step's rule returns, and the one binding of a pure rule to a side's rows that six methods share.

Below the registry (``decoding.methods``) and the engine (``decoding.engine``), above the pure rules
(``decoding.rules``): a record's ``rule`` returns a ``Combination``; the engine calls it at every step.

>>> import torch
>>> from decoding import rules
>>> step = contrast(rules.vcd, "noised")
>>> step({"original": torch.tensor([[2.0, 1.0, -1.0, 0.0]]), "noised": torch.tensor([[1.0, 2.0, 0.0, 0.0]])}, 0,
...      {"alpha": 1.0, "beta": 0.1}).logits
tensor([[3., 0., -inf, 0.]])
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Combination:
    """A side's combined logits for one step (float32, (1, vocab)), with the rule's per-step scalars by their
    ``decoding.methods.STEP_SCALARS`` names."""

    logits: torch.Tensor
    scalars: dict[str, float] = field(default_factory=dict)


# What the engine calls at every step: the roles' float32 (1, vocab) logits and the step -> the distribution.
Combine = Callable[[dict[str, torch.Tensor], int], Combination]
# A record's rule: the same, with its resolved parameters (and construction's ``rule_args``) as ``params``.
RuleFn = Callable[[dict[str, torch.Tensor], int, dict[str, Any]], Combination]
# The VCD form: ``out = (1+alpha)·l − alpha·l′`` under the plausibility cut (``rules.vcd`` and the rules that share it).
ContrastRule = Callable[..., torch.Tensor]


def original_only(logits: dict[str, torch.Tensor], step: int) -> Combination:
    """The baseline's rule: decode from the original branch as it is."""
    return Combination(logits["original"].float())


def contrast(rule: ContrastRule, role: str) -> RuleFn:
    """The step rule of a method of the VCD form: ``rule(l_original, l_role, alpha=, beta=)`` on the original row and
    the row ``role`` (VCD's "noised", ICD's "disturbed", ...), with the record's ``alpha`` and ``beta``.

    The rule is called unchecked (``rule.__wrapped__``, ``rules.checked``) at every step: the library's entry points
    have checked the record's parameters once, where the caller came in."""
    if not callable(getattr(rule, "__wrapped__", None)):
        raise TypeError(f"{getattr(rule, '__name__', rule)!r} is not a checked rule (decoding.rules.checked)")
    return functools.partial(_contrast_step, rule, role)  # a partial, not a closure: records stay picklable


def _contrast_step(
    rule: ContrastRule, role: str, L: dict[str, torch.Tensor], t: int, params: dict[str, Any]
) -> Combination:
    return Combination(rule.__wrapped__(L["original"], L[role], alpha=params["alpha"], beta=params["beta"]))
