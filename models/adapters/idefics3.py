"""Idefics3 (SmolVLM v1): the image resized to multiples of the tile size and cut into rows x cols tiles (row-major),
then the whole image resized to one tile, the "global" view, last; each frame is ``image_seq_len`` ``<image>``
tokens (the vision patches pixel-shuffled by ``scale_factor``), tagged ``<row_r_col_c>`` and ``<global-img>``.

``pixel_values`` is (1, frames, C, S, S) with ``pixel_attention_mask`` (1, frames, S, S); rows of a batch are padded
with all-zero frames, which the model drops (``Idefics3Model.get_image_features``: frames whose values are all 0).
The attention heatmap is the global view's (the last block of image tokens); ``pixel_views`` gives the global view,
then the canvas of tiles as the image they were cut from.
(``TilesAndGlobalAdapter``: which rows x cols the tiles are).
"""

from __future__ import annotations

import math

import torch

from ._common import TilesAndGlobalAdapter


class Idefics3Adapter(TilesAndGlobalAdapter):
    family = "idefics3"
    vision_keys = ("pixel_values", "pixel_attention_mask")

    @property
    def tokens_per_frame(self) -> int:
        return int(self.processor.image_seq_len)

    def _image_tokens(self, input_ids, vision_kwargs):
        side = math.isqrt(self.tokens_per_frame)
        positions = self.image_token_indices(input_ids)[-side * side:]  # the global view's block comes last
        if positions.numel() != side * side:
            raise ValueError(f"{positions.numel()} image tokens, expected a {side} x {side} global view")
        return positions, (side, side)

    def batch_vision_kwargs(self, rows):
        rows = [r for r in rows if r]
        if not rows:
            return {}
        most = max(r["pixel_values"].shape[1] for r in rows)

        def padded(tensor):  # all-zero frames up to the longest row, on dimension 1, as the processor pads
            pad = [0, 0] * (tensor.dim() - 2) + [0, most - tensor.shape[1]]
            return torch.nn.functional.pad(tensor, pad)

        return {key: torch.cat([padded(r[key]) for r in rows], dim=0) for key in rows[0]}

    def _frames(self, vision_kwargs):
        pixels = vision_kwargs["pixel_values"][0]  # (frames, C, S, S), then the batch's all-zero padding
        return pixels[: int(pixels.flatten(1).ne(0).any(dim=1).sum())]

    def _with_frames(self, vision_kwargs, frames):
        pixels = vision_kwargs["pixel_values"].clone()
        pixels[0, : frames.shape[0]] = frames.to(pixels.dtype)
        return self._replaced(vision_kwargs, pixels)

    def image_projector(self):
        """The connector (``Idefics3Model.connector``: pixel shuffle, then one linear map into the language model's
        embeddings), through which ``get_image_features`` passes the vision tower's output (transformers 5.24
        modeling_idefics3.py line 583): DCD's projector."""
        return self.model.model.connector

    @property
    def image_size(self):
        size = int(self.processor.image_processor.max_image_size["longest_edge"])
        return (size, size)

