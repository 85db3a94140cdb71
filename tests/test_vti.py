"""VTI (Liu, Ye, Zou, ICLR 2025; ``decoding/vti.py``, ``eval/vti_calibrate.py``): the directions are the release's mean
plus first principal direction (the visual one in its scrambled layout), the masks fill 99 % of the patches with the
channel mean, the method's row is the release's norm-preserving edit of every decoder and vision-encoder layer's MLP
output (against hooks written here, on the embedded model and its shipped directions), batched equals alone on every
tiny family (Qwen3-VL's visual steering refused), and the calibration command runs end to end on the shapes world and
on a COCO-format fixture, resumes, and writes what decoding reads."""

from __future__ import annotations

import functools
import json
import os
import threading

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from test_coco_training import coco_flags, write_coco

from decoding import compare
from decoding.comparison import prepare_comparison
from decoding.dcd import language_model_inputs, replaced_image_embeddings
from decoding.engine import Engine
from decoding.vti import (
    directions_for,
    masked_view,
    mean_plus_first_component,
    steered_vision,
    untrained_directions,
    visual_embeddings,
    visual_token_direction,
    vti_folder,
)
from eval import vti_calibrate
from eval.ecd_data import stacked
from models import TINY_FAMILIES, build_tiny, load_model
from models.shapes_world import world

QUESTION = "Is there a red circle in the picture?"
PAPER = {"alpha_text": 0.9, "alpha_image": 0.9, "demos": 70}  # the paper's README command


# ---- the directions -------------------------------------------------------------------------------------------------

def test_a_direction_is_the_mean_plus_the_top_principal_direction_signed_by_the_largest_projection():
    x = torch.randn(3, 7, 5, generator=torch.Generator().manual_seed(0)) * torch.tensor([4.0, 1, 1, 0.5, 0.2])
    out = mean_plus_first_component(x)
    for b in range(3):
        mean = x[b].mean(0)
        component = out[b] - mean
        centred = x[b] - mean
        top = torch.linalg.eigh(centred.T @ centred).eigenvectors[:, -1]  # the largest variance's direction
        assert torch.allclose(component.norm(), torch.tensor(1.0), atol=1e-5)
        assert torch.allclose(component.abs(), top.abs(), atol=1e-4)
        projections = centred @ component
        assert projections[projections.abs().argmax()] > 0


def test_the_visual_direction_keeps_each_tokens_mean_and_adds_the_releases_scrambled_principal_term():
    demos, layers, tokens, dim = 4, 3, 5, 2
    x = torch.randn(demos, layers, tokens, dim, generator=torch.Generator().manual_seed(1))
    term = visual_token_direction(x) - x.mean(0)
    # one unit vector per row of the release's (tokens, layers * dim) layout of the (layers, tokens, dim) memory
    assert torch.allclose(term.reshape(tokens, -1).norm(dim=-1), torch.ones(tokens), atol=1e-5)
    assert not torch.allclose(term.norm(dim=-1), torch.ones(layers, tokens), atol=1e-2)  # not one per layer-token


def test_a_mask_fills_99_percent_of_the_patches_with_the_views_channel_means():
    view = torch.randn(3, 48, 48, generator=torch.Generator().manual_seed(2))
    masked = masked_view(view, 8, 0.99, torch.Generator().manual_seed(0))
    patches = masked.unfold(1, 8, 8).unfold(2, 8, 8).permute(1, 2, 0, 3, 4).reshape(36, 3, 64)
    means = view.mean(dim=(1, 2))
    filled = [bool(torch.allclose(p, means[:, None].expand(3, 64))) for p in patches]
    assert sum(filled) == 35  # int(0.99 * 36) of the 36 patches of 8 px
    kept = filled.index(False)
    r, c = divmod(kept, 6)
    assert torch.equal(masked[:, 8 * r:8 * r + 8, 8 * c:8 * c + 8], view[:, 8 * r:8 * r + 8, 8 * c:8 * c + 8])


# ---- the edit --------------------------------------------------------------------------------------------------------

def _release_edit(direction, strength, module, args, output):
    """VTILayer's forward (llm_layers.py L16-32) as its docstring-free formula: normalize(normalize(x) + 0.1·λ·d̂)·‖x‖,
    the direction normalised along its last axis (per token for the vision encoder)."""
    x = output.float()
    steered = F.normalize(F.normalize(x, dim=-1) + 0.1 * strength * F.normalize(direction.float(), dim=-1), dim=-1)
    return (steered * x.norm(dim=-1, keepdim=True)).to(output.dtype)


def _engine_logits(adapter, picture, question, steps, **params):
    prepared = prepare_comparison(adapter, picture, question, "vti", attention_layers=None, **params)
    events = list(Engine(adapter).run(prepared.rows, prepared.sides, max_new_tokens=steps, ignore_eos=True,
                                      record_logits=True))
    method, baseline = prepared.sides[1].roles["original"], prepared.sides[0].roles["original"]
    tokens = [e.tokens["method"].token_id for e in events]
    logits = torch.stack([e.row_logits for e in events])
    return logits[:, method], logits[:, baseline], tokens


