"""Qwen3-VL: Qwen2-VL's processor, patch layout and M-RoPE interface (``get_rope_index`` has the same signature).

Quirk (transformers 5.24): a forward given a full 2-D ``attention_mask`` but no ``position_ids`` makes Qwen3-VL
compute ``attention_mask.cumsum(-1) - 1`` for the whole mask (``Qwen3VLModel.compute_3d_position_ids``), not for the
new token, and a one-token step then fails on a shape mismatch after its keys were already cached. The engine always
passes explicit (3, B, L) positions (this adapter's ``_position_ids`` at the prompt, ``max + 1`` per step), which is
what ``generate`` does too (it precomputes and slices them).

DeepStack: the vision layers named in ``vision_config.deepstack_visual_indexes`` add their features to the language
model's first layers at the image tokens (after the input embeddings). AvisC's contrast row zeroes the image's input
embeddings, as on every family; the DeepStack features at those tokens are the model's own and stay.
"""

from __future__ import annotations

from .qwen2_vl import Qwen2VLAdapter


class Qwen3VLAdapter(Qwen2VLAdapter):
    family = "qwen3_vl"
