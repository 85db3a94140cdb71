"""The project's attention function (decoding.attention): sdpa's numbers where nothing is edited, eager's weights when
they are asked for, and PAI's amplification on exactly the rows, layers and steps it names."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from decoding import compare
from decoding import rules
from decoding.attention import BlindTokens, ImageAmplification, LabControl, SelfIntrospection, lab_attention_for
from decoding.engine import Engine, Side
from decoding.methods import METHODS
from models import TINY_FAMILIES, build_tiny, load_model

QUESTION = "Is there a red circle in the picture?"


@pytest.fixture(scope="module", params=TINY_FAMILIES)
def model(request, tmp_path_factory):
    return load_model(build_tiny(request.param, tmp_path_factory.mktemp(request.param), seed=0))


def _inputs(model, image):
    row = model.build_row(QUESTION, image)
    inputs = {"input_ids": row.input_ids, "attention_mask": torch.ones_like(row.input_ids), **row.token_kwargs}
    return row, model.to_model({**inputs, "position_ids": row.position_ids, **row.vision_kwargs})


def test_with_nothing_to_edit_it_is_sdpa_and_eager(model, image):
    _, inputs = _inputs(model, image)
    with torch.inference_mode():
        plain = model.forward(**inputs).logits
        with lab_attention_for(model.model):
            ours = model.forward(**inputs).logits
            ours_weights = model.forward(**inputs, output_attentions=True).attentions
        model.model.set_attn_implementation("eager")
        eager = model.forward(**inputs, output_attentions=True)
        model.model.set_attn_implementation("sdpa")
    torch.testing.assert_close(ours, plain, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours, eager.logits, atol=1e-6, rtol=0)
    assert len(ours_weights) == len(eager.attentions)
    for a, b in zip(ours_weights, eager.attentions, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_last_query_weights_are_the_full_weights_last_row_with_and_without_edits(model, image):
    """What a prefill's recording asks for: every layer's last-query weights, edited layers (SID from layer 1) and
    plain ones alike, as the full eager weights' last row; the logits unchanged."""
    row, inputs = _inputs(model, image)
    edits = {0: (row.image_token_positions, SelfIntrospection(keep=2, layer=1))}
    with torch.inference_mode(), lab_attention_for(model.model):
        full = model.forward(**inputs, output_attentions=True, lab_control=LabControl(dict(edits)))
        last = model.forward(**inputs, output_attentions=True,
                             lab_control=LabControl(dict(edits), last_query_weights=True))
    torch.testing.assert_close(last.logits, full.logits, atol=1e-5, rtol=0)
    assert len(last.attentions) == len(full.attentions)
    for a, b in zip(last.attentions, full.attentions, strict=True):
        assert a.shape[-2] == 1
        torch.testing.assert_close(a[..., 0, :], b[..., -1, :], atol=1e-6, rtol=0)


def test_instructblip_runs_the_function_in_its_language_model_its_q_former_computing_as_under_sdpa(image, tmp_path):
    """InstructBLIP: the run's attention function is the language model's (its attention weights come back, edits
    act there); the vision tower and the Q-Former get none of the forward's keywords, so they compute what sdpa and
    eager compute, whatever the kernel switch."""
    from decoding.attention import NAME

    model = load_model(build_tiny("instructblip", tmp_path, seed=0))
    row, inputs = _inputs(model, image)
    vision = {k: inputs[k] for k in ("pixel_values", "qformer_input_ids", "qformer_attention_mask")}
    with torch.inference_mode():
        plain = model.model.get_image_features(**vision).pooler_output
        with lab_attention_for(model.model):
            assert model.model.language_model.config._attn_implementation == NAME
            ours = model.model.get_image_features(**vision).pooler_output
            out = model.forward(**inputs, output_attentions=True)
        model.model.set_attn_implementation("eager")
        eager = model.model.get_image_features(**vision).pooler_output
        model.model.set_attn_implementation("sdpa")
    torch.testing.assert_close(ours, plain, atol=1e-6, rtol=0)
    torch.testing.assert_close(eager, plain, atol=1e-6, rtol=0)
    layers = model.model.config.text_config.num_hidden_layers
    assert len(out.attentions) == layers and out.attentions[0].shape[-1] == row.length  # the language model's


