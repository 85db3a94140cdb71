"""The batched engine on every tiny model family: equal to plain generate, equal to the papers' separate forwards,
each row with its own cache, seeded sampling, stopping, finished rows leaving the batch, and the trace.

The method x model tests (batched equals separate forwards, no deprecated argument) run a grid, not the whole
product: every method on the embedded model and on tiny LLaVA, and each other tiny family with two rotating shares of
the methods, so that every method meets four models and every family several methods (``grid``; a test checks the
coverage). The whole product was 350 tests, 3.5 min here, growing by 20 a method; the grid grows by 8."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from decoding import answer_all, answer_many, compare, prepare_comparison, stream_compare
from decoding.engine import Combination, Engine, Side
from decoding.methods import METHODS, REGISTRY
from decoding.sampling import SamplingConfig
from models import TINY_FAMILIES, build_tiny, load_model

QUESTION = "Is there a red circle in the picture?"


@pytest.fixture(params=TINY_FAMILIES)
def model(request, tiny_model):
    """Each tiny family, with its untrained ECD and DCD parts (conftest.py)."""
    return tiny_model(request.param)


# The method x model grid (module docstring): method i runs on the embedded model, tiny LLaVA, and the other families
# i and i + 4 of the nine, as tests/test_path_equivalence.py chooses its cases.
EMBEDDED = "shapes-llava"
OTHER_FAMILIES = tuple(family for family in TINY_FAMILIES if family != "llava")


def grid(methods: tuple[str, ...]) -> list[tuple[str, str]]:
    """(model, method) cases of the grid for ``methods``."""
    n = len(OTHER_FAMILIES)
    rotated = [(OTHER_FAMILIES[(i + shift) % n], method) for i, method in enumerate(methods) for shift in (0, 4)]
    return [*((model, method) for model in (EMBEDDED, "llava") for method in methods), *rotated]


TOKEN_METHODS = tuple(m for m in METHODS if REGISTRY[m].search == "token")  # OPERA's beam search: test_opera.py


def _refused_here(adapter, method: str, call) -> bool:
    """DCD on a family without a separate image projector (Qwen-VL), and ONLY on one whose last decoder layer is not
    LLaMA-shaped (Gemma 3), are refused, with a message saying so; True when it was (the test has nothing more to
    check)."""
    if method == "only":  # ONLY on a family whose last decoder layer is not LLaMA-shaped (Gemma 3)
        try:
            adapter.check_one_layer_enhancement(0)
        except ValueError:
            with pytest.raises(ValueError, match=f"ONLY cannot run on the {adapter.family} family"):
                call()
            return True
        return False
    if method != "dcd" or adapter.image_projector() is not None:
        return False
    with pytest.raises(ValueError, match="has none"):
        call()
    return True


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    return load_model(build_tiny("llava", tmp_path_factory.mktemp("llava-engine"), seed=1))


def _generate(adapter, row, max_new_tokens):
    """Plain transformers generate on one row, the way a user would call it."""
    inputs = {"input_ids": row.input_ids, "attention_mask": torch.ones_like(row.input_ids)}
    inputs.update(row.token_kwargs)
    inputs.update(row.vision_kwargs)
    out = adapter.model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens, min_new_tokens=0)
    return out[0, row.length :].tolist()


@pytest.mark.parametrize("attention", [None, "all"])
def test_baseline_greedy_equals_generate(model, image, attention):
    row = model.build_row(QUESTION, image)
    expected = _generate(model, row, 12)
    side = Side("baseline", "baseline", {"original": 0})
    events = list(Engine(model).run([row], [side], max_new_tokens=12, attention_layers=attention))
    tokens = [e.tokens["baseline"].token_id for e in events]
    eos = set(model.eos_token_ids)
    # generate pads after EOS; the engine stops at it
    assert tokens == expected[: len(tokens)]
    assert len(tokens) == 12 or tokens[-1] in eos


# Parameters under which a method's edit can act on a tiny model (2 layers, 12-16 image tokens): SID's defaults hide
# image tokens from layer 2 on, which a 2-layer model does not have (its page says so); keep 4, not the release's
# share of 16 (3), so that the kept set is a real choice.
ACTING_ON_TINY_MODELS = {"sid": {"keep": 4, "layer": 1}}


def test_the_grid_covers_every_method_and_every_family():
    for methods in (TOKEN_METHODS, METHODS):
        cases = grid(methods)
        assert {method for _, method in cases} == set(methods)
        assert {model for model, _ in cases} == {EMBEDDED, *TINY_FAMILIES}
        assert all(len({model for model, m in cases if m == method}) == 4 for method in methods)
        assert all(sum(model == family for model, _ in cases) >= 2 for family in OTHER_FAMILIES)


@pytest.mark.parametrize(("model_name", "method"), grid(TOKEN_METHODS))
def test_batched_equals_separate_forwards(tiny_model, image, model_name, method):
    """Every row of a side-by-side run, batched with one cache row each, against each row run alone."""
    model = tiny_model(model_name)
    params = {} if model_name == EMBEDDED else ACTING_ON_TINY_MODELS.get(method, {})
    if _refused_here(model, method, lambda: prepare_comparison(model, image, QUESTION, method, **params)):
        return
    prepared = prepare_comparison(model, image, QUESTION, method, seed=3, attention_layers=None, **params)
    steps = 30
    logits = {}
    for batched in (True, False):
        run = Engine(model).run(
            prepared.rows,
            prepared.sides,
            max_new_tokens=steps,
            sampling=prepared.sampling,
            batched=batched,
            ignore_eos=True,
            record_logits=True,
        )
        events = list(run)
        assert len(events) == steps
        logits[batched] = torch.stack([e.row_logits for e in events])
        tokens = {name: [e.tokens[name].token_id for e in events] for name in ("baseline", "method")}
        if batched:
            batched_tokens = tokens
    assert torch.isfinite(logits[True]).all()
    torch.testing.assert_close(logits[True], logits[False], atol=1e-4, rtol=0)
    assert tokens == batched_tokens
    # The rows really differ: a contrast row that silently reused the original row's cache would not.
    method_side = prepared.sides[1]
    for role, row in method_side.roles.items():
        if role != "original":
            assert not torch.allclose(logits[True][1:, row], logits[True][1:, method_side.roles["original"]])


def test_identical_prompts_are_prefilled_once_and_finished_rows_leave(llava, image, monkeypatch):
    prepared = prepare_comparison(llava, image, QUESTION, "vcd", seed=0, attention_layers=None, alpha=3.0)
    # baseline original + noised, method original + noised: two distinct prompts (same seed, same noise step)
    assert len(prepared.rows) == 4
    probe = list(Engine(llava).run(prepared.rows, prepared.sides, max_new_tokens=6, ignore_eos=True))
    method_tokens = {e.tokens["method"].token_id for e in probe}
    # End the baseline side early with a token its method side never writes.
    stop_step, stop_token = next(
        (e.step, e.tokens["baseline"].token_id) for e in probe if e.tokens["baseline"].token_id not in method_tokens
    )
    assert stop_step < 4
    monkeypatch.setattr(type(llava), "eos_token_ids", property(lambda self: [stop_token]))
    batch_sizes = []
    hook = llava.model.register_forward_pre_hook(
        lambda module, args, kwargs: batch_sizes.append(kwargs["input_ids"].shape[0]), with_kwargs=True
    )
    try:
        events = list(Engine(llava).run(prepared.rows, prepared.sides, max_new_tokens=6))
    finally:
        hook.remove()
    finished_at = next(e.step for e in events if e.finished.get("baseline") == "eos")
    assert finished_at == stop_step
    assert all("baseline" not in e.tokens for e in events[finished_at + 1 :])
    # prefill: 2 distinct prompts; then 4 rows a step while the baseline runs, then only the method's 2 rows
    assert batch_sizes[0] == 2
    assert batch_sizes[1 : finished_at + 1] == [4] * finished_at
    assert batch_sizes[finished_at + 1 :] and all(size == 2 for size in batch_sizes[finished_at + 1 :])


def test_seeded_sampling_is_reproducible(llava, image):
    def run(seed):
        result = compare(llava, image, QUESTION, "vcd", do_sample=True, seed=seed, max_new_tokens=16, ignore_eos=True)
        return [t.token_id for t in result.baseline.tokens], [t.token_id for t in result.method_side.tokens]

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_sampling_warpers_apply_after_the_rule(llava, image):
    result = compare(llava, image, QUESTION, "vcd", do_sample=True, top_k=2, seed=1, max_new_tokens=8, ignore_eos=True)
    for token in result.method_side.tokens + result.baseline.tokens:
        assert token.plausible_set_size <= 2
        assert token.final.prob > 0


def test_should_stop_ends_the_run(llava, image):
    calls = []

    def should_stop():
        calls.append(1)
        return len(calls) > 3

    updates = list(stream_compare(llava, image, QUESTION, "vcd", max_new_tokens=20, should_stop=should_stop))
    final = updates[-1]
    assert final.done
    assert len(final.method_side.tokens) == 3
    assert final.method_side.stop_reason == "stopped" and final.baseline.stop_reason == "stopped"


def test_trace_is_complete_and_json_serialisable(model, image):
    result = compare(model, image, QUESTION, "vcd", max_new_tokens=6, ignore_eos=True)
    data = json.loads(result.to_json())
    assert data["model_id"] and data["method"] == "vcd" and data["decoding"]["seed"] == 0
    assert data["params"] == {"alpha": 1.0, "beta": 0.1, "noise_step": 500}
    for side in (result.baseline, result.method_side):
        assert len(side.tokens) == 6
        assert side.text == "".join(t.piece for t in side.tokens)
        for token in side.tokens:
            assert token.visual_dependence is not None and np.isfinite(token.visual_dependence)
            assert 1 <= len(token.final.top) <= 5
            assert token.final.top[0].prob >= token.final.top[-1].prob
            if model.family == "instructblip":  # its query tokens have no place in the picture: no grid
                assert token.image_attention["grid"] is None
            else:
                grid = np.array(token.image_attention["grid"])
                assert grid.ndim == 2 and abs(grid.sum() - 1) < 1e-4
            assert 0 < token.image_attention["share"] <= 1 + 1e-6
    # VCD's noised row is the visual-dependence distortion: no extra row, same numbers
    token = result.method_side.tokens[0]
    assert set(token.branches) == {"original", "noised"}
    expected = np.log(token.branches["original"].prob) - np.log(token.branches["noised"].prob)
    assert token.visual_dependence == pytest.approx(expected, abs=1e-4)
    # the baseline's first step sees exactly what the method's original branch sees
    baseline_top = result.baseline.tokens[0].branches["original"].top
    method_top = token.branches["original"].top
    assert [c.token_id for c in baseline_top] == [c.token_id for c in method_top]
    assert [c.prob for c in baseline_top] == pytest.approx([c.prob for c in method_top], abs=1e-5)
    assert all(t.contrast_shift == 0 for t in result.baseline.tokens)


def test_changed_marks_tokens_the_contrast_moved(llava, image):
    result = compare(llava, image, QUESTION, "icd", alpha=5.0, max_new_tokens=16, ignore_eos=True)
    for token in result.method_side.tokens:
        original_argmax = token.branches["original"].top[0].token_id
        assert token.changed == (token.token_id != original_argmax)
    baseline = result.baseline.tokens
    assert not any(t.changed for t in baseline)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"method": "nope"}, "unknown method"),
        ({"alpha": -1.0}, "alpha"),
        ({"beta": 0.0}, "beta"),
        ({"beta": float("nan")}, "beta"),
        ({"gamma": 1.0}, "no parameter"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"temperature": 0.0}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"question": "   "}, "empty"),
    ],
)
def test_bad_requests_raise_clear_errors(llava, image, kwargs, message):
    kwargs = dict(kwargs)
    question = kwargs.pop("question", QUESTION)
    method = kwargs.pop("method", "vcd")
    with pytest.raises(ValueError, match=message):
        compare(llava, image, question, method, max_new_tokens=kwargs.pop("max_new_tokens", 4), **kwargs)


def test_side_validation():
    with pytest.raises(ValueError, match="original"):
        Side("s", "baseline", {"noised": 0})
    with pytest.raises(ValueError, match="distorted"):
        Side("s", "baseline", {"original": 0}, distorted_role="noised")
    with pytest.raises(ValueError, match="temperature"):
        SamplingConfig(temperature=-1)


def test_answer_all_runs_every_method_in_one_batch_with_the_same_answers(llava, image):
    methods = ["vcd", ("ritual", {"alpha_pos": 2.0}), "m3id", "icd"]
    sides, infos = answer_all(llava, image, QUESTION, methods, max_new_tokens=10, ignore_eos=True)
    assert list(sides) == ["baseline", "vcd", "ritual", "m3id", "icd"]
    assert set(infos) == {"vcd", "ritual", "m3id", "icd"}
    for method, params in [("vcd", {}), ("ritual", {"alpha_pos": 2.0}), ("m3id", {}), ("icd", {})]:
        alone = compare(
            llava, image, QUESTION, method, max_new_tokens=10, ignore_eos=True, attention_layers=None,
            visual_dependence=False, **params,
        )
        assert [t.token_id for t in sides[method].tokens] == [t.token_id for t in alone.method_side.tokens]
        assert sides[method].text == alone.method_side.text
    assert [t.token_id for t in sides["baseline"].tokens] == [t.token_id for t in alone.baseline.tokens]
    with pytest.raises(ValueError, match="once"):
        answer_all(llava, image, QUESTION, ["vcd", "vcd"])


def test_a_bad_parameter_is_refused_before_any_model_work(llava, image):
    """answer_many checks every method's parameters once, before any request's pre-steps (CODE's description is a
    generate of its own): a bad one costs no forward."""
    forwards = []
    hook = llava.model.register_forward_pre_hook(lambda module, args: forwards.append(1))
    try:
        with pytest.raises(ValueError, match="alpha must be >= 0"):
            answer_many(llava, [(image, QUESTION)] * 2, ["code", ("vcd", {"alpha": -1.0})], max_new_tokens=2)
    finally:
        hook.remove()
    assert forwards == []


def test_a_question_longer_than_the_context_is_refused_up_front(llava, image):
    limit = llava.max_length
    assert limit == llava.model.config.text_config.max_position_embeddings
    long_question = "Is there a red circle? " * (limit // 4)
    with pytest.raises(ValueError, match="do not fit in the model's context"):
        compare(llava, image, long_question, "vcd", max_new_tokens=8)
    row = llava.build_row(QUESTION, image)
    # the message says what to lower, and to what
    with pytest.raises(ValueError, match=f"lower max new tokens to {limit - row.length} or less"):
        compare(llava, image, QUESTION, "vcd", max_new_tokens=limit - row.length + 1)


@pytest.mark.parametrize(("model_name", "method"), grid(METHODS))
def test_no_method_uses_a_deprecated_transformers_argument(tiny_model, image, model_name, method):
    """transformers 5.24 renamed ``past_key_values`` to ``cache`` and removes the old name in 5.40; the old name (or
    anything else deprecated) warns with FutureWarning, which is an error here."""
    model = tiny_model(model_name)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        if _refused_here(model, method, lambda: compare(model, image, QUESTION, method, max_new_tokens=3)):
            return
        result = compare(model, image, QUESTION, method, max_new_tokens=3, ignore_eos=True)
    assert len(result.method_side.tokens) == 3


def test_sampling_config_and_keywords_give_the_same_run(llava, image):
    config = SamplingConfig(do_sample=True, temperature=0.8, top_p=0.9, top_k=5, seed=11)
    by_config = compare(llava, image, QUESTION, "vcd", max_new_tokens=6, sampling=config)
    by_keywords = compare(llava, image, QUESTION, "vcd", max_new_tokens=6, **config.to_dict())
    assert by_config.to_dict() == by_keywords.to_dict()
    assert by_config.decoding["top_k"] == 5 and by_config.decoding["do_sample"] is True
    with pytest.raises(ValueError, match="not both"):
        compare(llava, image, QUESTION, "vcd", max_new_tokens=2, sampling=config, seed=3)
    with pytest.raises(ValueError, match="SamplingConfig"):
        compare(llava, image, QUESTION, "vcd", max_new_tokens=2, sampling={"do_sample": True})


@pytest.mark.parametrize("batched", [True, False])
def test_early_exit_logits_are_the_head_on_each_layers_hidden_state(llava, image, batched):
    """DoLa's premature layers: lm_head(hidden_states[j][:, -1]) with no final norm, for the side's original row only,
    at every step; hidden_states[N] (post-norm) through the head is the model's own logits."""
    row = llava.build_row(QUESTION, image)
    layers = (0, 1, 2)
    seen = []

    def record(L, t):
        seen.append({j: L[f"layer {j}"].clone() for j in layers} | {"original": L["original"].clone()})
        return Combination(L["original"].float())

    side = Side("dola", "dola", {"original": 0}, combine=record, layers=layers)
    other = Side("baseline", "baseline", {"original": 1})
    events = list(Engine(llava).run([row, row], [side, other], max_new_tokens=3, ignore_eos=True, batched=batched))
    tokens = [e.tokens["dola"].token_id for e in events]
    ids = torch.cat([row.input_ids, torch.tensor([tokens[:2]])], dim=1)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), **row.vision_kwargs}
    with torch.inference_mode():
        out = llava.model(**inputs, output_hidden_states=True)
        head = llava.model.get_output_embeddings()
        for step, got in enumerate(seen):
            position = row.length - 1 + step
            for j in layers:
                expected = head(out.hidden_states[j][:, position]).float()
                torch.testing.assert_close(got[j], expected, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(got[2], got["original"], atol=1e-4, rtol=1e-4)  # N = 2 layers: the final one


def test_a_control_runs_beside_baseline_and_method_in_the_same_batch(llava, image):
    config = SamplingConfig(do_sample=True, seed=5)
    result = compare(llava, image, QUESTION, "vcd", max_new_tokens=6, ignore_eos=True, sampling=config,
                     control="apc_only", control_params={"beta": 0.1})
    alone = compare(llava, image, QUESTION, "apc_only", max_new_tokens=6, ignore_eos=True, sampling=config, beta=0.1)
    assert [t.token_id for t in result.control_side.tokens] == [t.token_id for t in alone.method_side.tokens]
    assert [t.token_id for t in result.baseline.tokens] == [t.token_id for t in alone.baseline.tokens]
    exported = result.to_dict()
    assert exported["control"] == "apc_only" and exported["control_params"] == {"beta": 0.1}
    assert exported["control_side"]["method"] == "apc_only" and len(exported["control_side"]["tokens"]) == 6
    assert compare(llava, image, QUESTION, "vcd", max_new_tokens=2).to_dict()["control_side"] is None
    with pytest.raises(ValueError, match="unknown control 'vcd'"):
        compare(llava, image, QUESTION, "ritual", max_new_tokens=2, control="vcd")
