"""Logic shared by the family adapters: chat prompt building, batching of pixel tensors, any-res tiles."""

from __future__ import annotations

import functools
import math

import torch
from PIL import Image

from ._text import Neutraliser, check_text, replace_surrogates, role_words
from .base import FamilyAdapter, RowInputs


class ChatAdapter(FamilyAdapter):
    """``build_row`` through the processor's chat template; subclasses say where positions and image tokens are.

    Subclass hooks: ``vision_keys`` (the processor outputs that are pixel inputs), ``token_keys`` (per-token tensors
    the model needs besides input_ids), ``_position_ids`` and ``_image_tokens``.
    """

    vision_keys: tuple[str, ...] = ("pixel_values",)
    token_keys: tuple[str, ...] = ()
    processor_kwargs: dict = {}  # what the family's processor is always called with (fixed choices, said where set)

    # ---- prompts -----------------------------------------------------------------------------------------------------
    def messages(self, question: str, *, with_image: bool, system: str | None = None,
                 context: str | None = None) -> list[dict]:
        """The chat of one row. Every text in it is the caller's, and is text only: ValueError for a character no
        tokenizer encodes, and no string in it becomes an image placeholder, a control token or a role word
        (``_text.Neutraliser``), so the prompt always holds at most one image and exactly one user turn."""
        question = self.user_text(question, "the question")
        # CODE's description is the model's own output and ICD's instruction the library's: not refused, but kept
        # from forming control strings too (and a lone surrogate, which no tokenizer encodes, made U+FFFD).
        context = self._neutraliser(replace_surrogates(context)) if context else None
        system = self._neutraliser(replace_surrogates(system)) if system else None
        return self._chat(question, with_image=with_image, system=system, context=context)

    def _chat(self, question: str, *, with_image: bool, system: str | None, context: str | None) -> list[dict]:
        messages = []
        if system:
            messages.append({"role": "system", "content": [{"type": "text", "text": system}]})
        content = [{"type": "image"}] if with_image else []
        content.append({"type": "text", "text": (context + "\n\n" if context else "") + question})
        messages.append({"role": "user", "content": content})
        return messages

    def user_text(self, text: str, what: str = "the question") -> str:
        """``text`` checked (``_text.check_text``) and with its control strings broken (``control_strings``)."""
        return self._neutraliser(check_text(text, what))

    @functools.cached_property
    def _neutraliser(self) -> Neutraliser:
        return Neutraliser(self.control_strings)

    @property
    def control_strings(self) -> set[str]:
        """What a user's text must not hold as such: the tokenizer's added tokens (special ones included, which it
        matches anywhere in a string), the processor's image and video placeholders, and the role words of the chat
        template's own text (rendered around marker texts, which are then left out)."""
        tokenizer = self.tokenizer
        strings = {str(token) for token in getattr(tokenizer, "all_special_tokens", [])}
        strings |= {str(token) for token in getattr(tokenizer, "added_tokens_decoder", {}).values()}
        for name in ("image_token", "video_token", "boi_token", "eoi_token"):
            value = getattr(self.processor, name, None)
            if isinstance(value, str):
                strings.add(value)
        marker = "\x00"
        probe = self._chat(marker, with_image=True, system=marker, context=marker)
        template = self.processor.apply_chat_template(probe, add_generation_prompt=True, tokenize=False)
        return strings | role_words(template.replace(marker, " "))

    def prompt_text(self, question: str, *, with_image: bool, system: str | None = None,
                    context: str | None = None) -> str:
        """The chat-templated prompt (with the generation prompt), before image tokens are expanded."""
        messages = self.messages(question, with_image=with_image, system=system, context=context)
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def build_row(self, question, image=None, *, system=None, context=None) -> RowInputs:
        if image is not None and not isinstance(image, Image.Image):
            raise TypeError(f"image must be a PIL image or None, got {type(image).__name__}")
        text = self.prompt_text(question, with_image=image is not None, system=system, context=context)
        if image is not None:
            image = image.convert("RGB")
        encoded = self.processor(text=text, images=[image] if image is not None else None, return_tensors="pt",
                                 **self.processor_kwargs, **self._special_tokens_kwargs(text))
        input_ids = encoded["input_ids"].long()
        token_kwargs = {k: encoded[k] for k in self.token_keys if k in encoded}
        vision_kwargs = {k: encoded[k] for k in self.vision_keys if k in encoded} if image is not None else {}
        if image is not None:
            positions, grid = self._image_tokens(input_ids, vision_kwargs)
        else:
            positions, grid = torch.empty(0, dtype=torch.long), None
        return RowInputs(
            input_ids=input_ids,
            position_ids=self._position_ids(input_ids, token_kwargs, vision_kwargs),
            token_kwargs=token_kwargs,
            vision_kwargs=vision_kwargs,
            image_token_positions=positions,
            image_grid=grid,
        )

    def _special_tokens_kwargs(self, text: str) -> dict:
        """A template that writes the BOS token itself (Gemma 3's ``{{ bos_token }}``) must not get a second one
        from the tokenizer: then the prompt is tokenized without added special tokens, as ``apply_chat_template``
        with ``tokenize=True`` does."""
        bos = getattr(self.tokenizer, "bos_token", None)
        return {"add_special_tokens": False} if isinstance(bos, str) and bos and text.startswith(bos) else {}

    def _position_ids(self, input_ids, token_kwargs, vision_kwargs) -> torch.Tensor:
        return torch.arange(input_ids.shape[-1], dtype=torch.long)[None]

    def _image_tokens(self, input_ids, vision_kwargs) -> tuple[torch.Tensor, tuple[int, int]]:
        raise NotImplementedError

    # ---- tokens ------------------------------------------------------------------------------------------------------
    @property
    def image_token_id(self) -> int:
        config = self.model.config
        token_id = getattr(config, "image_token_id", None)
        if token_id is None:
            token_id = getattr(config, "image_token_index", None)
        if token_id is None:
            token_id = self.processor.image_token_id
        return int(token_id)

    def image_token_indices(self, input_ids: torch.Tensor) -> torch.Tensor:
        """All positions of image tokens in a (1, L) row."""
        return (input_ids[0] == self.image_token_id).nonzero(as_tuple=True)[0]

    # ---- pixels ------------------------------------------------------------------------------------------------------
    def batch_vision_kwargs(self, rows):
        """Concatenate along dim 0 in row order; 5-D ``pixel_values`` (any-res tiles) are zero-padded on the tile
        dimension to the longest row first, as the processors do."""
        rows = [r for r in rows if r]
        if not rows:
            return {}
        out = {}
        for key in rows[0]:
            tensors = [r[key] for r in rows]
            if key == "pixel_values" and tensors[0].dim() == 5:
                most = max(t.shape[1] for t in tensors)
                tensors = [torch.nn.functional.pad(t, (0, 0, 0, 0, 0, 0, 0, most - t.shape[1])) for t in tensors]
            out[key] = torch.cat(tensors, dim=0)
        return out

    @staticmethod
    def _replaced(vision_kwargs: dict, pixel_values: torch.Tensor) -> dict:
        out = dict(vision_kwargs)
        old = vision_kwargs["pixel_values"]
        out["pixel_values"] = pixel_values.to(dtype=old.dtype, device=old.device).contiguous()
        return out