def test_the_method_row_is_the_releases_edit_of_every_llm_and_vision_layer(embedded_model):
    """The embedded model with its shipped directions at the paper's setting: the engine's steered row, step by step,
    against one teacher-forced forward of the same tokens under hooks written here on every decoder layer's and
    every vision-encoder layer's MLP (per-token visual directions: one view of 37 tokens)."""
    adapter = embedded_model
    picture = world.render(world.sample_scene(1_000_000_007))
    steered, plain, tokens = _engine_logits(adapter, picture, world.DESCRIBE_PROMPT, 6, **PAPER)
    directions = directions_for(adapter)
    text, visual = directions.text[70], directions.visual_tokens[70]
    hooks = [layer.mlp.register_forward_hook(functools.partial(_release_edit, text[i], 0.9))
             for i, layer in enumerate(adapter.model.get_decoder().layers)]
    hooks += [layer.mlp.register_forward_hook(functools.partial(_release_edit, visual[i], 0.9))
              for i, layer in enumerate(adapter.vision_encoder_layers())]
    row = adapter.build_row(world.DESCRIBE_PROMPT, picture)
    try:
        with torch.no_grad():
            forced = adapter.forward(**stacked(adapter, [row], [tokens]), use_cache=False).logits[0].float()
    finally:
        for hook in hooks:
            hook.remove()
    expected = forced[row.length - 1: row.length - 1 + len(tokens)]
    torch.testing.assert_close(steered, expected, atol=1e-4, rtol=0)
    assert (steered - plain).abs().max() > 0.05  # the edit moves the logits


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_batched_equals_alone_for_30_steps_on_every_tiny_family(family, tiny_model, image):
    """Both parts on (the paper's strengths); the visual part alone moves the row; Qwen3-VL's visual steering is
    refused (DeepStack), its textual steering runs."""
    adapter = tiny_model(family)
    untrained_directions(adapter)
    params = dict(PAPER)
    if family == "qwen3_vl":
        with pytest.raises(ValueError, match="DeepStack.*alpha_image to 0"):
            prepare_comparison(adapter, image, QUESTION, "vti", **params)
        params["alpha_image"] = 0.0
    prepared = prepare_comparison(adapter, image, QUESTION, "vti", seed=3, attention_layers=None, **params)
    logits = {}
    for batched in (True, False):
        events = list(Engine(adapter).run(prepared.rows, prepared.sides, max_new_tokens=30, batched=batched,
                                          ignore_eos=True, record_logits=True))
        logits[batched] = torch.stack([e.row_logits for e in events])
    torch.testing.assert_close(logits[True], logits[False], atol=1e-4, rtol=0)
    if params["alpha_image"]:  # the row's image-token embeddings are the steered encoder's, not the model's own
        row = adapter.build_row(QUESTION, image)
        steered, kind = visual_embeddings(adapter, row, directions_for(adapter), 70, 30.0)
        own = replaced_image_embeddings(adapter, row, language_model_inputs(adapter, row)["inputs_embeds"])
        assert kind in ("per-token", "token-mean") and steered.embeddings.shape == own.embeddings.shape
        assert (steered.embeddings - own.embeddings).abs().max() > 1e-5  # identical computations differ by 0


def test_the_steered_vision_encoder_leaves_another_thread_s_forward_alone(embedded_model, image):
    """Two runs of one model at once (a library caller's threads): while one row's image goes through the steered
    vision encoder, another thread's image goes through it as it is."""
    adapter, directions = embedded_model, directions_for(embedded_model)
    other = adapter.build_row(QUESTION, world.render(world.sample_scene(1_000_000_011)))
    own = language_model_inputs(adapter, other)["inputs_embeds"]
    seen = {}

    def other_forward():
        seen["inputs_embeds"] = language_model_inputs(adapter, other)["inputs_embeds"]

    with steered_vision(adapter, directions.visual_tokens[50], directions.visual_mean[50], 3.0) as used:
        thread = threading.Thread(target=other_forward)
        thread.start()
        thread.join()
        steered = language_model_inputs(adapter, other)["inputs_embeds"]
    assert used and (steered - own).abs().max() > 1e-4  # this thread's forward is steered
    torch.testing.assert_close(seen["inputs_embeds"], own, atol=0, rtol=0)


