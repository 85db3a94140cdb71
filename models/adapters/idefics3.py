"""Idefics3 (SmolVLM v1): the image resized to multiples of the tile size and cut into rows x cols tiles (row-major),
then the whole image resized to one tile, the "global" view, last; each frame is ``image_seq_len`` ``<image>``
tokens (the vision patches pixel-shuffled by ``scale_factor``), tagged ``<row_r_col_c>`` and ``<global-img>``.

``pixel_values`` is (1, frames, C, S, S) with ``pixel_attention_mask`` (1, frames, S, S); rows of a batch are padded
with all-zero frames, which the model drops (``Idefics3Model.get_image_features``: frames whose values are all 0).
The attention heatmap is the global view's (the last block of image tokens); ``pixel_views`` gives the global view,
then the canvas of tiles as the image they were cut from.

The number of tiles is in the pixels; which of rows x cols it is (3 tiles: 1 x 3 or 3 x 1) is not. It is the
arrangement whose canvas, resized to one tile, is nearest the global view (the processor resized the same canvas to
make it): exact for any picture but a constant one, where every arrangement gives the same views.
"""

from __future__ import annotations

import math

import torch

from ._common import ChatAdapter


class Idefics3Adapter(ChatAdapter):
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

    def _frames(self, vision_kwargs) -> torch.Tensor:
        pixels = vision_kwargs["pixel_values"][0]  # (frames, C, S, S)
        real = pixels.flatten(1).ne(0).any(dim=1)
        return pixels[: int(real.sum())]

    def canvas_tiles(self, vision_kwargs) -> tuple[int, int]:
        """(rows, cols) of this row's tiles; (0, 0) when the image was not split (one frame)."""
        frames = self._frames(vision_kwargs)
        tiles = frames.shape[0] - 1
        if tiles < 1:
            return 0, 0
        size = frames.shape[-2:]
        best = None
        for rows in (r for r in range(1, tiles + 1) if tiles % r == 0):
            canvas = _canvas(frames[:-1], rows, tiles // rows)
            small = torch.nn.functional.interpolate(canvas[None].float(), size=size, mode="area")[0]
            error = float((small - frames[-1].float()).square().mean())
            if best is None or error < best[0]:
                best = (error, rows)
        return best[1], tiles // best[1]

    def pixel_views(self, vision_kwargs):
        frames = self._frames(vision_kwargs)
        rows, cols = self.canvas_tiles(vision_kwargs)
        if rows == 0:
            return [frames[0].clone()]
        return [frames[-1].clone(), _canvas(frames[:-1], rows, cols).clone()]

    def with_pixel_views(self, vision_kwargs, views):
        pixels = vision_kwargs["pixel_values"].clone()
        rows, cols = self.canvas_tiles(vision_kwargs)
        channels, size_h, size_w = pixels.shape[2:]
        if rows == 0:
            (view,) = views
            if tuple(view.shape) != (channels, size_h, size_w):
                raise ValueError("the view must keep the shape given by pixel_views")
            pixels[0, 0] = view.to(pixels.dtype)
            return self._replaced(vision_kwargs, pixels)
        base, canvas = views
        if tuple(base.shape) != (channels, size_h, size_w) or tuple(canvas.shape) != (
                channels, rows * size_h, cols * size_w):
            raise ValueError("views must keep the shapes given by pixel_views")
        tiles = canvas.reshape(channels, rows, size_h, cols, size_w).permute(1, 3, 0, 2, 4)
        pixels[0, : rows * cols] = tiles.reshape(rows * cols, channels, size_h, size_w).to(pixels.dtype)
        pixels[0, rows * cols] = base.to(pixels.dtype)
        return self._replaced(vision_kwargs, pixels)

    @property
    def image_size(self):
        size = int(self.processor.image_processor.max_image_size["longest_edge"])
        return (size, size)


def _canvas(tiles: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """(rows * cols, C, h, w) row-major tiles -> the (C, rows * h, cols * w) image they were cut from."""
    channels, height, width = tiles.shape[1:]
    grid = tiles.reshape(rows, cols, channels, height, width).permute(2, 0, 3, 1, 4)
    return grid.reshape(channels, rows * height, cols * width)
