"""DoLa's heatmap mode: each token's first layer as the top candidate, recorded in the trace (and the JSON), and
the colour mode that shows it, with a note where a side does not record it."""

from __future__ import annotations

import json

import pytest
import torch

from decoding import compare
from demo import render
from models import build_tiny, load_model

QUESTION = "Is there a red circle in the picture?"


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    return load_model(build_tiny("llava", tmp_path_factory.mktemp("llava-dola-heatmap"), seed=1))


@pytest.fixture(scope="module")
def dola_run(llava, image):
    return compare(llava, image, QUESTION, "dola", max_new_tokens=8, ignore_eos=True)


def _expected_first_tops(adapter, row, tokens):
    """From one teacher-forced forward: per token, the first hidden-state index whose lm_head (no final norm; the
    model's logits at the last index) has it as the argmax."""
    ids = torch.cat([row.input_ids, torch.tensor([tokens[:-1]])], dim=1)
    with torch.inference_mode():
        out = adapter.model(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True,
                            **row.vision_kwargs)
        head = adapter.model.get_output_embeddings()
        n = len(out.hidden_states) - 1
        firsts = []
        for step, token in enumerate(tokens):
            position = row.length - 1 + step
            tops = [int(head(out.hidden_states[j][0, position]).argmax()) for j in range(n)]
            tops.append(int(out.logits[0, position].argmax()))
            firsts.append(next((j for j, top in enumerate(tops) if top == token), None))
    return firsts, n


def test_each_token_records_the_first_layer_it_led_at(llava, image, dola_run):
    row = llava.build_row(QUESTION, image)
    for side in (dola_run.method_side, dola_run.baseline):  # the baseline beside DoLa records it too
        tokens = [t.token_id for t in side.tokens]
        firsts, n = _expected_first_tops(llava, row, tokens)
        assert [t.early_exit for t in side.tokens] == [{"first_top": f, "final": n} for f in firsts]
    # the baseline's tokens are the final layer's argmax: every one leads at some layer
    assert all(t.early_exit["first_top"] is not None for t in dola_run.baseline.tokens)
    exported = json.loads(dola_run.to_json())
    assert exported["method_side"]["tokens"][0]["early_exit"] == dola_run.method_side.tokens[0].early_exit


def test_other_methods_do_not_record_it(llava, image):
    run = compare(llava, image, QUESTION, "vcd", max_new_tokens=2)
    assert all(t.early_exit is None for side in (run.baseline, run.method_side) for t in side.tokens)
    assert json.loads(run.to_json())["method_side"]["tokens"][0]["early_exit"] is None


def test_the_layer_colour_mode(dola_run):
    assert ("layer it first led (DoLa, DeCo)", "first_top_layer") in render.COLOUR_MODES
    scale = render.colour_scale(dola_run, "first_top_layer")
    assert (scale.low, scale.high, scale.diverging) == (0.0, 2.0, False)  # the tiny model: layers 0..2
    colours = {}
    for token in dola_run.method_side.tokens:
        colour = scale.colour(render.token_value(token, scale.mode))
        colours.setdefault(token.early_exit["first_top"], set()).add(colour)
    assert all(len(c) == 1 for c in colours.values()) and len({c.pop() for c in colours.values()}) == len(colours)
    assert scale.colour(0.0) != "transparent" != scale.colour(2.0) and scale.colour(None) == "transparent"
    html = render.heatmap_html(dola_run.method_side, scale)
    assert "first top at layer" in html and "cd-note" not in html
    legend = render.legend_html(scale)
    assert "layer 0" in legend and "layer 2" in legend and "first led" in legend


def test_a_side_that_does_not_record_it_says_so(llava, image):
    run = compare(llava, image, QUESTION, "m3id", max_new_tokens=2)
    scale = render.colour_scale(run, "first_top_layer")
    html = render.heatmap_html(run.method_side, scale)
    assert render.NOT_RECORDED["first_top_layer"] in html and "transparent" in html
    assert render.NOT_RECORDED["first_top_layer"] not in render.heatmap_html(run.method_side, render.colour_scale(
        run, "confidence"))


def test_deco_runs_take_the_layer_mode_too(llava, image):
    """DeCo reads early exits too (through the final norm, for its rule): both its panels record the layer each token
    first led at, by the same unnormed exits as DoLa's, so the one legend holds for every panel."""
    run = compare(llava, image, QUESTION, "deco", max_new_tokens=6, ignore_eos=True)
    row = llava.build_row(QUESTION, image)
    for side in (run.method_side, run.baseline):
        firsts, n = _expected_first_tops(llava, row, [t.token_id for t in side.tokens])
        assert [t.early_exit for t in side.tokens] == [{"first_top": f, "final": n} for f in firsts]
    scale = render.colour_scale(run, "first_top_layer")
    assert (scale.low, scale.high) == (0.0, 2.0)
    assert "first top at layer" in render.heatmap_html(run.method_side, scale)
