"""VISTA through the registry and the engine: its steering vector is each layer's output with the image minus
without it (the pre-pass), its SLA window scales the release's 25..30 of 32 to the model's depth, both parts switch
off, and batched equals each row alone for 30 steps on every tiny family (every one has decoder-layer MLPs)."""

from __future__ import annotations

import pytest
import torch

from decoding import compare, prepare_comparison
from decoding.engine import Engine
from decoding.methods import deco_candidate_layers, get_method
from decoding.steering import last_position_layer_outputs
from models import TINY_FAMILIES

QUESTION = "Is there a red circle in the picture?"


def _window(depth: int) -> tuple[int, ...]:
    defaults = get_method("vista").defaults
    return deco_candidate_layers(depth, defaults["from_depth"], defaults["to_depth"])


def test_the_sla_window_is_the_release_s_on_32_layers_and_scaled_below():
    assert _window(32) == (26, 27, 28, 29, 30, 31)  # --logits-layers 25,30: decoder layers 25..30's outputs
    assert _window(4) == (3,) and _window(2) == (1,)


def test_the_steering_vector_is_with_image_minus_without(tiny_model, image):
    adapter = tiny_model("llava")
    prepared = prepare_comparison(adapter, image, QUESTION, "vista", attention_layers=None)
    edit = prepared.sides[1].attention_edits["original"]
    row = adapter.build_row(QUESTION, image)
    without = adapter.build_row(QUESTION, None)
    expected = []
    for r in (row, without):
        inputs = {"input_ids": r.input_ids, "attention_mask": torch.ones_like(r.input_ids), **r.vision_kwargs}
        with torch.inference_mode():
            states = adapter.model(**inputs, output_hidden_states=True).hidden_states
        expected.append(torch.stack([s[0, -1].float() for s in states[1:-1]]))  # the last one is after the norm
    torch.testing.assert_close(edit.directions[:-1], expected[0] - expected[1], atol=1e-5, rtol=1e-4)
    last = last_position_layer_outputs(adapter, row)[-1] - last_position_layer_outputs(adapter, without)[-1]
    torch.testing.assert_close(edit.directions[-1], last)
    assert edit.strength == 0.1 and edit.cosine_boost
    assert prepared.sides[1].layers == _window(len(adapter.model.get_decoder().layers))


def _tokens_and_logits(adapter, prepared, steps=6):
    events = list(Engine(adapter).run(prepared.rows, prepared.sides, max_new_tokens=steps, ignore_eos=True,
                                      record_logits=True))
    logits = torch.stack([e.row_logits for e in events])
    return {name: [e.tokens[name].token_id for e in events] for name in ("baseline", "method")}, logits


def test_both_parts_off_is_plain_decoding_and_each_part_acts(embedded_model, image):
    adapter = embedded_model
    original = {}
    for lam, alpha in ((0.0, 0.0), (0.1, 0.0), (0.0, 0.3)):
        prepared = prepare_comparison(adapter, image, QUESTION, "vista", attention_layers=None, lam=lam, alpha=alpha)
        side = prepared.sides[1]
        assert bool(side.attention_edits) == bool(lam) and bool(side.layers) == bool(alpha)
        _, logits = _tokens_and_logits(adapter, prepared, steps=1)
        original[lam, alpha] = logits[0, side.roles["original"]]
        baseline = logits[0, prepared.sides[0].roles["original"]]
        if lam:
            assert not torch.allclose(original[lam, alpha], baseline, atol=1e-3)  # the row itself is steered
        else:
            torch.testing.assert_close(original[lam, alpha], baseline)
    sla_only = prepare_comparison(adapter, image, QUESTION, "vista", attention_layers=None, lam=0.0)
    trace = next(Engine(adapter).run(sla_only.rows, sla_only.sides, max_new_tokens=1)).tokens["method"]
    assert abs(trace.final.prob - trace.branches["original"].prob) > 1e-4  # SLA moves the distribution


def test_the_noised_twin_is_steered_with_the_same_vector(embedded_model, image):
    prepared = prepare_comparison(embedded_model, image, QUESTION, "vista", attention_layers=None,
                                  visual_dependence=True)
    edits = prepared.sides[1].attention_edits
    assert edits["distorted"] is edits["original"]
    assert "distorted" in prepared.sides[1].roles


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_batched_equals_alone_for_30_steps_on_every_family(tiny_model, image, family):
    adapter = tiny_model(family)
    prepared = prepare_comparison(adapter, image, QUESTION, "vista", seed=3, attention_layers=None, lam=0.3)
    runs = {}
    for batched in (True, False):
        events = list(Engine(adapter).run(prepared.rows, prepared.sides, max_new_tokens=30, batched=batched,
                                          ignore_eos=True, record_logits=True))
        runs[batched] = ([e.tokens["method"].token_id for e in events], torch.stack([e.row_logits for e in events]))
    assert runs[True][0] == runs[False][0]
    steered, plain = prepared.sides[1].roles["original"], prepared.sides[0].roles["original"]
    assert not torch.allclose(runs[True][1][0, steered], runs[True][1][0, plain], atol=1e-3)  # it acts here
    torch.testing.assert_close(runs[True][1], runs[False][1], atol=1e-4, rtol=0)


def test_a_strength_past_its_bound_is_refused_naming_it_and_the_bound_decodes(embedded_model, image):
    """Unbounded as released, but λ 1e300 overflowed float32 inside the edit (a RuntimeError, not a refusal) and 3e38
    gave a NaN distribution: refused up front; 1000 decodes to finite probabilities."""
    for lam in (1e300, 3e38):
        with pytest.raises(ValueError, match="lam must be <= 1000"):
            compare(embedded_model, image, QUESTION, "vista", max_new_tokens=1, lam=lam)
    result = compare(embedded_model, image, QUESTION, "vista", max_new_tokens=2, ignore_eos=True, lam=1000.0)
    assert all(0.0 < t.final.prob <= 1.0 for t in result.method_side.tokens)
