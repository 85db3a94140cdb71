"""LLaVA-1.5: one square view, every image token on a sqrt(N) x sqrt(N) grid."""

from __future__ import annotations

import math

from ._common import SingleViewAdapter


class LlavaAdapter(SingleViewAdapter):
    family = "llava"
    vision_keys = ("pixel_values",)

    def _image_tokens(self, input_ids, vision_kwargs):
        positions = self.image_token_indices(input_ids)
        if math.isqrt(positions.numel() - 1) ** 2 == positions.numel() - 1 and positions.numel() > 1:
            positions = positions[1:]  # vision_feature_select_strategy "full": the first feature is CLS
        side = math.isqrt(positions.numel())
        if side * side != positions.numel():
            raise ValueError(f"{positions.numel()} image tokens do not form a square grid")
        return positions, (side, side)
