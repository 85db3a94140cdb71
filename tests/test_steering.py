"""The per-row MLP-output edit (``decoding.steering``): the steering rule against the spec's test vectors, and, on a
tiny model through the engine, only the edited row's MLP outputs change, at the prefill and at every decoded token,
exactly as a plain hook steering that row alone would; and the pre-pass's per-layer outputs are the decoder layers'
own (before the final norm)."""

from __future__ import annotations

import functools
import threading

import pytest
import torch

from decoding import rules
from decoding.engine import Combination, Engine, Side
from decoding.steering import (
    _PLAN,
    MlpSteering,
    _after_layer,
    _keep_visual_tokens,
    _read_plan,
    check_mlp_edits,
    last_position_layer_outputs,
)

QUESTION = "What color is the square?"
LONGER = "Describe every shape in the picture, its color and where it is."


def test_the_steering_rule_gives_the_spec_s_vectors():
    x, v = torch.tensor([[3.0, 4.0]]), torch.tensor([-1.0, 0.0])
    vista = rules.steer(x, v, strength=0.1)  # lambda_sim = 1 + cos(x, -v) = 1.6
    torch.testing.assert_close(vista, torch.tensor([[2.409594, 4.381080]]), atol=1e-5, rtol=0)
    vti = rules.steer(x, v, strength=0.1 * 0.9, cosine_boost=False)
    torch.testing.assert_close(vti, torch.tensor([[2.687787, 4.216136]]), atol=1e-5, rtol=0)
    for out in (vista, vti):
        torch.testing.assert_close(out.norm(dim=-1), torch.tensor([5.0]))


def test_the_boost_is_one_where_the_output_already_points_along_the_direction():
    x, v = torch.tensor([[3.0, 4.0]]), torch.tensor([1.0, 0.0])  # cos(x, -v) < 0: lambda_sim = 1
    torch.testing.assert_close(rules.steer(x, v, strength=0.2), rules.steer(x, v, strength=0.2, cosine_boost=False))


def test_the_rule_refuses_a_direction_of_the_wrong_size_and_a_bad_strength():
    with pytest.raises(ValueError, match="direction must be a tensor of shape"):
        rules.steer(torch.ones(1, 3), torch.ones(2))
    with pytest.raises(ValueError, match="strength must be finite"):
        rules.steer(torch.ones(1, 3), torch.ones(3), strength=float("inf"))


def _logits_of(seen: list):
    def combine(L, t):
        seen.append(L["original"].clone())
        return Combination(L["original"])
    return combine


def _steer_every_row(directions, strength, index, module, args, output):
    """The reference: a plain hook steering every row of the batch (one row, alone) at every position."""
    return rules.steer(output, directions[index], strength=strength).to(output.dtype)


def _run(adapter, rows, edits: dict, steps: int, batched: bool = True) -> dict[str, list]:
    seen = {}
    sides = []
    for i in range(len(rows)):
        seen[f"side {i}"] = []
        attention_edits = {"original": edits[i]} if i in edits else {}
        sides.append(Side(f"side {i}", "baseline" if i not in edits else "steered", {"original": i},
                          combine=_logits_of(seen[f"side {i}"]), attention_edits=attention_edits))
    list(Engine(adapter).run(rows, sides, max_new_tokens=steps, ignore_eos=True, batched=batched))
    return seen


@pytest.mark.parametrize("family", ["llava", "qwen2_vl"])
def test_only_the_edited_row_is_steered_at_prefill_and_every_step(tiny_model, image, family):
    adapter = tiny_model(family)
    n_layers = check_mlp_edits(adapter, "test")
    hidden = adapter.model.config.get_text_config().hidden_size
    directions = torch.randn(n_layers, hidden, generator=torch.Generator().manual_seed(0))
    edit = MlpSteering(directions.to(adapter.device), strength=0.5)
    # The same prompt twice: the edited row must not share the baseline row's prefill; and a longer prompt first,
    # so that the edited row is left-padded.
    rows = [adapter.build_row(LONGER, image), adapter.build_row(QUESTION, image), adapter.build_row(QUESTION, image)]
    steps = 4
    batched = _run(adapter, rows, {2: edit}, steps)

    plain = _run(adapter, rows[1:2], {}, steps)["side 0"]
    layers = adapter.model.get_decoder().layers
    handles = [layer.mlp.register_forward_hook(functools.partial(_steer_every_row, directions, 0.5, i))
               for i, layer in enumerate(layers)]
    try:
        steered = _run(adapter, rows[1:2], {}, steps)["side 0"]
    finally:
        for handle in handles:
            handle.remove()
    assert len(batched["side 2"]) == steps
    for t in range(steps):
        torch.testing.assert_close(batched["side 1"][t], plain[t], atol=1e-4, rtol=0)  # the unedited twin
        torch.testing.assert_close(batched["side 2"][t], steered[t], atol=1e-4, rtol=0)
    assert not torch.allclose(steered[0], plain[0], atol=1e-2)  # the edit acts at the prefill
    # Decoded steps are steered too: each step's logits differ from the unsteered row fed the same tokens.
    assert all(not torch.allclose(a, b, atol=1e-3) for a, b in zip(steered[1:], plain[1:], strict=True))


