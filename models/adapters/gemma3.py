"""Gemma 3: one square SigLIP view, average-pooled to ``mm_tokens_per_image`` soft tokens (a sqrt x sqrt grid),
written as ``\\n\\n<start_of_image><image_soft_token> x N<end_of_image>\\n\\n`` where the chat has the image.

Quirk (transformers 5.24, ``Gemma3Model.forward``): the image block attends to itself both ways. The processor's
``token_type_ids`` (1 at the soft tokens) are what turn the causal mask bidirectional over the block
(``get_block_sequence_ids_for_mask``); without them the image is read causally, silently. They are this family's
per-token input (the engine left-pads them with zeros: a pad or a text token, never image), given at the prefill
only, as ``Gemma3ForConditionalGeneration.prepare_inputs_for_generation`` does: an answer token is text and attends
causally. The chat template writes ``<bos>`` itself (``_special_tokens_kwargs``); its roles are ``user`` and
``model``, a system text is put at the start of the first user turn.

Pan-and-scan (extra crops of a large image, each its own soft-token block) is off: one view per image, the published
processor's default (google/gemma-3-4b-it preprocessor_config.json: ``do_pan_and_scan`` unset).
"""

from __future__ import annotations

import math

from ._common import SingleViewAdapter


class Gemma3Adapter(SingleViewAdapter):
    family = "gemma3"
    vision_keys = ("pixel_values",)
    token_keys = ("token_type_ids",)
    processor_kwargs = {"do_pan_and_scan": False}

    def _image_tokens(self, input_ids, vision_kwargs):
        positions = self.image_token_indices(input_ids)
        side = math.isqrt(int(self.model.config.mm_tokens_per_image))
        if positions.numel() != side * side:
            raise ValueError(f"{positions.numel()} image tokens, expected {side} x {side} (mm_tokens_per_image)")
        return positions, (side, side)
