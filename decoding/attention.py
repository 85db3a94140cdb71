"""The project's attention function: transformers' sdpa, except where a method edits a row's attention.

Registered with transformers' ``AttentionInterface`` **and** ``AttentionMaskInterface`` under one name (without the
mask function the model silently builds no causal or padding mask for an unknown name: ``masking_utils``
``_preprocess_mask_arguments``). The engine switches a model to it for the runs that need it, and passes a per-forward
``LabControl`` as the ``lab_control`` keyword, which transformers hands down to every attention call. Nothing of
transformers is copied or patched.

Today's edit is PAI's image amplification (Liu, Zheng, Chen, ECCV 2024; ``LALBJ/PAI@9bbd8bd attention.py`` L90–94):
in decoder layers ``>= first_layer``, the last query row's pre-softmax scores on the row's image keys are raised by
``alpha * |score|`` (``decoding.rules.pai_amplify``). Layers and rows without an edit run sdpa untouched; with
``output_attentions`` every layer returns its weights, as eager attention does.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, eager_mask

from . import rules

NAME = "contrastive_lab"


@dataclass(frozen=True)
class ImageAmplification:
    """PAI's attention edit for one side's original row.

    alpha:       the amplification (0.2 in PAI's scripts).
    first_layer: the first decoder layer edited (2; PAI edits [2, 32) of LLaVA-1.5's 32, i.e. from 2 to the last).
    first_step:  the first forward edited: 0 = the prefill (the first answer token) on; 1 = from the second token,
                 as PAI's release does when its CFG term is on (``attention.py`` L90 gates the edit on ``not use_cfg``,
                 and ``CFG.py`` L48–49 clears that flag only after the image row's prefill).
    """

    alpha: float = 0.2
    first_layer: int = 2
    first_step: int = 1


@dataclass
class LabControl:
    """What one forward edits: batch index -> (image key positions in cache coordinates, the edit)."""

    amplify: dict[int, tuple[torch.Tensor, ImageAmplification]] = field(default_factory=dict)

    def rows_for(self, layer: int | None) -> dict[int, tuple[torch.Tensor, ImageAmplification]]:
        if layer is None:  # a vision tower's attention, or any module outside the language model's layers
            return {}
        return {b: edit for b, edit in self.amplify.items() if layer >= edit[1].first_layer}


def lab_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers' attention-function signature: query (B, H, q, D), key / value (B, H_kv, kv, D) with the cache,
    the registered mask function's float mask; returns ((B, q, H, D), weights or None)."""
    control = kwargs.pop("lab_control", None)
    rows = control.rows_for(getattr(module, "layer_idx", None)) if control is not None else {}
    if not rows and not kwargs.get("output_attentions"):
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout,
                                      **kwargs)
    groups = getattr(module, "num_key_value_groups", 1)
    keys = key.repeat_interleave(groups, dim=1) if groups > 1 else key
    values = value.repeat_interleave(groups, dim=1) if groups > 1 else value
    scores = torch.matmul(query, keys.transpose(2, 3)) * (scaling if scaling is not None else query.shape[-1] ** -0.5)
    if attention_mask is not None:
        scores = scores + attention_mask[:, :, :, : keys.shape[-2]]
    for b, (positions, edit) in rows.items():
        image = torch.zeros(scores.shape[-1], dtype=torch.bool, device=scores.device)
        image[positions] = True
        scores[b, :, -1, :] = rules.pai_amplify(scores[b, :, -1, :], image, alpha=edit.alpha).to(scores.dtype)
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = torch.nn.functional.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, values).transpose(1, 2).contiguous(), weights


AttentionInterface.register(NAME, lab_attention)
AttentionMaskInterface.register(NAME, eager_mask)  # float (B, 1, q, kv) masks: padding, causality, sliding windows


@contextlib.contextmanager
def lab_attention_for(model):
    """Run ``model`` under this module's attention function for one run, then switch back."""
    before = model.config._attn_implementation
    model.set_attn_implementation(NAME)
    try:
        yield
    finally:
        model.set_attn_implementation(before)
