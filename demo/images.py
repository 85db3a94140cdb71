"""Pictures in and out of the app: reading a visitor's upload safely, and drawing attention over an image."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 24_000_000
# Uploads are scaled down to this many pixels on their longer side before the model sees them: processors resize to
# a few hundred pixels anyway, and dynamic-resolution families would otherwise spend thousands of tokens on a photo.
MODEL_MAX_SIDE = 1024
OVERLAY_SIDE = 336


def read_upload(path: str | None, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """The RGB picture in an uploaded file, checked before it is decoded; ValueError with a message for a visitor.

    ``path`` is the file gradio's upload handler stored (never a path typed by a visitor). The pixel count is read
    from the header, so a huge image is refused before it takes any memory.
    """
    if not path:
        raise ValueError("No image: upload, paste or take a picture, or click one of the examples.")
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ValueError(_too_large(width, height, max_pixels))
            picture = ImageOps.exif_transpose(image).convert("RGB")
    except Image.DecompressionBombError:  # raised by PIL itself for absurd sizes, before our check can run
        raise ValueError(_too_large(None, None, max_pixels)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, EOFError) as error:
        # OSError covers truncated files; SyntaxError and EOFError are how some PIL decoders report broken data.
        raise ValueError("The file could not be read as an image: it is corrupt or not a picture format.") from error
    picture.thumbnail((MODEL_MAX_SIDE, MODEL_MAX_SIDE), Image.Resampling.LANCZOS)
    return picture


def _too_large(width: int | None, height: int | None, max_pixels: int) -> str:
    size = f"{width}×{height} ({width * height / 1e6:.3g} megapixels)" if width else "too large"
    return f"The image is {size}; the limit is {max_pixels / 1e6:g} megapixels. Please scale it down and try again."


def attention_overlay(picture: Image.Image, grid, side: int = OVERLAY_SIDE) -> Image.Image:
    """``grid`` (rows x cols attention over the image tokens) blown up onto ``picture``: bright = looked at.

    The grid is shown at its own resolution (nearest-neighbour blocks): smoothing would suggest detail the model's
    patches do not have. Values are scaled to the grid's maximum, so the overlay shows where, not how much.
    """
    base = picture.convert("RGB")
    scale = side / max(base.size)
    size = (max(1, round(base.width * scale)), max(1, round(base.height * scale)))
    base = base.resize(size, Image.Resampling.BICUBIC)
    heat = np.asarray(grid, dtype=np.float32)
    if heat.ndim != 2 or heat.size == 0:
        raise ValueError(f"an attention grid must be 2-D and non-empty, got shape {heat.shape}")
    peak = float(heat.max())
    heat = heat / peak if peak > 0 else np.zeros_like(heat)
    levels = Image.fromarray(np.round(heat * 255).astype(np.uint8)).resize(
        base.size, Image.Resampling.NEAREST
    )
    colours = ImageOps.colorize(levels, black="#1b0c41", mid="#d44842", white="#fcffa4")
    # Low attention lets the picture show through; high attention is mostly the colour.
    return Image.composite(colours, base, levels.point(lambda level: 30 + level * 130 // 255))