def test_refusals_name_the_calibration_command_and_no_server_path(tmp_path, image):
    adapter = load_model(build_tiny("llava", tmp_path / "plain", seed=2))
    with pytest.raises(ValueError) as refused:
        compare(adapter, image, QUESTION, "vti", max_new_tokens=2)
    assert "python -m eval.vti_calibrate" in str(refused.value) and str(tmp_path) not in str(refused.value)
    untrained_directions(adapter, counts=(50,))
    with pytest.raises(ValueError, match="from 50 demos, not 70: set demos .* --demos 70"):
        compare(adapter, image, QUESTION, "vti", max_new_tokens=2, demos=70)
    config_path = os.path.join(vti_folder(adapter.model_id), "vti.json")
    config = json.load(open(config_path))
    config["signature"]["num_layers"] = 5  # directions of a deeper model
    json.dump(config, open(config_path, "w"))
    with pytest.raises(ValueError, match="computed for a model with") as refused:
        compare(adapter, image, QUESTION, "vti", max_new_tokens=2)
    assert str(tmp_path) not in str(refused.value)


# ---- the calibration command ----------------------------------------------------------------------------------------

def test_the_shapes_twin_inserts_one_object_of_a_kind_the_scene_lacks():
    for demo in vti_calibrate.shapes_demos(6, seed=0):
        scene = world.sample_scene(int(demo.key))
        clean, twin = world.parse_description(demo.clean), world.parse_description(demo.hallucinated)
        assert demo.clean == world.describe(scene) and twin[:-1] == clean
        assert twin[-1][1] not in scene.kinds
        assert twin[-1][1] in world.absent_partners(scene) or not world.absent_partners(scene)


def test_calibration_on_coco_writes_what_decoding_reads_and_resumes(tmp_path, capfd):
    paths = write_coco(tmp_path / "coco")
    path = build_tiny("llava", tmp_path / "llava", seed=1)
    argv = ["--model", path, "--work", str(tmp_path / "work"), "--demos", "2,3", "--trials", "2",
            *coco_flags(paths)]
    assert vti_calibrate.main(argv) == 0
    assert "vti demos [" in capfd.readouterr().err
    record = json.load(open(os.path.join(path, "vti", "vti.json")))
    assert record["command"].startswith("python -m eval.vti_calibrate --model") and record["settings"]["seed"] == 42
    assert record["settings"]["demos"] == [2, 3] and record["settings"]["source"] == "coco"
    assert len(record["demos"]) == 3 and record["visual_tokens"] == {"2": [2, 17, 32], "3": [2, 17, 32]}
    for demo in record["demos"]:
        assert demo["hallucinated"].split(" ")[0] == demo["clean"].split(" ")[0]
        assert "There is also a" in demo["hallucinated"]
    adapter = load_model(path)
    directions = directions_for(adapter)
    assert directions.counts() == [2, 3] and directions.text[3].shape == (2, 64)
    picture = Image.open(os.path.join(paths["images"], "COCO_val2014_000000000101.jpg"))
    result = compare(adapter, picture, QUESTION, "vti", max_new_tokens=2, ignore_eos=True, demos=3, alpha_image=0.9)
    assert result.branches["visual"] == "per-token" and len(result.method_side.tokens) == 2
    cached = {name: os.path.getmtime(tmp_path / "work" / name) for name in os.listdir(tmp_path / "work")}
    assert vti_calibrate.main(argv) == 0  # resumed: every demo's differences read back, not recomputed
    assert cached == {name: os.path.getmtime(tmp_path / "work" / name) for name in os.listdir(tmp_path / "work")}
    assert vti_calibrate.main([*argv, "--demos", "9"]) == 2
    assert "--demos asks for 9 demos and only 6" in capfd.readouterr().err


def test_the_embedded_model_ships_directions_for_both_settings(embedded_model):
    directions = directions_for(embedded_model)
    assert directions.counts() == [50, 70] and sorted(directions.visual_tokens) == [50, 70]
    assert directions.visual_tokens[50].shape == (4, 37, 96) and directions.text[70].shape == (4, 128)
    settings = directions.config["settings"]
    assert settings == {"demos": [50, 70], "trials": 50, "mask_ratio": 0.99, "seed": 42, "source": "shapes world"}
    assert directions.config["command"].startswith("python -m eval.vti_calibrate")


def test_a_strength_past_its_bound_is_refused_naming_it_and_the_bound_decodes(embedded_model):
    """Unbounded as released, but 1e300 overflows float32 inside the edit: refused up front; 1000 decodes."""
    picture = world.render(world.sample_scene(1_000_000_007))
    for name in ("alpha_text", "alpha_image", "demos"):
        with pytest.raises(ValueError, match=f"{name} must be <= 1000"):
            compare(embedded_model, picture, world.DESCRIBE_PROMPT, "vti", max_new_tokens=2, **{name: 10**300})
    result = compare(embedded_model, picture, world.DESCRIBE_PROMPT, "vti", max_new_tokens=2, ignore_eos=True,
                     alpha_text=1000.0, alpha_image=1000.0)
    assert len(result.method_side.tokens) == 2
