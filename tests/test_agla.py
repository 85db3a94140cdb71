"""AGLA-like: its rule against the spec's test vector; the local view blacks out the least relevant pixels and keeps the
geometry; the relevance is the model's own attention (as transformers' eager attention gives it) or the shapes world's
ground truth; batched equals alone on every tiny family, or the family is refused with a message."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from decoding import agla, branch_rows, compare, prepare_comparison, rules
from decoding.branch_rows import branch_image
from decoding.engine import Engine
from decoding.methods import REGISTRY
from models import TINY_FAMILIES
from models.shapes_world import world

QUESTION = "Is there a red circle in the picture?"


def test_rule_is_the_spec_s_vector():
    out = rules.agla(torch.tensor([[2.0, 1.5, 0.0, -1.0]]), torch.tensor([[1.0, 2.0, 0.0, 0.0]]), alpha=2.0, beta=0.5)
    assert out.tolist() == [[4.0, 5.5, -math.inf, -math.inf]] and int(out.argmax()) == 1  # plain decoding: token 0
    assert REGISTRY["agla"].defaults == {"alpha": 2.0, "beta": 0.5, "ratio": 0.75, "mask": 0}


def test_keep_top_keeps_the_share_asked_for_and_ties():
    relevance = np.arange(100.0).reshape(10, 10)
    for ratio in (0.05, 0.5, 0.75):
        keep = agla.keep_top(relevance, ratio)
        assert keep.sum() == int(100 * ratio) + 1 and keep[9, 9] and not keep[0, 0]  # the release's index, inclusive
    assert agla.keep_top(relevance, 1.0).all()
    assert agla.keep_top(np.ones((4, 4)), 0.25).all()  # all tied: all kept


def test_the_local_view_is_the_picture_with_the_least_relevant_pixels_black():
    picture = Image.fromarray(np.random.default_rng(0).integers(1, 255, (30, 40, 3), dtype=np.uint8))
    hot = torch.zeros(3, 4)
    hot[0, 3] = 1.0  # the top-right cell
    relevance = agla.upsampled(hot, picture.size)
    assert relevance.shape == (30, 40)
    keep = agla.keep_top(relevance, 0.25)
    assert keep[:10, 30:].all() and not keep[20:, :10].any()  # the hot cell kept, the far corner not
    local = np.asarray(agla.blacked(picture, keep))
    assert local.shape == (30, 40, 3)  # the geometry kept: no crop, no zoom
    assert np.array_equal(local[keep], np.asarray(picture)[keep]) and not local[~keep].any()


def _eager_saliency(adapter, row) -> torch.Tensor:
    """The prompt's last token's attention over the image tokens, mean over layers and heads, from transformers' own
    eager attention (not the project's attention function)."""
    inputs = {"input_ids": row.input_ids, "attention_mask": torch.ones_like(row.input_ids), **row.token_kwargs,
              "position_ids": row.position_ids, **row.vision_kwargs}
    adapter.model.set_attn_implementation("eager")
    try:
        with torch.inference_mode():
            attentions = adapter.forward(**adapter.to_model(inputs), output_attentions=True).attentions
    finally:
        adapter.model.set_attn_implementation("sdpa")
    positions = row.image_token_positions
    return torch.stack([a[0, :, -1, positions].float().mean(dim=0) for a in attentions]).mean(dim=0)


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_the_saliency_mask_is_the_model_s_own_attention(tiny_model, image, family):
    adapter = tiny_model(family)
    prepared = prepare_comparison(adapter, image, QUESTION, "agla", ratio=0.5)
    original = prepared.rows[prepared.sides[1].roles["original"]]
    saliency = _eager_saliency(adapter, original).reshape(original.image_grid)
    # laid over the part of the picture the image tokens see (LLaVA-1.5: its centre crop of this 56 x 40 picture)
    expected = agla.blacked(image, agla.keep_top(agla.upsampled(saliency, image.size,
                                                                adapter.image_grid_box(image.size)), 0.5))
    local = prepared.rows[prepared.sides[1].roles["local"]]
    built = adapter.build_row(QUESTION, expected)  # the family's own preprocessing of the masked picture
    assert torch.equal(local.input_ids, built.input_ids)
    for key, value in built.vision_kwargs.items():
        assert torch.equal(local.vision_kwargs[key], value), key
    assert abs(prepared.result.branches["kept_ratio"] - 0.5) < 0.05


def test_the_attention_mask_lies_over_the_part_of_the_picture_the_model_sees(tiny_model, monkeypatch):
    """LLaVA-1.5 resizes a picture's shorter side and keeps the middle square (CLIP's centre crop): its image tokens
    lie over that square only. On a 2:1 picture whose first image token is the most relevant, the local view keeps
    the top-left of what the model sees (not the picture's own top-left, which the model never sees), and the share
    kept is of what it sees."""
    adapter = tiny_model("llava")
    picture = Image.fromarray(np.full((64, 128, 3), 200, dtype=np.uint8))
    assert adapter.image_grid_box(picture.size) == (32.0, 0.0, 96.0, 64.0)
    rows, cols = adapter.build_row(QUESTION, picture).image_grid
    first_token = torch.zeros(1, rows * cols)
    first_token[0, 0] = 1.0
    monkeypatch.setattr(branch_rows, "prefill_image_attention", lambda adapter, row: first_token)
    prepared = prepare_comparison(adapter, picture, QUESTION, "agla", ratio=0.05)
    seen = np.asarray(branch_image(adapter, prepared.rows[prepared.sides[1].roles["local"]])).max(axis=-1)
    side = seen.shape[0]
    assert (seen[side // 16 : side // 8, side // 16 : side // 8] > 150).all()  # the first token's corner: kept
    inner = seen[:, side // 8 : -side // 8]  # (the outer columns take in the unseen sides through the resize)
    assert (inner[side // 2 :] < 20).all() and (inner[:, side // 2 :] < 20).all()  # the rest of the view: black
    assert abs(prepared.result.branches["kept_ratio"] - 0.05) < 0.01
    # what the model never sees is left as it is: ratio 1 gives it the very picture, its crop's edges included
    prepared = prepare_comparison(adapter, picture, QUESTION, "agla", ratio=1.0)
    local, original = (prepared.rows[prepared.sides[1].roles[r]] for r in ("local", "original"))
    assert torch.equal(local.vision_kwargs["pixel_values"], original.vision_kwargs["pixel_values"])


def test_the_oracle_keeps_the_named_shape_and_refuses_an_unknown_picture(embedded_model):
    scene = world.sample_scene(1_450_000_123, force=("square",))
    picture = world.render(scene)
    question = "is there a square in the image ?"
    with pytest.raises(ValueError, match="oracle mask"):
        compare(embedded_model, picture, question, "agla", mask=1, max_new_tokens=1)
    agla.remember_scenes([scene])
    assert agla.known_scene(picture) == scene and agla.known_scene(picture.rotate(90)) is None
    keep = agla.keep_top(agla.oracle_relevance(scene, question), 0.25)
    squares = world.object_masks(scene)[[i for i, o in enumerate(scene.objects) if o.kind == "square"]].any(axis=0)
    assert keep[squares].all() and keep.mean() < 0.3
    result = compare(embedded_model, picture, question, "agla", mask=1, ratio=0.25, max_new_tokens=2)
    assert result.branches["mask"] == "oracle" and abs(result.branches["kept_ratio"] - keep.mean()) < 1e-9


def test_instructblip_is_refused_with_a_message(tiny_model, image):
    with pytest.raises(ValueError, match="no place in it"):
        prepare_comparison(tiny_model("instructblip"), image, QUESTION, "agla")


@pytest.mark.parametrize("family", [f for f in TINY_FAMILIES if f != "instructblip"])
def test_batched_equals_alone_on_every_family(tiny_model, image, family):
    """30 steps, sampled as the release samples: every row batched as alone, the local row not the original."""
    adapter = tiny_model(family)
    prepared = prepare_comparison(adapter, image, QUESTION, "agla", do_sample=True, seed=2, attention_layers=None)
    logits = {}
    for batched in (True, False):
        run = Engine(adapter).run(prepared.rows, prepared.sides, max_new_tokens=30, sampling=prepared.sampling,
                                  batched=batched, ignore_eos=True, record_logits=True)
        logits[batched] = torch.stack([event.row_logits for event in run])
    torch.testing.assert_close(logits[True], logits[False], atol=1e-4, rtol=0)
    roles = prepared.sides[1].roles
    assert not torch.allclose(logits[True][:, roles["local"]], logits[True][:, roles["original"]])


def test_ratio_1_keeps_the_picture(embedded_model):
    picture = world.render(world.sample_scene(1_450_000_321))
    prepared = prepare_comparison(embedded_model, picture, "is there a star ?", "agla", ratio=1.0)
    local, original = (prepared.rows[prepared.sides[1].roles[r]] for r in ("local", "original"))
    assert torch.equal(local.vision_kwargs["pixel_values"], original.vision_kwargs["pixel_values"])


def test_the_lab_remembers_its_scenes_for_the_oracle(tmp_path):
    from eval.shapes_world import evaluate, lab

    lab.write_questions(str(tmp_path), 3, seed=77)
    for scene in evaluate.pope_scenes(3, 77):
        assert agla.known_scene(world.render(scene)) == scene
