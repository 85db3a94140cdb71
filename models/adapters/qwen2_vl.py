"""Qwen2-VL and Qwen2.5-VL: dynamic resolution, flattened patches and M-RoPE positions."""

from __future__ import annotations

import torch

from ._common import ChatAdapter


class Qwen2VLAdapter(ChatAdapter):
    family = "qwen2_vl"
    vision_keys = ("pixel_values", "image_grid_thw")
    token_keys = ("mm_token_type_ids",)

    @property
    def _vision(self):
        return self.model.config.vision_config

    def _position_ids(self, input_ids, token_kwargs, vision_kwargs):
        """(3, 1, L) M-RoPE positions from the model's own ``get_rope_index`` (text-only rows too: then all three
        components equal arange(L))."""
        mm_types = token_kwargs.get("mm_token_type_ids")
        if mm_types is None:
            mm_types = torch.zeros_like(input_ids)
        device = self.model.device
        positions, _ = self.model.model.get_rope_index(
            input_ids.to(device),
            mm_token_type_ids=mm_types.to(device),
            image_grid_thw=vision_kwargs["image_grid_thw"].to(device) if "image_grid_thw" in vision_kwargs else None,
        )
        return positions.cpu().long()

    def _image_tokens(self, input_ids, vision_kwargs):
        # The merger emits one token per merge x merge block of patches, blocks in row-major order.
        _, grid_h, grid_w = (int(v) for v in vision_kwargs["image_grid_thw"][0])
        merge = int(self._vision.spatial_merge_size)
        grid = (grid_h // merge, grid_w // merge)
        positions = self.image_token_indices(input_ids)
        if positions.numel() != grid[0] * grid[1]:
            raise ValueError(f"{positions.numel()} image tokens for a {grid} grid")
        return positions, grid

    # Patch layout (Qwen2VLImageProcessor.patchify): the (C, H, W) image is cut into patch x patch squares; patches
    # are grouped merge x merge (row-major blocks, row-major inside a block), each flattened as (C, temporal, p, p)
    # with the image repeated over ``temporal_patch_size``.
    def _layout(self, vision_kwargs):
        temporal, grid_h, grid_w = (int(v) for v in vision_kwargs["image_grid_thw"][0])
        if temporal != 1:
            raise ValueError("only single images (temporal grid 1) are supported")
        patch = int(self._vision.patch_size)
        merge = int(self._vision.spatial_merge_size)
        tps = int(self._vision.temporal_patch_size)
        channels = vision_kwargs["pixel_values"].shape[-1] // (tps * patch * patch)
        return grid_h, grid_w, patch, merge, tps, channels

    def pixel_views(self, vision_kwargs):
        grid_h, grid_w, patch, merge, tps, channels = self._layout(vision_kwargs)
        flat = vision_kwargs["pixel_values"]
        blocks = flat.reshape(grid_h // merge, grid_w // merge, merge, merge, channels, tps, patch, patch)
        blocks = blocks[:, :, :, :, :, 0]  # every temporal copy of a still image is the same
        image = blocks.permute(4, 0, 2, 5, 1, 3, 6)  # (C, gh/m, m, p, gw/m, m, p)
        return [image.reshape(channels, grid_h * patch, grid_w * patch).clone()]

    def with_pixel_views(self, vision_kwargs, views):
        (view,) = views
        grid_h, grid_w, patch, merge, tps, channels = self._layout(vision_kwargs)
        if tuple(view.shape) != (channels, grid_h * patch, grid_w * patch):
            raise ValueError("the view must keep the shape given by pixel_views")
        blocks = view.reshape(channels, grid_h // merge, merge, patch, grid_w // merge, merge, patch)
        blocks = blocks.permute(1, 4, 2, 5, 0, 3, 6).unsqueeze(5)  # (gh/m, gw/m, m, m, C, 1, p, p)
        blocks = blocks.expand(-1, -1, -1, -1, -1, tps, -1, -1)
        return self._replaced(vision_kwargs, blocks.reshape(grid_h * grid_w, channels * tps * patch * patch))

    @property
    def image_size(self):
        """Nominal only: Qwen2-VL keeps each image's aspect ratio (``smart_resize``), so a row's real view size is
        ``pixel_views(kw)[0].shape[-2:]``. This is what a 448 x 448 image becomes under the processor's pixel bounds."""
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

        image_processor = self.processor.image_processor
        size = getattr(image_processor, "size", None) or {}
        min_pixels = size.get("shortest_edge") or getattr(image_processor, "min_pixels", None) or 56 * 56
        max_pixels = size.get("longest_edge") or getattr(image_processor, "max_pixels", None) or 28 * 28 * 1280
        factor = int(self._vision.patch_size) * int(self._vision.spatial_merge_size)
        return tuple(smart_resize(448, 448, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels))


class Qwen2_5_VLAdapter(Qwen2VLAdapter):
    """Qwen2.5-VL: same processor, patch layout and M-RoPE interface as Qwen2-VL."""

    family = "qwen2_5_vl"
