"""MemVR: its two rules against the spec's test vectors; on a tiny model, the prefill's retrace against the release's
loop written out with plain hooks (logit lens of every layer in the window, the first above τ arms the next FFN);
ratio 0 and τ 1 decode plainly; and batched (left-padded beside a longer prompt) equals alone for 30 steps on every
tiny family, the per-step scalars included."""

from __future__ import annotations

import math

import pytest
import torch

from decoding import prepare_comparison, rules
from decoding.engine import Combination, Engine, Side
from decoding.methods import memvr_trigger_layers
from models import TINY_FAMILIES

QUESTION = "Is there a red circle in the picture?"
LONGER = "Describe every shape in the picture, its color and where it is, then count them."


def test_the_uncertainty_gives_the_spec_s_values():
    E = rules.memvr_entropy(torch.tensor([[1.0] * 10 + [-5.0], [10.0] + [0.0] * 9 + [-5.0],
                                          [2.0, 1, 1] + [0.0] * 7 + [-5.0]]))
    torch.testing.assert_close(E, torch.tensor([1.0, 0.001951, 0.854410]), atol=1e-6, rtol=0)
    assert (E > 0.75).tolist() == [True, False, True]
    # Ten top logits within 1e-3 of each other: the float32 sum rounded to 1.0000001, past τ 1 ("never").
    near = torch.tensor([[2.006e-4, -1.28e-5, -3.28e-4, 1.711e-4, 6.423e-4, 6.679e-4, -2.038e-4, 1.161e-3, -3.341e-4,
                          -2.201e-4]])
    assert float(rules.memvr_entropy(near)) <= 1.0


def test_the_memory_gives_the_spec_s_vector():
    out = rules.memvr_retrace(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, -0.5]]),
                              torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]), ratio=0.12)
    torch.testing.assert_close(out, torch.tensor([[0.52, -0.40]]))
    with pytest.raises(ValueError, match="ratio must be in"):
        rules.memvr_retrace(torch.ones(1, 2), torch.ones(1, 2), torch.ones(3, 2), ratio=1.5)


def test_the_trigger_window_is_the_release_s_on_32_layers_and_scaled_below():
    assert memvr_trigger_layers(32, 0.1875, 0.46875) == tuple(range(6, 16))  # 5 < l < 16
    assert memvr_trigger_layers(4, 0.1875, 0.46875) == (1,)  # fires after layer 1, retraces in 2


def _release_prefill(adapter, row, threshold: float, ratio: float, window) -> tuple[torch.Tensor, int]:
    """The release's loop on the prefill, with plain hooks: the logit lens lm_head(norm(h_l)) at the last position
    after each layer of the window, the first above the threshold arms layer l+1, whose MLP output is mixed with
    (x·V^T)·V rescaled; V the language model's input embeddings at the image positions. (logits, retrace layer)."""
    model, decoder = adapter.model, adapter.model.get_decoder()
    inputs = {"input_ids": row.input_ids, "attention_mask": torch.ones_like(row.input_ids), **row.token_kwargs,
              "position_ids": row.position_ids, **row.vision_kwargs}
    kept = {}
    hook = decoder.register_forward_pre_hook(lambda m, a, k: kept.update(V=k["inputs_embeds"][0]), with_kwargs=True)
    with torch.inference_mode():
        states = model(**inputs, output_hidden_states=True).hidden_states
    hook.remove()
    V = kept["V"][row.image_token_positions]
    head = model.get_output_embeddings()
    target = -1
    for layer in window:
        with torch.inference_mode():
            lens = head(decoder.norm(states[layer + 1][0, -1:])).float()
        q = torch.softmax(lens.topk(10).values, dim=-1)
        if float(-(q * q.log()).sum() / math.log(10)) > threshold:
            target = layer + 1
            break

    def retrace(module, args, output):
        x, ffn = args[0][0].float(), output[0].float()
        m = (x @ V.float().T) @ V.float()
        m = m * ffn.abs().mean() / m.abs().mean()
        return ((1 - ratio) * ffn + ratio * m).to(output.dtype)[None]

    hooks = [decoder.layers[target].mlp.register_forward_hook(retrace)] if target >= 0 else []
    with torch.inference_mode():
        logits = model(**inputs).logits[0, -1].float()
    for h in hooks:
        h.remove()
    return logits, target


