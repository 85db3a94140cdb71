"""The project's attention function: transformers' sdpa, except where a method edits a row's attention.

Registered with transformers' ``AttentionInterface`` **and** ``AttentionMaskInterface`` under one name (without the
mask function the model silently builds no causal or padding mask for an unknown name: ``masking_utils``
``_preprocess_mask_arguments``). The engine switches a model to it for the runs that need it, and passes a per-forward
``LabControl`` as the ``lab_control`` keyword, which transformers hands down to every attention call. Nothing of
transformers is copied or patched.

Attention edits: PAI's image amplification (Liu, Zheng, Chen, ECCV 2024; ``LALBJ/PAI@9bbd8bd attention.py`` L90–94): in
decoder layers ``>= first_layer``, the last query row's pre-softmax scores on the row's image keys are raised by
``alpha * |score|`` (``decoding.rules.pai_amplify``); SID's self-introspection (``SelfIntrospection``); DeCoRe's
and MaskCD's masked heads (``HeadMask``: uniform attention, or zeroed weights); and ONLY's
side computation (``OneLayerEnhancement``: one layer's edited attention output, and the last layer's input and the
language model's output from hooks, which leave the row's own forward as it is). Layers
without an edit run sdpa untouched (a layer with one runs eager for its whole batch); with ``output_attentions``
every layer returns its weights, as eager attention does (only the last query's where the forward's control asks,
``LabControl.last_query_weights``: a prefill's recording). Two edits of a row's input embeddings, applied by a
pre-hook on the language model in the prefill: AvisC's zeroed image embeddings (``BlindTokens``) and DCD's replaced
ones (``ReplacedImageEmbeddings``). Distillation CD's amateur row: seeded dropout on its attention probabilities in
every decoder layer (``AttentionDropout``).
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, eager_mask

from . import rules
from .steering import MlpEdit, install_mlp_edit_hooks

NAME = "contrastive_lab"


@dataclass(frozen=True)
class ImageAmplification:
    """PAI's attention edit for a row.

    alpha:       the amplification (0.2 in PAI's scripts).
    first_layer: the first decoder layer edited (2; PAI edits [2, 32) of LLaVA-1.5's 32, i.e. from 2 to the last).
    first_step:  the first forward edited: 0 = the prefill (the first answer token) on; 1 = from the second token,
                 as PAI's release does when its CFG term is on (``attention.py`` L90 gates the edit on ``not use_cfg``,
                 and ``CFG.py`` L48–49 clears that flag only after the image row's prefill).
    """

    alpha: float = 0.2
    first_layer: int = 2
    first_step: int = 0

    def acts_on(self, layer: int) -> bool:
        return layer >= self.first_layer


@dataclass(frozen=True)
class SelfIntrospection:
    """SID's CT²S edit for its contrast row (Huo et al., ICLR 2025; ``huofushuo/SID@127dd41
    transformers/src/transformers/models/llama/modeling_llama.py`` L770–815): at layer ``layer - 1`` the last query's
    head-mean attention over the image keys picks the ``keep`` least-attended image tokens
    (``decoding.rules.sid_keep_tokens``); from layer ``layer`` on, every other image key is hidden from every query
    of that forward. Chosen anew at every forward, from that step's query ("text-aware")."""

    keep: int = 100
    layer: int = 2
    first_step: int = 0

    def acts_on(self, layer: int) -> bool:
        return layer >= self.layer - 1


@dataclass(frozen=True)
class BlindTokens:
    """AvisC's contrast row (Woo et al. 2024; ``sangminwoo/AvisC@772eba4 experiments/llava/model/language_model/
    llava_llama.py`` L93–112): in its prefill, the image embeddings entering the language model are zeroed except at
    the "blind" tokens ``keep`` (indices into the row's image tokens, from ``decoding.rules.avisc_blind_tokens``)."""

    keep: tuple[int, ...]
    first_step: int = 0

    def acts_on(self, layer: int) -> bool:
        return False  # it edits the language model's input embeddings, not an attention layer


@dataclass(frozen=True, eq=False)
class ReplacedImageEmbeddings:
    """A row whose image-token embeddings entering the language model are replaced by given ones, in its prefill
    (DCD's rows: the image features through a projector copy, ``decoding.dcd.projected_image_embeddings``).

    offsets:    (n,) the row's image-token indices (every one the model fills with image features, also those the
                attention maps leave out) minus the first of ``RowInputs.image_token_positions``: the edit's key
                positions shifted by these are where they sit in the padded batch.
    embeddings: (n, hidden) what goes there, in the model's dtype and on its device.
    """

    offsets: torch.Tensor
    embeddings: torch.Tensor
    first_step: int = 0

    def acts_on(self, layer: int) -> bool:
        return False  # it edits the language model's input embeddings, not an attention layer


@dataclass(frozen=True)
class OneLayerEnhancement:
    """ONLY's side computation for a row (Wan et al., ICCV 2025; ``zifuwan/ONLY@109bffe``): at decoder layer
    ``layer`` the last query's weights are edited by ``decoding.rules.only_head_weights`` (image keys: the row's image
    positions; text keys: its other non-pad keys but its first, BOS in the release) and ``o_proj(edited · V)`` is
    kept (``transformers/.../llama/modeling_llama.py`` L482-522, ``enhance_layer_index`` 0); the last decoder layer's
    input and the language model's output are kept too (hooks). The row's own forward is not changed. The engine then
    builds the "textually enhanced" logits from them (``FamilyAdapter.one_layer_enhanced_hidden``)."""

    layer: int = 0
    first_step: int = 0
    # modeling_llama.py L656-662: ``0.2 * residual + input_layernorm(cd)`` at the last layer; llava_llama.py L116:
    # ``hidden_states_cd + 0.5 * outputs[0]``.
    residual_weight: float = 0.2
    final_weight: float = 0.5

    def acts_on(self, layer: int) -> bool:
        return layer == self.layer


@dataclass(frozen=True)
class AttentionDropout:
    """Distillation CD's amateur row as its paper describes it (Phan, Tran, Phan, arXiv 2402.14874): dropout at rate
    ``p`` on the row's attention probabilities in every decoder layer, where transformers' eager attention applies a
    module's ``attention_dropout`` in training: each weight kept with probability 1 − p and scaled by 1/(1 − p)
    (p = 1 drops every one). The release sets its rate on the top-level model, which no attention module reads
    (``pphuc25/distil-cd@5aad6c2 src/dcd/generate.py`` L272–275): as released nothing is dropped.

    The masks are seeded: each forward draws them from ``seed``, the layer and the row's own position of the
    forward's first real query, over the row's own queries and keys only (``lengths``: never its padding). So every
    query of every forward gets a fresh mask, the row's cache holds its own dropped states, and the row drops the
    same weights batched beside any other rows as alone.
    """

    p: float
    seed: int
    first_step: int = 0

    def acts_on(self, layer: int) -> bool:
        return True

    def dropped(self, weights: torch.Tensor, layer: int, length: int) -> torch.Tensor:
        """One row's ``(heads, queries, keys)`` weights with its dropout; ``length``: the row's tokens after this
        forward (its last queries and keys are its own; any before them are padding)."""
        heads, queries, keys = weights.shape
        q, k = min(queries, length), min(keys, length)
        state = np.random.SeedSequence([self.seed % 2**64, layer, length - q]).generate_state(1, np.uint64)[0]
        generator = torch.Generator(device=weights.device).manual_seed(int(state))
        keep = torch.ones_like(weights, dtype=torch.bool)
        keep[:, queries - q:, keys - k:] = torch.rand(
            (heads, q, k), generator=generator, device=weights.device) >= self.p
        return weights.masked_fill(~keep, 0.0) * (1.0 / (1.0 - self.p) if self.p < 1.0 else 0.0)


@dataclass(frozen=True)
class HeadMask:
    """A row whose attention heads ``heads`` ((layer, query head) pairs; under grouped-query attention the query
    heads, their shared key/value heads untouched) are masked, in one of two meanings (methods-3 §12: "masking a
    head" means three things; ONLY's is a third):

    uniform=True:  DeCoRe's. The heads' pre-softmax scores are replaced by the attention mask alone, so each attends
                   uniformly to every key it may see (causality, padding, sliding windows kept): what the release's
                   zeroed queries give under flash attention (``aryopg/DeCoRe@d1fa5a9 src/utils/modelling_llama.py``
                   L671–675; its eager path, L833–836, zeroes the scores after the mask and so also sees future keys,
                   harmless there only because its masked forwards are single-token).
    uniform=False: MaskCD's as its paper is described (no code public; unverified): the heads' weights are zeroed
                   after the softmax, so they add nothing to the layer's output.

    last_query_only: in the prefill, only the last prompt position's query is masked (the rows before it keep their
    unmasked keys and values): DeCoRe as released, which prefills ``tokens[:-1]`` unmasked and feeds the last prompt
    token as its first masked forward (``src/models/decore_entropy.py`` L103–127). Every later forward has one query.
    """

    heads: tuple[tuple[int, int], ...]
    uniform: bool = True
    last_query_only: bool = True
    first_step: int = 0

    def acts_on(self, layer: int) -> bool:
        return any(masked == layer for masked, _ in self.heads)

    def heads_of(self, layer: int) -> list[int]:
        return [head for masked, head in self.heads if masked == layer]


Edit = (ImageAmplification | SelfIntrospection | BlindTokens | ReplacedImageEmbeddings | OneLayerEnhancement | MlpEdit
        | AttentionDropout | HeadMask)


@dataclass
class LabControl:
    """What one forward edits: batch index -> (that row's image key positions in cache coordinates, its edit); and,
    filled during the forward, SID's kept image keys per batch index.

    last_query_weights: with ``output_attentions``, return only the last query's weights, (B, H, 1, keys): all that
    a prefill's recording reads (the first token's image attention, ECD's features), without keeping every layer's
    (B, H, L, L) weights; so a prefill with edits never needs splitting into chunks (SID's edit spans every query of
    the forward, and a chunk without the last query could not choose its kept tokens)."""

    edits: dict[int, tuple[torch.Tensor, Edit]] = field(default_factory=dict)
    kept: dict[int, torch.Tensor] = field(default_factory=dict)
    last_query_weights: bool = False
    # ONLY's (``OneLayerEnhancement``), filled during the forward, batch index -> its last position's: the edited
    # layer's ``o_proj(edited · V)`` (hidden,), the number of heads it removed (a 0-d tensor: no device sync), the
    # last decoder layer's input, and the language model's own output (its normed last hidden state).
    enhanced_attention: dict[int, torch.Tensor] = field(default_factory=dict)
    removed_heads: dict[int, torch.Tensor] = field(default_factory=dict)
    last_layer_input: dict[int, torch.Tensor] = field(default_factory=dict)
    final_hidden: dict[int, torch.Tensor] = field(default_factory=dict)
    # Batch index -> the edited row's tokens after this forward (its prompt and the tokens fed so far): where its own
    # queries and keys start behind the left padding (``AttentionDropout``).
    lengths: dict[int, int] = field(default_factory=dict)
    # Batch index -> what the MLP-output edits' hooks found during the forward, by name (``decoding.steering``:
    # MemVR's "retrace layer" and "layer uncertainty"); the engine hands each to the row's rule.
    findings: dict[int, dict[str, float]] = field(default_factory=dict)

    def enhanced_rows(self) -> list[int]:
        return [b for b, (_, edit) in self.edits.items() if isinstance(edit, OneLayerEnhancement)]

    def zeroed_embeddings(self) -> dict[int, torch.Tensor]:
        """Batch index -> the input positions whose embeddings AvisC zeroes (the row's non-blind image tokens)."""
        out = {}
        for b, (positions, edit) in self.edits.items():
            if isinstance(edit, BlindTokens):
                blind = torch.zeros(len(positions), dtype=torch.bool, device=positions.device)
                blind[list(edit.keep)] = True
                out[b] = positions[~blind]
        return out

    def replaced_embeddings(self) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """Batch index -> (the input positions whose embeddings are replaced, what replaces them)."""
        return {
            b: (positions[0] + edit.offsets.to(positions.device), edit.embeddings)
            for b, (positions, edit) in self.edits.items()
            if isinstance(edit, ReplacedImageEmbeddings) and len(positions)
        }

    def rows_for(self, layer: int | None) -> dict[int, tuple[torch.Tensor, Edit]]:
        if layer is None:  # a vision tower's attention, or any module outside the language model's layers
            return {}
        return {b: edit for b, edit in self.edits.items() if edit[1].acts_on(layer)}


def lab_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers' attention-function signature: query (B, H, q, D), key / value (B, H_kv, kv, D) with the cache,
    the registered mask function's float mask; returns ((B, q, H, D), weights or None)."""
    control = kwargs.pop("lab_control", None)
    layer = getattr(module, "layer_idx", None)
    rows = control.rows_for(layer) if control is not None else {}
    want_weights = bool(kwargs.pop("output_attentions", False))
    last_only = want_weights and control is not None and control.last_query_weights
    if not rows and (not want_weights or last_only):
        output, _ = sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling,
                                           dropout=dropout, **kwargs)
        return output, (_weights(module, query[:, :, -1:], key, attention_mask, scaling) if last_only else None)
    weights = _weights(module, query, key, attention_mask, scaling, rows, control, layer)
    weights = torch.nn.functional.dropout(weights, p=dropout, training=module.training)
    for b, (_, edit) in rows.items():
        if isinstance(edit, AttentionDropout) and edit.p > 0:
            weights[b] = edit.dropped(weights[b], layer, control.lengths[b])
    values = _repeated(module, value)
    output = torch.matmul(weights, values).transpose(1, 2).contiguous()
    _one_layer_enhancement(module, weights, values, attention_mask, rows, control)
    if not want_weights:
        return output, None
    return output, (weights[:, :, -1:] if last_only else weights)


