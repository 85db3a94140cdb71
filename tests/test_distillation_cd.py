"""Distillation CD: its rule against the spec's test vector and the release's lines; its amateur's attention dropout
(decoding.attention.AttentionDropout) changes the logits, is F.dropout's contract, is seeded, fresh at every token,
and the same batched beside a longer prompt as alone; p = 0 and "as released" give the plain row."""

from __future__ import annotations

import math

import pytest
import torch

from decoding import compare, prepare_comparison, rules
from decoding.attention import AttentionDropout, LabControl, lab_attention_for
from decoding.engine import Engine, Side
from decoding.methods import REGISTRY
from models import TINY_FAMILIES

QUESTION = "Is there a red circle in the picture?"
LONGER = "Describe every shape in the picture, its colour and where it is, in a few words please."


def test_rule_is_the_spec_s_vector_and_the_release_s_cut():
    expert, amateur = torch.tensor([[3.0, 2.5, 0.0, -2.0]]), torch.tensor([[3.0, 1.0, 0.0, 0.0]])
    out = rules.distillation_cd(expert, amateur, beta=0.5, alpha=0.1)
    assert out.tolist() == [[3.0, 3.25, -math.inf, -math.inf]] and int(out.argmax()) == 1  # plain: token 0
    # The release's min(l_(min_keep), log alpha + max l): with min_keep 2 the second token survives any alpha.
    tight = rules.distillation_cd(expert, amateur, beta=0.5, alpha=1.0)
    assert torch.isinf(tight[0, 1:]).all()
    assert torch.isfinite(rules.distillation_cd(expert, amateur, beta=0.5, alpha=1.0, min_keep=2)[0, :2]).all()
    with pytest.raises(ValueError, match="alpha"):
        rules.distillation_cd(expert, amateur, alpha=0.0)
    with pytest.raises(ValueError, match="min_keep"):
        rules.distillation_cd(expert, amateur, min_keep=0)


def test_dropout_is_f_dropout_s_contract_seeded_and_fresh_at_every_position():
    weights = torch.full((4, 30, 40), 0.5)
    dropped = AttentionDropout(p=0.3, seed=7).dropped(weights.clone(), layer=1, length=40)
    kept = dropped != 0
    assert torch.equal(dropped[kept], torch.full_like(dropped[kept], 0.5 / 0.7))  # scaled by 1/(1 - p)
    assert abs(1 - kept.float().mean().item() - 0.3) < 0.03  # 4800 draws: about p of them dropped
    again = AttentionDropout(p=0.3, seed=7).dropped(weights.clone(), layer=1, length=40)
    assert torch.equal(again, dropped)  # seeded
    for other in (AttentionDropout(p=0.3, seed=8).dropped(weights.clone(), 1, 40),  # another seed,
                  AttentionDropout(p=0.3, seed=7).dropped(weights.clone(), 2, 40),  # layer,
                  AttentionDropout(p=0.3, seed=7).dropped(weights.clone(), 1, 41)):  # or position of the query
        assert not torch.equal(other != 0, kept)
    assert not AttentionDropout(p=1.0, seed=7).dropped(weights.clone(), 1, 40).any()  # p = 1 drops every weight


def test_padding_before_a_row_changes_none_of_its_own_draws():
    """Left padding (a longer row beside it in the batch): the row's own queries and keys get the same mask."""
    edit = AttentionDropout(p=0.5, seed=3)
    weights = torch.rand(2, 9, 9)
    alone = edit.dropped(weights.clone(), layer=0, length=9)
    padded = torch.zeros(2, 12, 12)
    padded[:, 3:, 3:] = weights
    assert torch.equal(edit.dropped(padded, layer=0, length=9)[:, 3:, 3:], alone)
    step = torch.rand(2, 1, 10)  # the next token's one query over 10 keys, alone and behind 3 pads
    padded_step = torch.cat([torch.zeros(2, 1, 3), step], dim=-1)
    assert torch.equal(edit.dropped(padded_step, 0, 10)[..., 3:], edit.dropped(step.clone(), 0, 10))