@pytest.mark.parametrize("threshold", [0.0, 0.75])
def test_the_prefill_retraces_as_the_release_s_loop(embedded_model, image, threshold):
    adapter = embedded_model
    prepared = prepare_comparison(adapter, image, QUESTION, "memvr", attention_layers=None, threshold=threshold,
                                  ratio=0.3)
    event = next(Engine(adapter).run(prepared.rows, prepared.sides, max_new_tokens=1, record_logits=True))
    window = memvr_trigger_layers(len(adapter.model.get_decoder().layers), 0.1875, 0.46875)
    expected, target = _release_prefill(adapter, prepared.rows[prepared.sides[1].roles["original"]], threshold, 0.3,
                                        window)
    torch.testing.assert_close(event.row_logits[prepared.sides[1].roles["original"]], expected, atol=1e-4, rtol=0)
    assert event.tokens["method"].scalars["retrace_layer"] == float(target)
    if threshold == 0.0:
        assert target == window[0] + 1
        plain = event.row_logits[prepared.sides[0].roles["original"]]
        assert not torch.allclose(expected, plain, atol=1e-3)  # the retrace changes the prefill's logits


@pytest.mark.parametrize("params", [{"ratio": 0.0, "threshold": 0.0}, {"threshold": 1.0}])
def test_ratio_0_and_threshold_1_decode_plainly(embedded_model, image, params):
    adapter = embedded_model
    prepared = prepare_comparison(adapter, image, QUESTION, "memvr", attention_layers=None, **params)
    events = list(Engine(adapter).run(prepared.rows, prepared.sides, max_new_tokens=6, ignore_eos=True,
                                      record_logits=True))
    method, baseline = prepared.sides[1].roles["original"], prepared.sides[0].roles["original"]
    for e in events:
        torch.testing.assert_close(e.row_logits[method], e.row_logits[baseline], atol=1e-5, rtol=0)
        fired = e.tokens["method"].scalars["retrace_layer"]
        assert fired == (-1.0 if params["threshold"] == 1.0 else 2.0)  # ratio 0: it fires, and adds nothing
        assert 0.0 <= e.tokens["method"].scalars["layer_uncertainty"] <= 1.0


def _scalars_seen(seen: list, combine):
    def capture(L, t):
        result = combine(L, t)
        seen.append(result.scalars)
        return Combination(result.logits, result.scalars)
    return capture


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_batched_beside_a_longer_prompt_equals_alone_for_30_steps_on_every_family(tiny_model, image, family):
    adapter = tiny_model(family)
    prepared = prepare_comparison(adapter, image, QUESTION, "memvr", seed=3, attention_layers=None,
                                  visual_dependence=False, threshold=0.0, ratio=0.5)
    longer = adapter.build_row(LONGER, image)
    assert longer.length > prepared.rows[0].length
    runs = {}
    for batched in (True, False):
        seen = []
        method = prepared.sides[1]
        sides = [prepared.sides[0], Side("method", "memvr", method.roles, combine=_scalars_seen(seen, method.combine),
                                         attention_edits=method.attention_edits),
                 Side("longer", "baseline", {"original": len(prepared.rows)})]
        events = list(Engine(adapter).run([*prepared.rows, longer], sides, max_new_tokens=30, batched=batched,
                                          ignore_eos=True, record_logits=True))
        runs[batched] = ([e.tokens["method"].token_id for e in events], torch.stack([e.row_logits for e in events]),
                         seen)
    assert runs[True][0] == runs[False][0]
    for ours, alone in zip(runs[True][2], runs[False][2], strict=True):
        assert ours["retrace_layer"] == alone["retrace_layer"]
        assert ours["layer_uncertainty"] == pytest.approx(alone["layer_uncertainty"], abs=1e-5)
    torch.testing.assert_close(runs[True][1], runs[False][1], atol=1e-4, rtol=0)
    steered, plain = prepared.sides[1].roles["original"], prepared.sides[0].roles["original"]
    assert not torch.allclose(runs[True][1][0, steered], runs[True][1][0, plain], atol=1e-3)  # it acts here
    assert all(s["retrace_layer"] >= 1 for s in runs[True][2])  # threshold 0: every forward retraces