def _repeated(module, states: torch.Tensor) -> torch.Tensor:
    """Grouped-query keys or values repeated to one per query head."""
    groups = getattr(module, "num_key_value_groups", 1)
    return states.repeat_interleave(groups, dim=1) if groups > 1 else states


def _weights(module, query, key, attention_mask, scaling, rows=None, control=None, layer=None) -> torch.Tensor:
    """Eager attention weights of ``query`` (its last rows, where it is a slice) over every key, with the edits of
    ``rows`` (batch index -> (image key positions, edit)) of this ``layer``."""
    keys = _repeated(module, key)
    scores = torch.matmul(query, keys.transpose(2, 3)) * (scaling if scaling is not None else query.shape[-1] ** -0.5)
    if attention_mask is not None:
        scores = scores + attention_mask[:, :, -query.shape[2]:, : keys.shape[-2]]
    rows = rows or {}
    for b, (positions, edit) in rows.items():
        if isinstance(edit, ImageAmplification):
            image = torch.zeros(scores.shape[-1], dtype=torch.bool, device=scores.device)
            image[positions] = True
            # The rules unchecked (``__wrapped__``), here and below: compare/answer_many checked the parameters once.
            amplified = rules.pai_amplify.__wrapped__(scores[b, :, -1, :], image, alpha=edit.alpha)
            scores[b, :, -1, :] = amplified.to(scores.dtype)
        elif isinstance(edit, SelfIntrospection) and layer >= edit.layer:
            hidden = torch.zeros(scores.shape[-1], dtype=torch.bool, device=scores.device)
            hidden[positions] = True
            hidden[control.kept[b]] = False
            # -inf, not the mask's finite minimum: a query all of whose keys are hidden (an image token before any
            # text, as InstructBLIP's first queries) would otherwise spread its weights evenly over every key, the
            # future ones too; it attends to nothing instead (its softmax NaN made 0), as a pruned token has no row.
            scores[b, :, :, hidden] = float("-inf")
        elif isinstance(edit, HeadMask) and edit.uniform:
            queries = slice(-1, None) if edit.last_query_only else slice(None)
            heads = edit.heads_of(layer)
            scores[b, heads, queries, :] = _visible(attention_mask, b, scores)[queries].to(scores.dtype)
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    for b, (_, edit) in rows.items():
        if isinstance(edit, HeadMask) and not edit.uniform:
            queries = slice(-1, None) if edit.last_query_only else slice(None)
            weights[b, edit.heads_of(layer), queries, :] = 0.0
    for b, (_, edit) in rows.items():
        if isinstance(edit, SelfIntrospection) and layer >= edit.layer:
            weights[b] = weights[b].nan_to_num(0.0)
    for b, (positions, edit) in rows.items():
        if isinstance(edit, SelfIntrospection) and layer == edit.layer - 1:
            on_image = weights[b, :, -1, positions].float().mean(dim=0)
            control.kept[b] = positions[rules.sid_keep_tokens.__wrapped__(on_image, k=edit.keep)]
    return weights