def test_an_edit_limited_to_layers_leaves_the_others(tiny_model, image):
    adapter = tiny_model("llava")
    n_layers = check_mlp_edits(adapter, "test")
    hidden = adapter.model.config.get_text_config().hidden_size
    directions = torch.randn(n_layers, hidden, generator=torch.Generator().manual_seed(1))
    rows = [adapter.build_row(QUESTION, image)]
    none = MlpSteering(directions, strength=0.5, layers=())
    plain, untouched = _run(adapter, rows, {}, 1)["side 0"], _run(adapter, rows, {0: none}, 1)["side 0"]
    torch.testing.assert_close(untouched[0], plain[0], atol=1e-5, rtol=0)
    assert MlpSteering(directions, 0.5, layers=(1,)).edits_layer(1)
    assert not MlpSteering(directions, 0.5, layers=(1,)).edits_layer(0)
    assert not MlpSteering(directions, 0.5).edits_layer(n_layers)


def test_the_hooks_are_gone_after_the_run(tiny_model, image):
    adapter = tiny_model("llava")
    layers = adapter.model.get_decoder().layers
    before = [(len(layer._forward_pre_hooks), len(layer.mlp._forward_hooks)) for layer in layers]
    rows = [adapter.build_row(QUESTION, image)]
    directions = torch.ones(len(layers), adapter.model.config.get_text_config().hidden_size)
    _run(adapter, rows, {0: MlpSteering(directions, 0.1)}, 1)
    assert [(len(layer._forward_pre_hooks), len(layer.mlp._forward_hooks)) for layer in layers] == before


class _FailingSteering(MlpSteering):
    """Steering that raises inside the forward from ``fail_at`` on (the ``fail_at``-th edited MLP output)."""

    def edit(self, layer, output, mlp_input=None):
        self.calls.append(layer)
        if len(self.calls) >= self.fail_at:
            raise RuntimeError("edit failed")
        return super().edit(layer, output, mlp_input)


def _hook_counts(model) -> list:
    decoder = model.get_decoder()
    return [model.config._attn_implementation, len(decoder._forward_pre_hooks), len(decoder._forward_hooks)] + [
        (len(layer._forward_pre_hooks), len(layer._forward_hooks), len(layer.mlp._forward_hooks))
        for layer in decoder.layers]


def test_no_hook_stays_when_a_run_raises_midway_or_is_closed_early(tiny_model, image):
    adapter = tiny_model("llava")
    before = _hook_counts(adapter.model)
    rows = [adapter.build_row(QUESTION, image)]
    plain = _run(adapter, rows, {}, 1)["side 0"]
    directions = torch.ones(len(adapter.model.get_decoder().layers), adapter.model.config.get_text_config().hidden_size)
    layers = len(directions)
    failing = _FailingSteering(directions, 0.1)
    object.__setattr__(failing, "calls", [])
    object.__setattr__(failing, "fail_at", layers + 2)  # inside the second forward, past its first layer
    side = Side("steered", "steered", {"original": 0}, combine=_logits_of([]), attention_edits={"original": failing})
    with pytest.raises(RuntimeError, match="edit failed"):
        list(Engine(adapter).run(rows, [side], max_new_tokens=3, ignore_eos=True))
    assert len(failing.calls) == layers + 2 and _hook_counts(adapter.model) == before
    side = Side("steered", "steered", {"original": 0}, combine=_logits_of([]),
                attention_edits={"original": MlpSteering(directions, 0.1)})
    run = Engine(adapter).run(rows, [side], max_new_tokens=5, ignore_eos=True)
    next(run)
    assert _hook_counts(adapter.model) != before  # installed while the run is open
    run.close()
    assert _hook_counts(adapter.model) == before
    torch.testing.assert_close(_run(adapter, rows, {}, 1)["side 0"][0], plain[0])  # the next run is not steered


