"""Runs of one model at once (the app serves each session in its own thread, all on the one loaded model): a run
ending must leave the others' attention function, edits and recording as they were. Two runs interleaved in one
thread (their generators stepped by turns) are each what they are alone."""

from __future__ import annotations

import json

import pytest
from decoding import stream_compare
from decoding.attention import NAME
from decoding.sampling import SamplingConfig
from pictures import red_square_on_noise

QUESTION = "Is there a red square?"


def run_alone(model, method: str, **options) -> dict:
    *_, done = stream_compare(model, red_square_on_noise(0), QUESTION, method, **options)
    return done.to_dict()


def interleaved(model, first: tuple[str, dict], second: tuple[str, dict]) -> tuple[dict, dict]:
    """``first`` starts, then ``second``; ``first`` runs to its end while ``second`` waits after its first token;
    then ``second`` ends."""
    one = stream_compare(model, red_square_on_noise(0), QUESTION, first[0], **first[1])
    next(one)
    two = stream_compare(model, red_square_on_noise(0), QUESTION, second[0], **second[1])
    next(two)
    *_, one_done = one
    *_, two_done = two
    return one_done.to_dict(), two_done.to_dict()


def same(a: dict, b: dict) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


OPTIONS = {"max_new_tokens": 6, "ignore_eos": True, "sampling": SamplingConfig()}


@pytest.mark.parametrize(("first", "second"), [
    (("vcd", {}), ("pai", {})),  # a recording run ends under an editing one (it switched the model to eager)
    (("pai", {}), ("sid", {"keep": 4})),  # an editing run ends under another
    (("pai", {"attention_layers": None}), ("vcd", {})),  # an editing run, not recording, ends under a recording one
])
def test_a_run_ending_leaves_the_other_running_as_it_runs_alone(embedded_model, first, second):
    before = embedded_model.model.config._attn_implementation
    expected = [run_alone(embedded_model, name, **{**OPTIONS, **options}) for name, options in (first, second)]
    got = interleaved(embedded_model, (first[0], {**OPTIONS, **first[1]}), (second[0], {**OPTIONS, **second[1]}))
    assert same(got[0], expected[0]) and same(got[1], expected[1])
    assert embedded_model.model.config._attn_implementation == before != NAME  # switched back once both ended


def test_the_attention_hooks_take_a_call_without_keyword_arguments():
    """torch adds a hook first and marks it as taking keyword arguments a moment later: another thread's forward of
    the model (one without edits) may call it in between, as hook(module, args[, output])."""
    import torch
    from decoding import attention

    hidden = torch.zeros(1, 3, 4)
    assert attention._edit_input_embeddings(None, (hidden,)) is None
    assert attention._keep_last_layer_input(None, (hidden,)) is None
    assert attention._keep_final_hidden(None, (hidden,), (hidden,)) is None
