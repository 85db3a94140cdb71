"""DeCo: the rule against the spec's vectors, and its early exits through the final norm in a real run."""

from __future__ import annotations

import pytest
import torch

from decoding import compare, rules
from decoding.methods import deco_candidate_layers, get_method
from models import build_tiny, load_model

QUESTION = "Is there a red circle in the picture?"
FINAL = torch.tensor([[2.0, 1.5, 1.0, -3.0]])  # p = .504758, .306151, .185690, .003401: candidates 0, 1, 2


def test_the_rule_on_the_spec_vector():
    early = torch.tensor([[[0.0, 2.0, 0.0, 0.0]], [[0.0, 0.0, 5.0, 0.0]]])  # hidden-state indices 20 and 24
    out, layer, m = rules.deco(FINAL, early)
    assert int(layer[0]) == 1 and float(m[0]) == pytest.approx(0.980187, abs=1e-6)
    expected = torch.tensor([[2.0, 1.5, 1.0 + 0.6 * 0.980187 * 5.0, float("-inf")]])
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    assert int(out.argmax()) == 2 and int(FINAL.argmax()) == 0  # DeCo answers 2 where plain decoding answers 0


def test_the_weight_is_the_best_candidate_probability_not_the_chosen_token_s():
    # Layer 0 is sure of the final layer's third candidate; the borrowed logits still favour candidate 0 after the sum.
    early = torch.tensor([[[3.0, -9.0, 4.0, 0.0]]])
    out, layer, m = rules.deco(FINAL, early, alpha=1.0)
    p = torch.softmax(early[0, 0], dim=-1)
    assert float(m[0]) == pytest.approx(float(p[2]), abs=1e-6) and float(p[2]) > float(p[0])
    torch.testing.assert_close(out[0, :3], FINAL[0, :3] + float(p[2]) * early[0, 0, :3])


def test_candidates_the_layer_ties_and_rows_alone():
    assert rules.deco_candidates(FINAL, top_p=0.5).tolist() == [[True, False, False, False]]  # .505 reaches .5
    assert rules.deco_candidates(FINAL, top_p=1.0, top_k=99).tolist() == [[True, True, True, True]]
    same = torch.tensor([[[0.0, 3.0, 0.0, 0.0]], [[0.0, 3.0, 0.0, 0.0]]])
    assert int(rules.deco(FINAL, same)[1][0]) == 0  # ties: the first layer, as the release's flat argmax
    rows = torch.cat([FINAL, FINAL.flip(-1)])
    early = torch.randn(3, 2, 4, generator=torch.Generator().manual_seed(0))
    out, layer, m = rules.deco(rows, early)
    for r in range(2):
        alone = rules.deco(rows[r:r + 1], early[:, r:r + 1])
        assert torch.equal(out[r:r + 1], alone[0]) and layer[r] == alone[1][0] and m[r] == alone[2][0]
    with pytest.raises(ValueError, match="early_logits must have shape"):
        rules.deco(FINAL, early)


def test_the_released_interval_scales_with_depth():
    record = get_method("deco")
    share = (record.defaults["from_depth"], record.defaults["to_depth"])
    assert deco_candidate_layers(32, *share) == tuple(range(20, 29))  # chair_llava.py: range(20, 29) of 32
    assert deco_candidate_layers(40, *share) == tuple(range(25, 36))
    assert all(max(deco_candidate_layers(n, 0.0, 1.0)) == n - 1 for n in (2, 4, 32))  # never the final index


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    return load_model(build_tiny("llava", tmp_path_factory.mktemp("llava-deco"), seed=1))


def test_a_run_borrows_normed_early_exits(llava, image):
    """Teacher-forced, every step's token and anchor weight follow from lm_head(norm(h_j)) of the run's layers, and
    would not from DoLa's unnormed exits."""
    run = compare(llava, image, QUESTION, "deco", max_new_tokens=6, ignore_eos=True, baseline=False)
    layers = run.branches["candidate_layers"]
    tokens = [t.token_id for t in run.method_side.tokens]
    row = llava.build_row(QUESTION, image)
    ids = torch.cat([row.input_ids, torch.tensor([tokens[:-1]])], dim=1)
    model = llava.model
    head, norm = model.get_output_embeddings(), model.get_decoder().norm
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True, **row.vision_kwargs)
    unnormed_differs = False
    for step, trace in enumerate(run.method_side.tokens):
        position = row.length - 1 + step
        final = out.logits[0, position].float()[None]
        states = torch.stack([out.hidden_states[j][0, position] for j in layers])
        with torch.inference_mode():
            normed, raw = head(norm(states)).float()[:, None], head(states).float()[:, None]
        logits, pick, m = rules.deco(final, normed)
        assert int(logits.argmax()) == trace.token_id
        assert trace.scalars["anchor_layer"] == layers[int(pick[0])]
        # The tiny random model's exits are near uniform (m ~ 1/vocab): compared relative to their size.
        assert trace.scalars["anchor_weight"] == pytest.approx(0.6 * float(m[0]), rel=1e-4)
        unnormed = 0.6 * float(rules.deco(final, raw)[2][0])
        unnormed_differs |= unnormed != pytest.approx(trace.scalars["anchor_weight"], rel=0.05)
    assert unnormed_differs