def _one_forward(adapter, row, edit):
    inputs = {"input_ids": row.input_ids, "attention_mask": torch.ones_like(row.input_ids), **row.token_kwargs,
              "position_ids": row.position_ids, **row.vision_kwargs}
    control = None if edit is None else LabControl({0: (row.image_token_positions, edit)}, lengths={0: row.length})
    with torch.inference_mode(), lab_attention_for(adapter.model):
        return adapter.forward(**adapter.to_model(inputs), lab_control=control).logits[0, -1].float()


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "gemma3"])
def test_the_dropout_changes_the_logits_and_p_0_is_the_plain_row(tiny_model, image, family):
    adapter = tiny_model(family)
    row = adapter.build_row(QUESTION, image)
    plain = _one_forward(adapter, row, None)
    torch.testing.assert_close(_one_forward(adapter, row, AttentionDropout(p=0.0, seed=0)), plain, atol=1e-5, rtol=0)
    dropped = _one_forward(adapter, row, AttentionDropout(p=0.3, seed=0))
    assert (dropped - plain).abs().max() > 1e-3
    assert torch.equal(_one_forward(adapter, row, AttentionDropout(p=0.3, seed=0)), dropped)


def test_the_release_s_top_level_rate_reaches_no_attention(tiny_model, image):
    """Why "as released" drops nothing: the release sets ``attention_dropout`` on the model and calls ``train()``
    (generate.py L272-275); transformers' attention modules read their own rate (0, from the config)."""
    adapter = tiny_model("llava")
    row = adapter.build_row(QUESTION, image)
    plain = _one_forward(adapter, row, None)
    model = adapter.model
    model.attention_dropout = 0.3
    model.train()
    try:
        released = _one_forward(adapter, row, None)
    finally:
        model.eval()
        del model.attention_dropout
    assert torch.equal(released, plain)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_batched_beside_a_longer_prompt_equals_alone(tiny_model, image, family):
    """On every tiny family, the amateur row left-padded in a batch with a longer prompt draws the same masks as
    alone: the same logits for 30 steps, which differ from the original row's at every step."""
    adapter = tiny_model(family)
    short, longer = adapter.build_row(QUESTION, image), adapter.build_row(LONGER, image)
    assert longer.length > short.length
    sides = [Side("method", "distillation_cd", {"original": 0, "amateur": 1}, seed=5,
                  attention_edits={"amateur": AttentionDropout(p=0.3, seed=5)}),
             Side("other", "baseline", {"original": 2})]
    logits = {}
    for batched in (True, False):
        run = Engine(adapter).run([short, short, longer], sides, max_new_tokens=30, batched=batched,
                                  ignore_eos=True, record_logits=True)
        logits[batched] = torch.stack([event.row_logits for event in run])
    torch.testing.assert_close(logits[True], logits[False], atol=1e-4, rtol=0)
    assert (logits[True][:, 1] - logits[True][:, 0]).abs().amax(dim=-1).min() > 1e-3  # every step


def test_as_released_and_p_0_decode_as_plain_and_say_so(embedded_model, picture_of_shapes):
    record = REGISTRY["distillation_cd"]
    assert record.defaults == {"beta": 0.4, "alpha": 0.1, "dropout": 0.3, "as_released": 0}
    for params in ({"as_released": 1}, {"dropout": 0.0}):
        prepared = prepare_comparison(embedded_model, picture_of_shapes, QUESTION, "distillation_cd", **params)
        assert not prepared.sides[1].attention_edits  # no dropout: the amateur is the original row
        result = compare(embedded_model, picture_of_shapes, QUESTION, "distillation_cd", max_new_tokens=4,
                         ignore_eos=True, **params)
        assert [t.token_id for t in result.method_side.tokens] == [t.token_id for t in result.baseline.tokens]
        assert record.notes(result.branches)[0].text.startswith("**No dropout**")
    prepared = prepare_comparison(embedded_model, picture_of_shapes, QUESTION, "distillation_cd", seed=9)
    assert prepared.sides[1].attention_edits["amateur"] == AttentionDropout(p=0.3, seed=9)


@pytest.fixture(scope="module")
def picture_of_shapes():
    from PIL import Image

    return Image.open("assets/examples/shapes-1600000015.png").convert("RGB")
