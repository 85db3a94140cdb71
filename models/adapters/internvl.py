"""InternVL (the ``-hf`` layout of InternVL3 / 3.5): the image cut into tiles of the grid whose aspect is nearest
its own (``GotOcr2ImageProcessor.crop_to_patches``, between ``min_patches`` and ``max_patches`` tiles), then a
thumbnail of the whole image when there is more than one tile; each tile is ``image_seq_length`` ``<IMG_CONTEXT>``
tokens (the vision patches pixel-shuffled by ``downsample_ratio``), all inside one ``<img> ... </img>``.

``pixel_values`` is (tiles, C, S, S) with no image dimension: a batch concatenates its rows' tiles, and the model
fills the image tokens in that order. The attention heatmap is the thumbnail's (the last tile's tokens), or the one
tile's; ``pixel_views`` gives it, then the canvas of tiles (``TilesAndGlobalAdapter``).
"""

from __future__ import annotations

import math

import torch

from ._common import TilesAndGlobalAdapter


class InternVLAdapter(TilesAndGlobalAdapter):
    family = "internvl"
    vision_keys = ("pixel_values",)

    def _image_tokens(self, input_ids, vision_kwargs):
        side = math.isqrt(int(self.processor.image_seq_length))
        positions = self.image_token_indices(input_ids)[-side * side:]  # the thumbnail's tokens come last
        if positions.numel() != side * side:
            raise ValueError(f"{positions.numel()} image tokens, expected a {side} x {side} thumbnail")
        return positions, (side, side)

    def _frames(self, vision_kwargs) -> torch.Tensor:
        return vision_kwargs["pixel_values"]

    def _with_frames(self, vision_kwargs, frames):
        return self._replaced(vision_kwargs, frames)

    @property
    def image_size(self):
        size = self.processor.image_processor.size
        return (int(size["height"]), int(size["width"]))