def test_amplification_raises_image_attention_on_its_layers_only(model, image):
    row, inputs = _inputs(model, image)
    edit = ImageAmplification(alpha=50.0, first_layer=1, first_step=0)  # large: a random model's scores are ~0
    control = LabControl({0: (row.image_token_positions, edit)})
    with torch.inference_mode(), lab_attention_for(model.model):
        before = model.forward(**inputs, output_attentions=True).attentions
        after = model.forward(**inputs, output_attentions=True, lab_control=control).attentions
    image_keys = row.image_token_positions
    for layer, (a, b) in enumerate(zip(before, after, strict=True)):
        mass_before = float(a[0, :, -1, image_keys].sum(-1).mean())
        mass_after = float(b[0, :, -1, image_keys].sum(-1).mean())
        if layer < 1:
            assert mass_after == pytest.approx(mass_before, abs=1e-6)
        else:
            assert mass_after > mass_before + 1e-3, (layer, mass_before, mass_after)
        torch.testing.assert_close(a[0, :, :-1], b[0, :, :-1])  # only the last query row is edited


def test_as_released_leaves_the_first_token_unamplified_with_the_cfg_term_only(image):
    model = load_model("assets/shapes-llava")
    shapes_image = Image.open("assets/examples/shapes-1600000015.png")  # a triangle without its star
    question = "is there a square in the image ?"
    options = {"max_new_tokens": 3, "ignore_eos": True, "alpha": 1.0}
    released = compare(model, shapes_image, question, "pai", **options)
    described = compare(model, shapes_image, question, "pai", as_released=0, **options)
    first = [r.method_side.tokens[0].branches["original"] for r in (released, described)]
    baseline_first = released.baseline.tokens[0].branches["original"]
    # The model is sure of its first word ("no", p = 0.999): the edit shows in the runner-up's probability.
    runner_up = [view.top[1].prob for view in (*first, baseline_first)]
    assert runner_up[0] == pytest.approx(runner_up[2], rel=1e-5)  # as released: the prefill is not edited
    assert abs(runner_up[1] / runner_up[2] - 1) > 0.02  # as described: it is
    second = released.method_side.tokens[1].image_attention["share"]
    assert second > released.baseline.tokens[1].image_attention["share"]  # from the second token on, it is
    # gamma 1 is the release without --use-cfg: nothing clears a flag late, the first token is amplified too.
    no_cfg = compare(model, shapes_image, question, "pai", gamma=1.0, **options)
    runner_up_no_cfg = no_cfg.method_side.tokens[0].branches["original"].top[1].prob
    assert runner_up_no_cfg == pytest.approx(runner_up[1], rel=1e-5)
    assert no_cfg.branches["amplified_from_token"] == 1 and released.branches["amplified_from_token"] == 2


def test_other_rows_of_the_batch_are_untouched(image, tmp_path):
    model = load_model(build_tiny("llava", tmp_path / "llava", seed=2))
    row = model.build_row(QUESTION, image)
    edit = ImageAmplification(alpha=50.0, first_layer=0, first_step=0)
    amplified = Side("pai", "pai", {"original": 1}, attention_edits={"original": edit})
    sides = [Side("plain", "baseline", {"original": 0}), amplified]
    run = Engine(model).run([row, row], sides, max_new_tokens=4, ignore_eos=True, record_logits=True)
    logits = torch.stack([event.row_logits for event in run])
    alone = Engine(model).run([row], sides[:1], max_new_tokens=4, ignore_eos=True, record_logits=True)
    torch.testing.assert_close(logits[:, 0], torch.stack([event.row_logits[0] for event in alone]), atol=1e-5, rtol=0)
    assert not torch.allclose(logits[:, 0], logits[:, 1])


