"""Pictures in and out of the app: reading a visitor's upload safely, and drawing attention over an image."""

from __future__ import annotations

import io
import os
import re
import struct

import numpy as np
from PIL import Image, ImageOps

from .checks import DEFAULT_MAX_PIXELS

# Uploads are scaled down to this many pixels on their longer side before the model sees them: processors resize to
# a few hundred pixels anyway, and dynamic-resolution families would otherwise spend thousands of tokens on a photo.
MODEL_MAX_SIDE = 1024
# Every family's processor takes a picture at least this large with sides at most this far apart (Qwen2-VL refuses
# sides under 28 px and aspect ratios over 200): smaller pictures are enlarged, thinner strips padded.
MODEL_MIN_SIDE = 32
MODEL_MAX_ASPECT = 20
OVERLAY_SIDE = 336
# The formats a visitor may upload, read by PIL's own decoders only (never a plugin that runs an external program,
# such as EPS through Ghostscript).
IMAGE_FORMATS = ("PNG", "JPEG", "MPO", "GIF", "BMP", "WEBP", "TIFF")
PAD_COLOUR = (255, 255, 255)


def read_upload(path: str | None, max_pixels: int = DEFAULT_MAX_PIXELS, max_bytes: int | None = None) -> Image.Image:
    """The RGB picture in an uploaded file, checked before it is decoded; ValueError with a message for a visitor.

    ``path`` is the file gradio's upload handler stored (never a path typed by a visitor). The file size and the pixel
    count (from the header) are checked first, so a huge image is refused before it takes any memory. The picture is
    turned upright by its EXIF orientation; transparency goes on white, 16-bit and float pictures are scaled to 8 bits,
    an animation gives its first frame. It is then scaled down to ``MODEL_MAX_SIDE`` and, when it is tiny or a thin
    strip, enlarged or padded so that every model family's processor takes it.
    """
    check_file(path, max_bytes)
    try:
        picture = _decode(path, max_pixels)
    except _TextChunkTooLarge:  # a text chunk after the pixels (read by PIL's load_end)
        picture = _decode(_text_stripped(path), max_pixels)
    picture.thumbnail((MODEL_MAX_SIDE, MODEL_MAX_SIDE), Image.Resampling.LANCZOS)
    return _fit_for_models(picture)


def check_file(path: str | None, max_bytes: int | None = None) -> None:
    """An upload is there and within the size limit; ValueError with a message for a visitor."""
    if not path:
        raise ValueError("No image: upload, paste or take a picture, or click one of the examples.")
    try:
        size = os.path.getsize(path)
    except OSError:  # uploads are deleted after a while: a page left open may send one that is gone
        raise ValueError("The uploaded file is no longer on the server; please upload the picture again.") from None
    if max_bytes is not None and size > max_bytes:
        raise ValueError(f"The file is larger than {max_bytes / 2**20:g} MB; please send a smaller picture.")