def _visible(attention_mask, b: int, scores: torch.Tensor) -> torch.Tensor:
    """The float mask of batch row ``b`` for ``scores``' (.., q, keys) queries: 0 where a key may be attended, very
    negative elsewhere; causal over the last ``q`` positions where the forward has no mask."""
    q, keys = scores.shape[-2:]
    if attention_mask is not None:
        return attention_mask[b, 0, -q:, :keys]
    future = torch.ones(q, keys, dtype=torch.bool, device=scores.device).triu(keys - q + 1)
    return torch.zeros(q, keys, device=scores.device).masked_fill(future, torch.finfo(scores.dtype).min)


def _one_layer_enhancement(module, weights, values, attention_mask, rows, control) -> None:
    """ONLY's ``o_proj(edited · V)`` of the last query, for the rows of ``rows`` with a ``OneLayerEnhancement``."""
    for b, (positions, edit) in rows.items():
        if not isinstance(edit, OneLayerEnhancement):
            continue
        last = weights[b, :, -1, :].float()  # (heads, keys)
        keys = last.shape[-1]
        visible = (torch.ones(keys, dtype=torch.bool, device=last.device) if attention_mask is None
                   else attention_mask[b, 0, -1, :keys] == 0)  # the float mask is 0 where the key is attended
        image = torch.zeros(keys, dtype=torch.bool, device=last.device)
        image[positions] = True
        # The row's first token (BOS in the release) in neither part: the one visible key with no visible key before
        # it, found without reading the mask back from the device.
        first = visible & (visible.cumsum(0) == 1)
        text = visible & ~image & ~first
        edited, removed, _ = rules.only_head_weights(last[None], text[None], image[None])
        heads = torch.matmul(edited[0].to(values.dtype)[:, None, :], values[b]).reshape(1, -1)  # (1, heads * dim)
        control.enhanced_attention[b] = module.o_proj(heads)[0]
        control.removed_heads[b] = removed.sum()


