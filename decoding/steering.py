"""Edits of the language model's decoder-layer MLP outputs for chosen rows of a batch (VISTA's visual steering, VTI's
textual steering, MemVR's visual retracing), and the capture of each decoder layer's output at the last prompt
position (VISTA's pre-pass).

How a row's MLP output is edited, with transformers' extension points only (hooks; nothing patched):
an MLP module receives no keyword arguments, but every decoder layer receives the forward's ``lab_control``
(``decoding.attention.LabControl``, batch index -> that row's edit), which transformers hands down with the other
keyword arguments. A forward pre-hook on each decoder layer reads it and puts that layer's plan (batch index -> the
``MlpEdit`` acting on this layer) in a context variable (per thread: concurrent runs do not see each other's plans);
a forward hook on the layer's ``mlp`` reads the plan and edits those rows of the MLP's output, at every position of
the row in the forward (its own, not the batch's left padding: ``LabControl.lengths``): the prefill and each decoded
token. Rows of the batch without an edit are left exactly as they are.

MemVR's edit is decided during the forward: a forward hook on each decoder layer reads the logit lens of the row's
last position and, the first time the uncertainty passes the threshold, arms the next layer
(``LabControl.findings``, which the engine hands to the rule as per-step scalars); a forward pre-hook on the language
model keeps the row's visual tokens (its input embeddings at the image positions) from its prefill.

The hooks are installed by ``decoding.attention.lab_attention_for`` (``install_mlp_edit_hooks``), once per model
however many of its runs are in at once.

Reuse: an ``MlpEdit`` is "for the row it is given to, in decoder layer ``ℓ``'s MLP output, apply ``edit(ℓ, x)``"
(``x`` the row's own positions; the MLP's input beside it, for MemVR's memory read).
``MlpSteering`` is the norm-preserving steering of ``decoding.rules.steer`` with one direction per layer: VISTA's
(``cosine_boost``, strength λ) and VTI's (no boost, strength 0.1·λ).
"""

from __future__ import annotations

import functools
import threading
from contextvars import ContextVar
from dataclasses import dataclass, field

import torch

from models.adapters.base import FamilyAdapter, RowInputs

from . import rules

# The plan of the decoder layer now running: batch index -> (its MlpEdit acting on this layer, the row's length
# after this forward, ``LabControl.lengths``); None: no edit.
_PLAN: ContextVar[dict[int, tuple[MlpEdit, int | None]] | None] = ContextVar("mlp_edit_plan", default=None)


class MlpEdit:
    """An edit of one row's decoder-layer MLP outputs: ``edit(layer, x, mlp_input)`` returns ``x`` (the row's own
    positions, hidden) edited, in ``x``'s dtype, for the layers where ``edits_layer(layer, found)`` (``found``: what
    the hooks found for the row so far in this forward, ``LabControl.findings``). Given to a row as its
    ``Side.attention_edits`` entry (``first_step``: the first forward edited, 0 = the prefill on); it edits no
    attention (``acts_on`` False)."""

    first_step: int = 0

    def acts_on(self, layer: int) -> bool:
        return False  # an edit of the MLP output, not of attention

    def edits_layer(self, layer: int, found: dict | None = None) -> bool:
        raise NotImplementedError

    def edit(self, layer: int, output: torch.Tensor, mlp_input: torch.Tensor | None = None) -> torch.Tensor:
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

    def edits_layer(self, layer: int, found: dict | None = None) -> bool:
        in_range = 0 <= layer < self.directions.shape[0]
        return in_range and (self.layers is None or layer in self.layers)

    def edit(self, layer: int, output: torch.Tensor, mlp_input: torch.Tensor | None = None) -> torch.Tensor:
        steered = rules.steer.__wrapped__(output, self.directions[layer], strength=self.strength,
                                          cosine_boost=self.cosine_boost)
        return steered.to(output.dtype)


