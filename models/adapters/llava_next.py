"""LLaVA-NeXT: base view + high-resolution tiles (``AnyResAdapter``)."""

from __future__ import annotations

from ._common import AnyResAdapter


class LlavaNextAdapter(AnyResAdapter):
    family = "llava_next"
