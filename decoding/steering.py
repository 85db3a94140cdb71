"""Edits of the language model's decoder-layer MLP outputs for chosen rows of a batch (VISTA's visual steering, VTI's
textual steering), and the capture of each decoder layer's output at the last prompt position (VISTA's pre-pass).

How a row's MLP output is edited, with transformers' extension points only (hooks; nothing patched):
an MLP module receives no keyword arguments, but every decoder layer receives the forward's ``lab_control``
(``decoding.attention.LabControl``, batch index -> that row's edit), which transformers hands down with the other
keyword arguments. A forward pre-hook on each decoder layer reads it and puts that layer's plan (batch index -> the
``MlpEdit`` acting on this layer) in a context variable (per thread: concurrent runs do not see each other's plans);
a forward hook on the layer's ``mlp`` reads the plan and edits those rows of the MLP's output, at every position of
the forward: the prefill and each decoded token. Rows of the batch without an edit are left exactly as they are.

The hooks are installed by ``decoding.attention.lab_attention_for`` (the runs whose sides carry edits) through
``mlp_edit_hooks``; counted per model, so that two runs of one model at once install them once.

Reuse: an ``MlpEdit`` is "for the row it is given to, in decoder layer ``ℓ``'s MLP output, apply ``edit(ℓ, x)``".
``MlpSteering`` is the norm-preserving steering of ``decoding.rules.steer`` with one direction per layer: VISTA's
(``cosine_boost``, strength λ) and VTI's (no boost, strength 0.1·λ).
"""

from __future__ import annotations

import contextlib
import functools
import threading
import weakref
from contextvars import ContextVar
from dataclasses import dataclass

import torch

from models.adapters.base import FamilyAdapter, RowInputs

from . import rules

# The plan of the decoder layer now running: batch index -> its MlpEdit acting on this layer (None: no edit).
_PLAN: ContextVar[dict[int, MlpEdit] | None] = ContextVar("mlp_edit_plan", default=None)