@dataclass(frozen=True, eq=False)
class VisualRetracing(MlpEdit):
    """MemVR's edit of a row (Zou et al., ICML 2025; ``1zhou-Wang/MemVR@de2e3cf memvr.py`` L156–257): after each
    decoder layer ℓ of ``trigger_layers``, the logit lens of the row's last position gives its uncertainty
    (``rules.memvr_entropy``); the first ℓ whose uncertainty is above ``threshold`` arms layer ℓ + 1, whose FFN then
    reads the row's visual tokens as a key–value memory (``rules.memvr_retrace`` at ``ratio``), once per forward, at
    every position of it (the prefill's: the last prompt position decides).

    memory: ``"visual tokens"``, (image tokens, hidden): the row's input embeddings at its image positions (the image
            features after the projector), kept from its prefill by the language model's pre-hook.
    """

    ratio: float
    threshold: float
    trigger_layers: tuple[int, ...]
    memory: dict = field(default_factory=dict)
    first_step: int = 0

    def edits_layer(self, layer: int, found: dict | None = None) -> bool:
        armed = bool(found) and found.get("retrace layer") == layer
        return armed and "visual tokens" in self.memory

    def edit(self, layer: int, output: torch.Tensor, mlp_input: torch.Tensor | None = None) -> torch.Tensor:
        retraced = rules.memvr_retrace.__wrapped__(mlp_input, output, self.memory["visual tokens"], ratio=self.ratio)
        return retraced.to(output.dtype)


# What MemVR's hooks report for a row each forward before any layer is checked: no retrace, no uncertainty seen.
NO_RETRACE = {"retrace layer": -1.0, "layer uncertainty": 0.0}


def _read_plan(index: int, module, args, kwargs=None):
    """Decoder layer ``index``'s forward pre-hook: this forward's MLP edits acting on the layer, with each row's
    length (its own positions), as the plan. (Every hook here may be called without ``kwargs``: torch marks a hook as
    taking them only after adding it, and another thread's forward of the model, one without edits, can fall in
    between.)"""
    control = (kwargs or {}).get("lab_control")
    plan = None
    if control is not None:
        plan = {b: (edit, control.lengths.get(b)) for b, (_, edit) in control.edits.items()
                if isinstance(edit, MlpEdit) and edit.edits_layer(index, control.findings.get(b))} or None
    _PLAN.set(plan)
    return None


def _after_layer(index: int, lens, module, args, kwargs, output=None):
    """Decoder layer ``index``'s forward hook: the plan cleared; for MemVR's rows not yet armed in this forward, the
    uncertainty of the layer's logit lens ``lens(h)`` at the row's last position, arming layer ``index + 1`` when it
    passes the row's threshold."""
    _PLAN.set(None)
    control = kwargs.get("lab_control") if output is not None else None  # output None: called without kwargs
    if control is None:
        return None
    hidden = output[0] if isinstance(output, tuple) else output
    for b, (_, edit) in control.edits.items():
        if not isinstance(edit, VisualRetracing):
            continue
        found = control.findings.setdefault(b, dict(NO_RETRACE))
        if found["retrace layer"] >= 0 or index not in edit.trigger_layers:
            continue
        uncertainty = float(rules.memvr_entropy(lens(hidden[b, -1:]))[0])
        found["layer uncertainty"] = max(found["layer uncertainty"], uncertainty)
        if uncertainty > edit.threshold:
            found["retrace layer"] = float(index + 1)
    return None


def _keep_visual_tokens(module, args, kwargs=None):
    """The language model's forward pre-hook: in a forward whose input holds a MemVR row's image positions (its
    prefill), that row's input embeddings there, as its memory."""
    control, embeds = (kwargs or {}).get("lab_control"), (kwargs or {}).get("inputs_embeds")
    if control is None or embeds is None:
        return None
    for b, (positions, edit) in control.edits.items():
        if isinstance(edit, VisualRetracing) and len(positions) and int(positions.max()) < embeds.shape[1]:
            edit.memory["visual tokens"] = embeds[b, positions].detach().clone()
    return None