class SingleViewAdapter(ChatAdapter):
    """One square view per image: ``pixel_values`` (1, C, H, W) (LLaVA-1.5, Gemma 3)."""

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


class TilesAndGlobalAdapter(ChatAdapter):
    """Tiles cut row-major from the image resized to rows x cols tiles, then one global view of the whole image last
    (Idefics3's global image, InternVL's thumbnail); or a single frame when the image was not split. Subclasses say
    where the frames are (``_frames``, ``_with_frames``).

    The number of tiles is in the pixels; which of rows x cols it is (3 tiles: 1 x 3 or 3 x 1) is not. It is the
    arrangement whose canvas, resized to one tile, is nearest the global view (the processor made the global view by
    resizing the same picture): right for any picture but a constant one, where every arrangement gives the same views.
    """

    def _frames(self, vision_kwargs) -> torch.Tensor:
        """(frames, C, S, S): the tiles in row-major order, then the global view."""
        raise NotImplementedError

    def _with_frames(self, vision_kwargs, frames: torch.Tensor) -> dict:
        raise NotImplementedError

    def canvas_tiles(self, vision_kwargs) -> tuple[int, int]:
        """(rows, cols) of this row's tiles; (0, 0) when the image was not split (one frame)."""
        frames = self._frames(vision_kwargs)
        tiles = frames.shape[0] - 1
        if tiles < 1:
            return 0, 0
        best = None
        for rows in (r for r in range(1, tiles + 1) if tiles % r == 0):
            canvas = _canvas(frames[:-1], rows, tiles // rows)
            small = torch.nn.functional.interpolate(canvas[None].float(), size=frames.shape[-2:], mode="area")[0]
            error = float((small - frames[-1].float()).square().mean())
            if best is None or error < best[0]:
                best = (error, rows)
        return best[1], tiles // best[1]

    def pixel_views(self, vision_kwargs):
        """The global view, then the canvas of tiles as the image they were cut from; the one frame if unsplit."""
        frames = self._frames(vision_kwargs)
        rows, cols = self.canvas_tiles(vision_kwargs)
        if rows == 0:
            return [frames[0].clone()]
        return [frames[-1].clone(), _canvas(frames[:-1], rows, cols).clone()]

    def with_pixel_views(self, vision_kwargs, views):
        frames = self._frames(vision_kwargs)
        rows, cols = self.canvas_tiles(vision_kwargs)
        channels, size_h, size_w = frames.shape[1:]
        shapes = [(channels, size_h, size_w)] + ([(channels, rows * size_h, cols * size_w)] if rows else [])
        if [tuple(v.shape) for v in views] != shapes:
            raise ValueError("views must keep the shapes given by pixel_views")
        if rows == 0:
            return self._with_frames(vision_kwargs, views[0][None])
        base, canvas = views
        tiles = canvas.reshape(channels, rows, size_h, cols, size_w).permute(1, 3, 0, 2, 4)
        tiles = tiles.reshape(rows * cols, channels, size_h, size_w)
        return self._with_frames(vision_kwargs, torch.cat([tiles, base[None].to(tiles.dtype)]))


def _canvas(tiles: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """(rows * cols, C, h, w) row-major tiles -> the (C, rows * h, cols * w) image they were cut from."""
    channels, height, width = tiles.shape[1:]
    grid = tiles.reshape(rows, cols, channels, height, width).permute(2, 0, 3, 1, 4)
    return grid.reshape(channels, rows * height, cols * width)


def vision_grid_side(model) -> int:
    """Patches per side of one square vision-tower view (LLaVA families)."""
    vision = model.config.vision_config
    return int(vision.image_size) // int(vision.patch_size)


class AnyResAdapter(ChatAdapter):
    """LLaVA-NeXT-like tiling: ``pixel_values`` (1, P, C, h, w) = the resized whole image (base view), then the crops
    of the resized-and-padded high-resolution canvas in row-major order (``divide_to_patches``), then zero tiles when
    the row was padded for batching."""

    vision_keys = ("pixel_values", "image_sizes")

    def _image_tokens(self, input_ids, vision_kwargs):
        # pack_image_features puts the base view's grid*grid features first, then the unpadded canvas features.
        side = vision_grid_side(self.model)
        positions = self.image_token_indices(input_ids)[: side * side]
        return positions, (side, side)

    @property
    def grid_pinpoints(self) -> list:
        pinpoints = getattr(self.model.config, "image_grid_pinpoints", None)
        if pinpoints is None:
            pinpoints = self.processor.image_processor.image_grid_pinpoints
        return [list(p) for p in pinpoints]

    def canvas_tiles(self, vision_kwargs) -> tuple[int, int]:
        """(rows, cols) of high-resolution tiles of this row's canvas."""
        from transformers.image_processing_utils import select_best_resolution

        size = vision_kwargs["image_sizes"][0].tolist()
        tile_h, tile_w = vision_kwargs["pixel_values"].shape[-2:]
        height, width = select_best_resolution(size, self.grid_pinpoints)
        return math.ceil(height / tile_h), math.ceil(width / tile_w)

    def pixel_views(self, vision_kwargs):
        pixels = vision_kwargs["pixel_values"][0]  # (P, C, h, w)
        rows, cols = self.canvas_tiles(vision_kwargs)
        if 1 + rows * cols > pixels.shape[0]:
            raise ValueError(f"row has {pixels.shape[0]} tiles, expected 1 + {rows}x{cols}")
        tiles = pixels[1 : 1 + rows * cols]
        channels, tile_h, tile_w = tiles.shape[1:]
        canvas = tiles.reshape(rows, cols, channels, tile_h, tile_w).permute(2, 0, 3, 1, 4)
        return [pixels[0].clone(), canvas.reshape(channels, rows * tile_h, cols * tile_w).clone()]

    def with_pixel_views(self, vision_kwargs, views):
        base, canvas = views
        pixels = vision_kwargs["pixel_values"].clone()
        rows, cols = self.canvas_tiles(vision_kwargs)
        channels, tile_h, tile_w = pixels.shape[2:]
        if tuple(base.shape) != (channels, tile_h, tile_w) or tuple(canvas.shape) != (
            channels, rows * tile_h, cols * tile_w):
            raise ValueError("views must keep the shapes given by pixel_views")
        tiles = canvas.reshape(channels, rows, tile_h, cols, tile_w).permute(1, 3, 0, 2, 4)
        pixels[0, 0] = base.to(pixels.dtype)
        pixels[0, 1 : 1 + rows * cols] = tiles.reshape(rows * cols, channels, tile_h, tile_w).to(pixels.dtype)
        return self._replaced(vision_kwargs, pixels)

    @property
    def image_size(self):
        size = int(self.model.config.vision_config.image_size)
        return (size, size)