def test_self_introspection_keeps_the_least_attended_image_tokens_from_its_layer_on(model, image):
    row, inputs = _inputs(model, image)
    image_keys = row.image_token_positions
    edit = SelfIntrospection(keep=4, layer=1)
    control = LabControl({0: (image_keys, edit)})
    with torch.inference_mode(), lab_attention_for(model.model):
        before = model.forward(**inputs, output_attentions=True).attentions
        after = model.forward(**inputs, output_attentions=True, lab_control=control).attentions
    # the keep set: the 4 image keys the last query attended least at layer 0, head mean (SID's CT2S)
    expected = image_keys[rules.sid_keep_tokens(before[0][0, :, -1, image_keys].float().mean(0), k=4)]
    assert torch.equal(control.kept[0], expected)
    torch.testing.assert_close(after[0], before[0])  # the layer it reads is not edited
    hidden = image_keys[~torch.isin(image_keys, expected)]
    for layer in range(1, len(after)):  # from its layer on, no query of the row sees the other image keys
        assert float(after[layer][0][..., hidden].abs().max()) == 0.0
        assert float(after[layer][0][..., expected].sum()) > 0.0


def test_blind_tokens_zero_the_other_image_embeddings_of_their_row_only(model, image):
    row, inputs = _inputs(model, image)
    # Two copies of the row (M-RoPE positions are (3, batch, length); Qwen's patches simply follow one another).
    batch = {k: torch.cat([v, v], dim=1 if k == "position_ids" and v.dim() == 3 else 0) for k, v in inputs.items()}
    seen = {}

    def spy(module, args, kwargs):
        seen["embeds"] = kwargs["inputs_embeds"].clone()

    image_keys = row.image_token_positions
    control = LabControl({1: (image_keys, BlindTokens(keep=(0, 2)))})
    decoder = model.model.get_decoder()
    with torch.inference_mode(), lab_attention_for(model.model):
        hook = decoder.register_forward_pre_hook(spy, with_kwargs=True)  # runs after the lab's own pre-hook
        try:
            model.forward(**batch)
            plain = seen["embeds"]
            model.forward(**batch, lab_control=control)
            edited = seen["embeds"]
        finally:
            hook.remove()
    zeroed = image_keys[[i for i in range(len(image_keys)) if i not in (0, 2)]]
    assert float(edited[1, zeroed].abs().max()) == 0.0
    torch.testing.assert_close(edited[1, image_keys[[0, 2]]], plain[1, image_keys[[0, 2]]])
    torch.testing.assert_close(edited[0], plain[0])  # the other row is untouched
    others = torch.ones(edited.shape[1], dtype=torch.bool)
    others[zeroed] = False
    torch.testing.assert_close(edited[1, others], plain[1, others])


# ---- recording the image attention changes nothing -------------------------------------------------------------------
@pytest.fixture
def embedded(embedded_model):
    return embedded_model


def _decoded(result):
    """Every side's tokens, and every probability its trace shows (the final distribution's and each row's)."""
    sides = [result.baseline, result.method_side]
    tokens = [[t.token_id for t in side.tokens] for side in sides]
    probs = [p for side in sides for t in side.tokens for p in (t.final.prob, *(v.prob for v in t.branches.values()))]
    return tokens, probs


@pytest.mark.parametrize("method, params", [
    *((m, {}) for m in METHODS),
    ("sid", {"keep": 4}), ("sid", {"keep": 4, "layer": 1}),  # an edit large enough to move the probabilities
    ("pai", {"as_released": 0, "alpha": 2.0}),  # the prefill edited too
])
def test_recording_the_image_attention_changes_no_token_and_no_probability(embedded, method, params):
    """The app records each token's image attention (its heatmaps), eval does not: every method must decode the same
    either way (SID's edit was lost in a prefill split for the recording, the first token's probabilities moved)."""
    shapes_image = Image.open("assets/examples/shapes-1600000015.png").convert("RGB")
    runs = [
        compare(embedded, shapes_image, "is there a square in the image ?", method, max_new_tokens=3, ignore_eos=True,
                attention_layers=layers, **params)
        for layers in ("all", None)
    ]
    (tokens_on, probs_on), (tokens_off, probs_off) = map(_decoded, runs)
    assert tokens_on == tokens_off
    assert probs_on == pytest.approx(probs_off, abs=1e-5)
    assert runs[0].method_side.tokens[0].image_attention is not None