def _edit_output(index: int, module, args, output):
    """Decoder layer ``index``'s ``mlp`` forward hook: the planned rows of its output (batch, positions, hidden)
    edited at their own positions (the last ``length`` of the forward's, behind the left padding), the others
    untouched."""
    plan = _PLAN.get()
    if not plan:
        return None
    output = output.clone()
    width = output.shape[1]
    for b, (edit, length) in plan.items():
        own = slice(width - min(width, length if length is not None else width), width)
        output[b, own] = edit.edit(index, output[b, own], args[0][b, own] if args else None)
    return output


def decoder_layers(model) -> torch.nn.ModuleList | None:
    """The language model's decoder layers (``model.get_decoder().layers``), or None where it names none."""
    layers = getattr(model.get_decoder(), "layers", None)
    return layers if isinstance(layers, torch.nn.ModuleList) else None


def install_mlp_edit_hooks(model) -> list:
    """The hooks that carry out the ``MlpEdit``s of a forward's ``lab_control``, on ``model``'s decoder layers and
    their ``mlp``s; their handles, to remove them."""
    decoder = model.get_decoder()
    handles = [decoder.register_forward_pre_hook(_keep_visual_tokens, with_kwargs=True)]
    lens = functools.partial(_logit_lens, model)
    for index, layer in enumerate(decoder_layers(model) or ()):
        mlp = getattr(layer, "mlp", None)
        if not isinstance(mlp, torch.nn.Module):
            continue
        handles.append(layer.register_forward_pre_hook(functools.partial(_read_plan, index), with_kwargs=True))
        handles.append(layer.register_forward_hook(functools.partial(_after_layer, index, lens), with_kwargs=True))
        handles.append(mlp.register_forward_hook(functools.partial(_edit_output, index)))
    return handles


def _logit_lens(model, hidden: torch.Tensor) -> torch.Tensor:
    """``lm_head(norm(h))`` in float32: a layer's logit lens through the final norm (MemVR's, DeCo's)."""
    return model.get_output_embeddings()(model.get_decoder().norm(hidden)).float()


def check_mlp_edits(adapter: FamilyAdapter, method: str, lens: bool = False) -> int:
    """The number of decoder layers whose MLP outputs can be edited; a model whose decoder layers name no ``mlp`` is
    refused (ValueError naming the family and ``method``), and with ``lens`` one whose decoder names no final
    ``norm`` (the logit lens goes through it)."""
    layers = decoder_layers(adapter.model)
    if layers is None or not all(isinstance(getattr(layer, "mlp", None), torch.nn.Module) for layer in layers):
        raise ValueError(f"{method} cannot run on the {adapter.family} family: its language model's decoder layers "
                         "have no MLP module ('mlp') to edit")
    if lens and not isinstance(getattr(adapter.model.get_decoder(), "norm", None), torch.nn.Module):
        raise ValueError(f"{method} cannot run on the {adapter.family} family: its language model names no final "
                         "norm ('norm') for the logit lens")
    return len(layers)


def last_position_layer_outputs(adapter: FamilyAdapter, row: RowInputs) -> torch.Tensor:
    """``(layers, hidden)`` float32: each decoder layer's output at the row's last prompt position, from one prefill
    of the row alone with no edit (forward hooks on the decoder layers: their outputs before the final norm, where
    transformers 5's ``hidden_states[-1]`` is after it). VISTA's pre-pass (``steering_vector.py`` L91–110)."""
    layers = decoder_layers(adapter.model)
    outputs: dict[int, torch.Tensor] = {}
    caller = threading.get_ident()

    def keep(index, module, args, output):
        if threading.get_ident() != caller:  # another run's forward of this model, in another thread, meanwhile
            return
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