AttentionInterface.register(NAME, lab_attention)
AttentionMaskInterface.register(NAME, eager_mask)  # float (B, 1, q, kv) masks: padding, causality, sliding windows


def _edit_input_embeddings(module, args, kwargs=None):
    """A forward pre-hook on the language model (``model.get_decoder()``): AvisC's zeroed image embeddings and DCD's
    replaced ones, for the rows the forward's control names, in a forward whose inputs hold the image (the
    prefill). (This module's hooks may be called without ``kwargs``: torch marks a hook as taking them only after
    adding it, and another thread's forward of the model, one without edits, can fall in between.)"""
    control, embeds = (kwargs or {}).get("lab_control"), (kwargs or {}).get("inputs_embeds")
    if control is None or embeds is None:
        return None
    width = embeds.shape[1]
    zero = {b: p for b, p in control.zeroed_embeddings().items() if len(p) and int(p.max()) < width}
    replace = {b: (p, e) for b, (p, e) in control.replaced_embeddings().items() if int(p.max()) < width}
    if not zero and not replace:
        return None
    embeds = embeds.clone()
    for b, positions in zero.items():
        embeds[b, positions] = 0.0
    for b, (positions, replacement) in replace.items():
        embeds[b, positions] = replacement.to(embeds.device, embeds.dtype)
    return args, {**kwargs, "inputs_embeds": embeds}


