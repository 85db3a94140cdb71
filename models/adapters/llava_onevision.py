"""LLaVA-OneVision: the LLaVA-NeXT tiling with a SigLIP tower (no CLS); the processor also returns
``batch_num_images`` (1 per single-image row), kept with the pixels so batching concatenates it too."""

from __future__ import annotations

from ._common import AnyResAdapter


class LlavaOnevisionAdapter(AnyResAdapter):
    family = "llava_onevision"
    vision_keys = ("pixel_values", "image_sizes", "batch_num_images")