class MlpEdit:
    """An edit of one row's decoder-layer MLP outputs: ``edit(layer, x)`` returns ``x`` (positions, hidden) edited,
    in ``x``'s dtype, for the layers where ``edits_layer(layer)``. Given to a row as its ``Side.attention_edits``
    entry (``first_step``: the first forward edited, 0 = the prefill on); it edits no attention
    (``acts_on`` False)."""

    first_step: int = 0

    def acts_on(self, layer: int) -> bool:
        return False  # an edit of the MLP output, not of attention

    def edits_layer(self, layer: int) -> bool:
        raise NotImplementedError

    def edit(self, layer: int, output: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


@dataclass(frozen=True, eq=False)
class MlpSteering(MlpEdit):
    """Norm-preserving steering (``decoding.rules.steer``) of decoder layer ℓ's MLP output along ``directions[ℓ]``.

    directions:   (layers, hidden) one direction per decoder layer (VISTA's visual steering vector: each layer's
                  output with the image minus without it, at the last prompt position).
    strength:     λ of ``rules.steer`` (VTI passes 0.1·λ).
    cosine_boost: VISTA's ``λ_sim = 1 + max(0, cos(x, −v))``; False: VTI's 1.
    layers:       the decoder layers steered; None: every layer that has a direction.
    """

    directions: torch.Tensor
    strength: float
    cosine_boost: bool = True
    layers: tuple[int, ...] | None = None
    first_step: int = 0

    def edits_layer(self, layer: int) -> bool:
        in_range = 0 <= layer < self.directions.shape[0]
        return in_range and (self.layers is None or layer in self.layers)

    def edit(self, layer: int, output: torch.Tensor) -> torch.Tensor:
        steered = rules.steer.__wrapped__(output, self.directions[layer], strength=self.strength,
                                          cosine_boost=self.cosine_boost)
        return steered.to(output.dtype)


def _read_plan(index: int, module, args, kwargs):
    """Decoder layer ``index``'s forward pre-hook: this forward's MLP edits acting on the layer, as the plan."""
    control = kwargs.get("lab_control")
    plan = None
    if control is not None:
        plan = {b: edit for b, (_, edit) in control.edits.items()
                if isinstance(edit, MlpEdit) and edit.edits_layer(index)} or None
    _PLAN.set(plan)
    return None


def _clear_plan(module, args, output):
    _PLAN.set(None)
    return None


def _edit_output(index: int, module, args, output):
    """Decoder layer ``index``'s ``mlp`` forward hook: the planned rows of its output (batch, positions, hidden)
    edited, the others untouched."""
    plan = _PLAN.get()
    if not plan:
        return None
    output = output.clone()
    for b, edit in plan.items():
        output[b] = edit.edit(index, output[b])
    return output


def decoder_layers(model) -> torch.nn.ModuleList | None:
    """The language model's decoder layers (``model.get_decoder().layers``), or None where it names none."""
    layers = getattr(model.get_decoder(), "layers", None)
    return layers if isinstance(layers, torch.nn.ModuleList) else None


_LOCK = threading.Lock()
_INSTALLED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> [users, hook handles]


@contextlib.contextmanager
def mlp_edit_hooks(model):
    """The hooks that carry out the ``MlpEdit``s of a forward's ``lab_control``, on ``model``'s decoder layers and
    their ``mlp``s, for the duration of the block (installed once however many runs of the model are in one)."""
    with _LOCK:
        entry = _INSTALLED.get(model)
        if entry is None:
            entry = _INSTALLED[model] = [0, _install(model)]
        entry[0] += 1
    try:
        yield
    finally:
        with _LOCK:
            entry[0] -= 1
            if not entry[0]:
                for handle in entry[1]:
                    handle.remove()
                del _INSTALLED[model]


def _install(model) -> list:
    handles = []
    for index, layer in enumerate(decoder_layers(model) or ()):
        mlp = getattr(layer, "mlp", None)
        if not isinstance(mlp, torch.nn.Module):
            continue
        handles.append(layer.register_forward_pre_hook(functools.partial(_read_plan, index), with_kwargs=True))
        handles.append(layer.register_forward_hook(_clear_plan))
        handles.append(mlp.register_forward_hook(functools.partial(_edit_output, index)))
    return handles


def check_mlp_edits(adapter: FamilyAdapter, method: str) -> int:
    """The number of decoder layers whose MLP outputs can be edited; a model whose decoder layers name no ``mlp`` is
    refused (ValueError naming the family and ``method``)."""
    layers = decoder_layers(adapter.model)
    if layers is None or not all(isinstance(getattr(layer, "mlp", None), torch.nn.Module) for layer in layers):
        raise ValueError(f"{method} cannot run on the {adapter.family} family: its language model's decoder layers "
                         "have no MLP module ('mlp') to steer")
    return len(layers)


def last_position_layer_outputs(adapter: FamilyAdapter, row: RowInputs) -> torch.Tensor:
    """``(layers, hidden)`` float32: each decoder layer's output at the row's last prompt position, from one prefill
    of the row alone with no edit (forward hooks on the decoder layers: their outputs before the final norm, where
    transformers 5's ``hidden_states[-1]`` is after it). VISTA's pre-pass (``steering_vector.py`` L91–110)."""
    layers = decoder_layers(adapter.model)
    outputs: dict[int, torch.Tensor] = {}

    def keep(index, module, args, output):
        hidden = output[0] if isinstance(output, tuple) else output
        outputs[index] = hidden[0, -1].float()

    handles = [layer.register_forward_hook(functools.partial(keep, i)) for i, layer in enumerate(layers)]
    inputs = {"input_ids": row.input_ids, "attention_mask": torch.ones_like(row.input_ids), **row.token_kwargs}
    inputs = adapter.to_model({**inputs, "position_ids": row.position_ids, **row.vision_kwargs})
    try:
        with torch.inference_mode():
            adapter.forward(**inputs)
    finally:
        for handle in handles:
            handle.remove()
    return torch.stack([outputs[i] for i in range(len(layers))])
