"""A parameter is checked once, at the edge: a rule checks its scalar arguments through one
decorator (``rules.checked``) for its direct callers, and the engine's bindings call it unchecked (``__wrapped__``)
because the library's entry points have checked the method's parameters already (``Method.resolve``). So what the
registry accepts must be what the rule accepts, and give what the checked rule gives."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from decoding import rules
from decoding.combination import _contrast_step, contrast
from decoding.methods import REGISTRY

ORIGINAL = torch.tensor([[2.0, 1.0, -1.0, 0.0], [0.5, 0.0, 3.0, -2.0]])
OTHER = torch.tensor([[1.0, 2.0, 0.0, 0.0], [0.0, 1.0, 1.0, 1.0]])


def _counting_rule(seen: list):
    def note(name, value):
        seen.append(name)
        return float(value)

    @rules.checked(alpha=note, beta=note)
    def rule(logits, contrast_logits, alpha=1.0, beta=0.1):
        return (1.0 + alpha) * logits - alpha * contrast_logits

    return rule


def test_a_checked_rule_checks_for_its_caller_and_the_binding_does_not_check_again():
    seen: list = []
    rule = _counting_rule(seen)
    direct = rule(ORIGINAL, OTHER, alpha=2)
    assert seen == ["alpha", "beta"]
    step = contrast(rule, "other")({"original": ORIGINAL, "other": OTHER}, 0, {"alpha": 2.0, "beta": 0.1})
    assert seen == ["alpha", "beta"]  # the step ran the rule unchecked
    assert torch.equal(step.logits, direct)
    assert rule.__name__ == "rule" and rule.__wrapped__ is not rule


def test_the_binding_takes_only_a_checked_rule():
    with pytest.raises(TypeError, match="not a checked rule"):
        contrast(lambda logits, contrast_logits, alpha, beta: logits, "noised")


def test_checked_names_only_arguments_the_rule_has():
    with pytest.raises(TypeError, match="no argument gamma"):
        rules.checked(gamma=rules._non_negative)(lambda logits, alpha=1.0: logits)


def test_a_direct_caller_still_gets_the_rule_s_value_error():
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        rules.vcd(ORIGINAL, OTHER, alpha=-0.5)
    with pytest.raises(ValueError, match=r"beta must be in \(0, 1\]"):
        rules.avisc(ORIGINAL, OTHER, beta=0.0)
    with pytest.raises(ValueError, match="step must be >= 0"):
        rules.m3id(ORIGINAL, OTHER, step=-1)


def _edges(param) -> list[float]:
    """The registry's accepted extremes of a numeric parameter (its slider's where the domain is open-ended)."""
    low = param.low if param.minimum is None else param.minimum
    if param.minimum is not None and not param.min_inclusive:
        low = math.nextafter(param.minimum, math.inf)
    return [low, param.high if param.maximum is None else param.maximum, param.default]


VCD_FORM = sorted(name for name, record in REGISTRY.items()
                  if isinstance(record.rule, functools.partial) and record.rule.func is _contrast_step)


@pytest.mark.parametrize("method", VCD_FORM)
def test_what_the_registry_accepts_the_rule_accepts_and_decodes_alike(method):
    record = REGISTRY[method]
    rule, role = record.rule.args
    for param in (p for p in record.params if p.kind == "number"):
        for value in _edges(param):
            params = record.resolve({param.name: value})
            checked = rule(ORIGINAL, OTHER, alpha=params["alpha"], beta=params["beta"])
            step = record.combine(params)({"original": ORIGINAL, role: OTHER}, 3)
            assert torch.equal(step.logits, checked), (method, param.name, value)
