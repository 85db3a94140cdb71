"""DCD at decoding time (decoding/dcd.py): the embedding edit replaces only its row's image-token embeddings, copies
equal to the model's own projector give the plain logits on both rows (LLaVA's projector, Idefics3's connector), the
refusals say what to do, and the shipped model's trained copies decode end to end."""

from __future__ import annotations

import contextlib
import copy
import os
import threading

import pytest
import torch
from safetensors.torch import save_file

from decoding import compare, prepare_comparison, rules
from decoding.attention import LabControl, ReplacedImageEmbeddings, _edit_input_embeddings
from decoding.dcd import (
    DCDMissing,
    ProjectorSwap,
    dcd_folder,
    image_projector,
    language_model_inputs,
    projected_image_embeddings,
    projector_copies,
    untrained_projectors,
)
from decoding.engine import Engine
from models import build_tiny, load_model
from pictures import red_square_on_noise

SHIPPED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "shapes-llava")
needs_shipped = pytest.mark.skipif(
    not os.path.exists(os.path.join(SHIPPED, "dcd", "negative.safetensors")), reason="no shipped DCD copies"
)
QUESTION = "Is there a red circle in the picture?"


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    return load_model(build_tiny("llava", tmp_path_factory.mktemp("llava-dcd"), seed=2))


@pytest.fixture(scope="module")
def idefics3(tmp_path_factory):
    return load_model(build_tiny("idefics3", tmp_path_factory.mktemp("idefics3-dcd"), seed=2))


@pytest.fixture(scope="module")
def image():
    return red_square_on_noise(1)


def _write_copies(adapter, state_by_side):
    folder = dcd_folder(adapter.model_id)
    os.makedirs(folder, exist_ok=True)
    for side, state in state_by_side.items():
        save_file({k: v.detach().float().contiguous() for k, v in state.items()},
                  os.path.join(folder, f"{side}.safetensors"))
    return folder


def test_the_replacement_changes_only_its_rows_image_token_embeddings(llava, image):
    row = llava.build_row(QUESTION, image)
    edit = projected_image_embeddings(llava, row, None)
    index = llava.image_token_indices(row.input_ids)
    assert edit.offsets.numel() == index.numel() >= row.image_token_positions.numel()
    pad, hidden = 3, edit.embeddings.shape[-1]
    embeds = torch.randn(2, row.length + pad, hidden)
    replacement = ReplacedImageEmbeddings(edit.offsets, torch.randn(index.numel(), hidden))
    control = LabControl({1: (row.image_token_positions + pad, replacement)})
    _, kwargs = _edit_input_embeddings(None, (), {"lab_control": control, "inputs_embeds": embeds})
    out = kwargs["inputs_embeds"]
    changed = (out != embeds).any(dim=-1)
    assert not changed[0].any()
    assert changed[1].nonzero().flatten().tolist() == (index + pad).tolist()
    torch.testing.assert_close(out[1, index + pad], replacement.embeddings)
    # a later step (one input position) is left alone
    one = torch.randn(2, 1, hidden)
    assert _edit_input_embeddings(None, (), {"lab_control": control, "inputs_embeds": one}) is None


def test_the_models_own_projector_gives_its_own_embeddings(llava, image):
    row = llava.build_row(QUESTION, image)
    edit = projected_image_embeddings(llava, row, None)
    own = llava.model.get_input_embeddings()(row.input_ids)
    inputs = {"input_ids": row.input_ids, **row.vision_kwargs}
    seen = {}

    def record(module, args, kwargs):
        seen["embeds"] = kwargs["inputs_embeds"]

    hook = llava.model.get_decoder().register_forward_pre_hook(record, with_kwargs=True)
    try:
        with torch.no_grad():
            llava.model(**inputs)
    finally:
        hook.remove()
    index = llava.image_token_indices(row.input_ids)
    torch.testing.assert_close(edit.embeddings, seen["embeds"][0, index])
    assert not torch.allclose(edit.embeddings, own[0, index])  # the image features, not the placeholder's embedding


@pytest.mark.parametrize("family", ["llava", "idefics3"])
def test_copies_equal_to_the_own_projector_give_the_plain_logits_on_both_rows(family, request, image):
    adapter = request.getfixturevalue(family)
    own = adapter.image_projector().state_dict()
    _write_copies(adapter, {"positive": own, "negative": own})
    for variant in (0, 1):
        prepared = prepare_comparison(adapter, image, QUESTION, "dcd", seed=0, attention_layers=None, variant=variant)
        events = list(Engine(adapter).run(prepared.rows, prepared.sides, max_new_tokens=6, ignore_eos=True,
                                          record_logits=True))
        logits = torch.stack([e.row_logits for e in events])
        baseline, method = prepared.sides
        plain = logits[:, baseline.roles["original"]]
        torch.testing.assert_close(logits[:, method.roles["original"]], plain, atol=1e-4, rtol=0)
        torch.testing.assert_close(logits[:, method.roles["negative"]], plain, atol=1e-4, rtol=0)
        assert [e.tokens["method"].token_id for e in events] == [e.tokens["baseline"].token_id for e in events]
        out = rules.dcd(plain[0:1], plain[0:1], alpha=2.0)
        assert torch.equal(torch.isfinite(out), rules.plausibility_mask(plain[0:1], 0.1))


