"""LLaVA-1.5: one square view, every image token on a sqrt(N) x sqrt(N) grid."""

from __future__ import annotations

import math

from ._common import ChatAdapter


class LlavaAdapter(ChatAdapter):
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

    def pixel_views(self, vision_kwargs):
        return [vision_kwargs["pixel_values"][0].clone()]

    def with_pixel_views(self, vision_kwargs, views):
        (view,) = views
        if tuple(view.shape) != tuple(vision_kwargs["pixel_values"].shape[1:]):
            raise ValueError("the view must keep the shape given by pixel_views")
        return self._replaced(vision_kwargs, view[None])

    @property
    def image_size(self):
        size = int(self.model.config.vision_config.image_size)
        return (size, size)