def open_image(source, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """A visitor's file opened (its header read, nothing decoded) by the decoders of ``IMAGE_FORMATS`` only: the one
    way this app opens a visitor's bytes, so that no other PIL plugin (EPS runs Ghostscript) ever sees them and
    every handler gives one file the same answer. ValueError with a message for a visitor."""
    try:
        return _open(source, max_pixels)
    except _TextChunkTooLarge:
        return _open(_text_stripped(source), max_pixels)


def _open(source, max_pixels: int) -> Image.Image:
    try:
        Image.init()  # registers every decoder once, so that each of IMAGE_FORMATS can be named
        return Image.open(source, formats=[name for name in IMAGE_FORMATS if name in Image.OPEN])
    except Image.DecompressionBombError as error:  # PIL's own check, for absurd sizes, before ours can run
        raise ValueError(_bomb(str(error), max_pixels)) from None
    except ValueError as error:
        if _is_text_chunk_error(error):
            raise _TextChunkTooLarge(_unreadable()) from error
        raise ValueError(_unreadable()) from error
    except Exception as error:  # UnidentifiedImageError, or a header broken in any other way
        raise ValueError(_unreadable()) from error


def _decode(source, max_pixels: int) -> Image.Image:
    with open_image(source, max_pixels) as image:
        check_pixels(image, max_pixels)
        try:
            image.seek(0)  # an animation: its first frame
            return _to_rgb(ImageOps.exif_transpose(image))
        except ValueError as error:
            if _is_text_chunk_error(error):  # a text chunk after the pixel data, read by load_end
                raise _TextChunkTooLarge(_unreadable()) from error
            raise ValueError(_unreadable()) from error
        except Exception as error:
            # Truncated or corrupt data: OSError mostly, SyntaxError, EOFError or ValueError from some decoders.
            raise ValueError(_unreadable()) from error


def check_pixels(image: Image.Image, max_pixels: int) -> None:
    """An opened (not yet decoded) picture's pixel count, from its header, is within ``max_pixels``."""
    width, height = image.size
    if width * height > max_pixels:
        raise ValueError(_too_large(width, height, max_pixels))


class _TextChunkTooLarge(ValueError):
    """A PNG's text chunk unpacks to more than PIL reads (``PngImagePlugin.MAX_TEXT_CHUNK`` or ``MAX_TEXT_MEMORY``)."""


def _is_text_chunk_error(error: ValueError) -> bool:
    # The messages of PngImagePlugin._safe_zlib_decompress and PngStream.check_text_memory (Pillow 9 to 12).
    message = str(error)
    return "MAX_TEXT_CHUNK" in message or "MAX_TEXT_MEMORY" in message


def _text_stripped(source) -> io.BytesIO:
    """PIL refuses a PNG whose text metadata unpacks to over PngImagePlugin.MAX_TEXT_CHUNK (its guard against text
    bombs); the pixels do not need the text, so the file is read again without its text chunks (it is within the
    upload size limit, so in memory)."""
    if isinstance(source, io.BytesIO):
        data = source.getvalue()
    else:
        with open(source, "rb") as file:
            data = file.read()
    return io.BytesIO(_without_text_chunks(data))


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_TEXT_CHUNKS = (b"tEXt", b"zTXt", b"iTXt")


def _without_text_chunks(data: bytes) -> bytes:
    """A PNG file's bytes less its text chunks (ancillary: the PNG spec lets a decoder skip them). A file that is no
    PNG, or whose chunk list is broken, is refused as unreadable."""
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError(_unreadable())
    kept, position = [PNG_SIGNATURE], len(PNG_SIGNATURE)
    while position + 12 <= len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        end = position + 12 + length  # length, type, data, CRC
        if end > len(data):
            raise ValueError(_unreadable())
        if data[position + 4 : position + 8] not in PNG_TEXT_CHUNKS:
            kept.append(data[position:end])
        position = end
    return b"".join(kept)


def _to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB: transparent parts on white (not on whatever colour hides under alpha 0), high bit depths scaled."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if image.mode.startswith("I;16"):
            values = values / 257.0  # the full 16-bit range onto 0..255
        else:  # 32-bit integers or floats have no fixed range: stretch what is there
            low, high = float(values.min()), float(values.max())
            values = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
        return Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8), "L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, PAD_COLOUR)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image.convert("RGB")


def _fit_for_models(picture: Image.Image) -> Image.Image:
    """Pad a strip thinner than ``MODEL_MAX_ASPECT`` : 1 (centred, on white), then enlarge a picture whose shorter side
    is under ``MODEL_MIN_SIDE`` (nearest neighbour: its pixels stay pixels)."""
    width, height = picture.size
    long_side, short_side = max(width, height), min(width, height)
    if long_side > MODEL_MAX_ASPECT * short_side:
        short_side = -(-long_side // MODEL_MAX_ASPECT)
        size = (width, short_side) if width >= height else (short_side, height)
        canvas = Image.new("RGB", size, PAD_COLOUR)
        canvas.paste(picture, ((size[0] - width) // 2, (size[1] - height) // 2))
        picture, (width, height) = canvas, size
    if short_side < MODEL_MIN_SIDE:
        scale = MODEL_MIN_SIDE / short_side
        picture = picture.resize(
            (max(MODEL_MIN_SIDE, round(width * scale)), max(MODEL_MIN_SIDE, round(height * scale))),
            Image.Resampling.NEAREST,
        )
    return picture


def _unreadable() -> str:
    return (
        "The file could not be read as an image: it is corrupt, truncated or not a picture "
        f"(accepted formats: {', '.join(f for f in IMAGE_FORMATS if f != 'MPO')})."
    )


def _too_large(width: int, height: int, max_pixels: int) -> str:
    """The refusal of a picture over ``max_pixels``, in exact pixel counts (a rounded "24 megapixels" on both sides
    of the limit would not explain itself)."""
    return (
        f"The image is {width}×{height} = {width * height:,} pixels; the limit is {max_pixels:,} pixels "
        f"({max_pixels / 1e6:g} megapixels). Please scale it down and try again."
    )


def _bomb(pil_message: str, max_pixels: int) -> str:
    """The refusal of a header past PIL's decompression-bomb limit (twice ``Image.MAX_IMAGE_PIXELS``), which is then
    the limit in force if it is below ``max_pixels``; PIL's message gives the pixel count ("Image size (N pixels)")."""
    limit = min(max_pixels, 2 * Image.MAX_IMAGE_PIXELS) if Image.MAX_IMAGE_PIXELS else max_pixels
    found = re.search(r"\((\d+) pixels\)", pil_message)
    size = f"{int(found.group(1)):,} pixels" if found else f"over {limit:,} pixels"
    return (
        f"The image is {size} by its header; the limit is {limit:,} pixels ({limit / 1e6:g} megapixels). "
        "Please scale it down and try again."
    )


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