@pytest.mark.parametrize("family", ["llava", "idefics3"])
def test_trained_copies_change_the_rows_and_the_variants_differ(family, request, image):
    adapter = request.getfixturevalue(family)
    untrained_projectors(adapter, seed=4)
    result = {}
    for variant in (0, 1):
        prepared = prepare_comparison(adapter, image, QUESTION, "dcd", seed=0, attention_layers=None, variant=variant)
        events = list(Engine(adapter).run(prepared.rows, prepared.sides, max_new_tokens=3, ignore_eos=True,
                                          record_logits=True))
        logits = events[0].row_logits
        baseline, method = prepared.sides
        assert not torch.allclose(logits[method.roles["negative"]], logits[baseline.roles["original"]])
        same = torch.allclose(logits[method.roles["original"]], logits[baseline.roles["original"]], atol=1e-5)
        assert same == (variant == 1)  # neg-only: the model's own projector on the positive side
        result[variant] = prepared
    assert result[0].sides[1].roles.keys() >= {"original", "negative"}


def test_visual_dependence_in_pos_neg_compares_the_positive_projection_of_both_images(llava, image):
    # A positive copy that projects every image to zeros: the image and its noised twin then reach the language
    # model alike, so the method side's visual dependence is 0 at every token, if the twin went through that copy too.
    own = llava.image_projector().state_dict()
    _write_copies(llava, {"positive": {k: torch.zeros_like(v) for k, v in own.items()}, "negative": own})
    result = compare(llava, image, QUESTION, "dcd", max_new_tokens=4, ignore_eos=True, visual_dependence=True)
    assert [t.visual_dependence for t in result.method_side.tokens] == pytest.approx([0.0] * 4, abs=1e-5)
    assert any(abs(t.visual_dependence) > 1e-3 for t in result.baseline.tokens)  # the noise does matter here


def test_reading_a_row_s_inputs_through_a_swap_leaves_another_thread_s_forward_alone(llava, image):
    """Two runs of one model at once (a library caller's threads; VTI's steered image and DCD's projections are read
    this way): while one row's language-model inputs are read through a swapped projector, another thread's forward
    of the model runs whole, through the model's own projector."""
    row = llava.build_row(QUESTION, image)
    inputs = llava.to_model({"input_ids": row.input_ids, "attention_mask": torch.ones_like(row.input_ids),
                             **row.vision_kwargs})
    with torch.inference_mode():
        plain = llava.model(**inputs).logits
    noisy = copy.deepcopy(image_projector(llava))
    with torch.no_grad():
        for weight in noisy.parameters():
            weight.add_(1.0)
    seen = {}

    def other_forward():  # an error it meets leaves no logits
        with torch.inference_mode():
            seen["logits"] = llava.model(**inputs).logits

    @contextlib.contextmanager
    def swap_while_another_thread_runs():
        with ProjectorSwap(image_projector(llava), noisy):
            thread = threading.Thread(target=other_forward)
            thread.start()
            thread.join()
            yield

    swapped = language_model_inputs(llava, row, swap_while_another_thread_runs())["inputs_embeds"]
    own = language_model_inputs(llava, row)["inputs_embeds"]
    assert (swapped - own).abs().max() > 1e-3  # this thread's read went through the swap
    assert "logits" in seen
    torch.testing.assert_close(seen["logits"], plain, atol=0, rtol=0)


def test_refusals_say_how_to_train(llava, image, tmp_path, monkeypatch):
    plain = load_model(build_tiny("llava", tmp_path / "untrained", seed=3))
    with pytest.raises(DCDMissing, match="python -m eval.dcd_train") as refused:
        compare(plain, image, QUESTION, "dcd", max_new_tokens=2)
    # the app shows refusals to visitors: the model by its folder's name, never a server path
    assert "(untrained)" in str(refused.value) and str(tmp_path) not in str(refused.value)
    with pytest.raises(ValueError, match="python -m eval.ecd_train") as refused:
        compare(plain, image, QUESTION, "ecd", max_new_tokens=2)
    assert "(untrained)" in str(refused.value) and str(tmp_path) not in str(refused.value)
    with pytest.raises(ValueError, match="no positive or negative one"):
        projector_copies(plain)
    # copies of another model's projector do not fit
    other = {"linear_1.weight": torch.zeros(3, 3)}
    _write_copies(plain, {"positive": other, "negative": other})
    with pytest.raises(DCDMissing, match="does not fit"):
        projector_copies(plain)
    qwen = load_model(build_tiny("qwen2_vl", tmp_path / "qwen", seed=0))
    assert qwen.image_projector() is None and untrained_projectors(qwen) is None
    with pytest.raises(ValueError, match="qwen2_vl family has none"):
        compare(qwen, image, QUESTION, "dcd", max_new_tokens=2)
    # a Hub id: under $CD_DCD_HOME
    monkeypatch.setenv("CD_DCD_HOME", str(tmp_path / "home"))
    assert dcd_folder("org/model") == str(tmp_path / "home" / "org--model")


def test_eval_trains_through_the_same_swap():
    from eval import dcd_train

    assert dcd_train.ProjectorSwap is ProjectorSwap


@needs_shipped
def test_the_shipped_model_decodes_with_its_trained_copies():
    from models.shapes_world import world

    adapter = load_model(SHIPPED)
    scene = world.sample_scene(5)
    texts = {}
    for variant in (0, 1):
        result = compare(adapter, world.render(scene), world.DESCRIBE_PROMPT, "dcd", max_new_tokens=24,
                         variant=variant)
        data = result.to_dict()
        assert data["branches"]["variant"] == ("neg-only" if variant else "pos+neg")
        assert data["branches"]["replaced_image_tokens"] == 36
        assert result.method_side.tokens and data["done"]
        texts[variant] = data["method_side"]["text"]
    assert all(texts.values())
