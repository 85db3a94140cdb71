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

    def image_grid_box(self, size):
        """CLIP's preprocessing (LLaVA-1.5's ``do_center_crop``) resizes the shorter side to ``shortest_edge`` and
        keeps the middle ``crop_size``: the grid lies over that centred part of the picture (a square of the shorter
        side for LLaVA-1.5's 336 and 336)."""
        processor = self.processor.image_processor
        shortest = processor.size.get("shortest_edge") if processor.size else None
        if not getattr(processor, "do_center_crop", False) or not shortest:
            return super().image_grid_box(size)
        width, height = size
        crop_width = processor.crop_size["width"] * min(width, height) / shortest
        crop_height = processor.crop_size["height"] * min(width, height) / shortest
        left, top = (width - crop_width) / 2, (height - crop_height) / 2
        return (left, top, left + crop_width, top + crop_height)