def test_the_pre_pass_outputs_are_the_layers_own_before_the_final_norm(tiny_model, image):
    adapter = tiny_model("llava")
    row = adapter.build_row(QUESTION, image)
    outputs = last_position_layer_outputs(adapter, row)
    inputs = {"input_ids": row.input_ids, "attention_mask": torch.ones_like(row.input_ids), **row.vision_kwargs}
    with torch.inference_mode():
        states = adapter.model(**inputs, output_hidden_states=True).hidden_states
    n = len(adapter.model.get_decoder().layers)
    assert outputs.shape == (n, adapter.model.config.get_text_config().hidden_size)
    # hidden_states[1..N-1] are the layers' outputs; transformers 5's last entry is after the final norm.
    torch.testing.assert_close(outputs[:-1], torch.stack([s[0, -1].float() for s in states[1:n]]))
    norm = adapter.model.get_decoder().norm
    with torch.inference_mode():
        torch.testing.assert_close(norm(outputs[-1:]).float(), states[n][0, -1:].float(), atol=1e-5, rtol=1e-4)


def test_the_pre_pass_keeps_its_own_outputs_while_another_thread_runs_the_model(tiny_model, image):
    """Two runs of one model at once (a library caller's threads): another thread's forward, run while the pre-pass's
    hooks are on the decoder layers, does not write its outputs into the pre-pass's."""
    adapter = tiny_model("llava")
    row, other = adapter.build_row(QUESTION, image), adapter.build_row(LONGER, None)
    alone = last_position_layer_outputs(adapter, row)
    started = []

    def other_forward():
        with torch.inference_mode():
            adapter.model(input_ids=other.input_ids, attention_mask=torch.ones_like(other.input_ids))

    def interleave(module, args, output):  # after the pre-pass forward's layers ran: another thread's whole forward
        if not started:
            started.append(True)
            thread = threading.Thread(target=other_forward)
            thread.start()
            thread.join()

    handle = adapter.model.get_decoder().register_forward_hook(interleave)
    try:
        during = last_position_layer_outputs(adapter, row)
    finally:
        handle.remove()
    assert started
    torch.testing.assert_close(during, alone)


def test_the_hooks_take_a_call_without_keyword_arguments():
    """torch adds a hook before it marks it as taking keyword arguments (``register_forward_pre_hook``): a forward of
    the model in another thread, a run without edits, can call it in between without them, and must go on unedited
    (a TypeError in that run before)."""
    _PLAN.set({0: (None, None)})  # a plan left by a forward that raised in this thread
    assert _read_plan(0, None, ()) is None and _PLAN.get() is None
    _PLAN.set({0: (None, None)})
    assert _after_layer(0, None, None, (), torch.zeros(1, 2, 4)) is None and _PLAN.get() is None
    assert _keep_visual_tokens(None, ()) is None


class _Decoder(torch.nn.Module):
    def __init__(self, layers, norm=True):
        super().__init__()
        self.layers = torch.nn.ModuleList(layers)
        self.norm = torch.nn.LayerNorm(4) if norm else None


class _Model(torch.nn.Module):
    def __init__(self, decoder):
        super().__init__()
        self.decoder = decoder

    def get_decoder(self):
        return self.decoder


class _Adapter:
    family = "toy"

    def __init__(self, decoder):
        self.model = _Model(decoder)


def _layer(mlp: bool) -> torch.nn.Module:
    layer = torch.nn.Module()
    if mlp:
        layer.mlp = torch.nn.Linear(4, 4)
    return layer


def test_a_model_without_decoder_mlps_or_a_final_norm_is_refused_by_name():
    assert check_mlp_edits(_Adapter(_Decoder([_layer(True), _layer(True)])), "VISTA", lens=True) == 2
    with pytest.raises(ValueError, match="VISTA cannot run on the toy family: .* no MLP module"):
        check_mlp_edits(_Adapter(_Decoder([_layer(True), _layer(False)])), "VISTA")
    with pytest.raises(ValueError, match="MemVR cannot run on the toy family: .* no final norm"):
        check_mlp_edits(_Adapter(_Decoder([_layer(True)], norm=False)), "MemVR", lens=True)