def _keep_last_layer_input(module, args, kwargs=None):
    """A forward pre-hook on the last decoder layer: its input at the last position, for ONLY's rows."""
    control = (kwargs or {}).get("lab_control")
    if control is None:
        return None
    hidden = args[0] if args else kwargs["hidden_states"]
    for b in control.enhanced_rows():
        control.last_layer_input[b] = hidden[b, -1]
    return None


def _keep_final_hidden(module, args, kwargs, output=None):
    """A forward hook on the language model (``model.get_decoder()``): its output at the last position (the normed
    last hidden state, what transformers 5 returns as ``hidden_states[-1]``), for ONLY's rows; so the forward need
    not keep every layer's hidden states (``output_hidden_states``) for the one it reads."""
    control = kwargs.get("lab_control") if output is not None else None  # output None: called without kwargs
    if control is None:
        return None
    for b in control.enhanced_rows():
        control.final_hidden[b] = output[0][b, -1]  # ``last_hidden_state``, the model output's first field
    return None


_SWITCH_LOCK = threading.Lock()
_SWITCHED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> [runs in, implementation before, hooks]


@contextlib.contextmanager
def lab_attention_for(model):
    """Run ``model`` under this module's attention function (and the embedding edits' hook: AvisC's, DCD's; ONLY's
    on the last decoder layer and the language model; the MLP-output edits' hooks, ``decoding.steering``: VISTA's,
    VTI's) for one run, then switch back.

    Runs of one model at once (the app's sessions, a thread each) share the switch: the first run in switches and
    installs the hooks, the last one out switches back. A run that ended must not take the function from under
    another's forward: that one's edits would silently stop, and its recording find no weights."""
    with _SWITCH_LOCK:
        entry = _SWITCHED.get(model)
        if entry is None:
            entry = _SWITCHED[model] = [0, model.config._attn_implementation, _install_hooks(model)]
            model.set_attn_implementation(NAME)
        entry[0] += 1
    try:
        yield
    finally:
        with _SWITCH_LOCK:
            entry[0] -= 1
            if not entry[0]:
                for hook in entry[2]:
                    hook.remove()
                model.set_attn_implementation(entry[1])
                del _SWITCHED[model]


def _install_hooks(model) -> list:
    decoder = model.get_decoder()
    hooks = [decoder.register_forward_pre_hook(_edit_input_embeddings, with_kwargs=True),
             decoder.register_forward_hook(_keep_final_hidden, with_kwargs=True)]
    if isinstance(getattr(decoder, "layers", None), torch.nn.ModuleList):
        hooks.append(decoder.layers[-1].register_forward_pre_hook(_keep_last_layer_input, with_kwargs=True))
    return hooks + install_mlp_edit_hooks(model)
