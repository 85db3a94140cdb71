"""The contrast rows a method feeds the model, built from one request: pixels noised or augmented, and the model's own
pre-steps (CODE's description of the image, Self-Aug's choice of augmentation, AvisC's prefill attention), cached.

Pixel and prompt transforms that need no model are in ``decoding.branches``; this module puts them into rows. It
stands below the engine: a pre-step that decodes runs through the ``PreSteps`` it is handed (the comparison layer
hands in ``decoding.engine.Engine``), so that the registry (``decoding.methods``) that calls it is below the engine too.
"""

from __future__ import annotations

import hashlib
import random
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

import torch
from PIL import Image

from models.adapters.base import FamilyAdapter, RowInputs

from . import branches
from .attention import lab_attention_for  # returns every layer's weights, as eager does (AvisC's prefill attention)

ProgressFn = Callable[[str, float], None]


class PreSteps(Protocol):
    """How a method's pre-steps run the model: the engine's own decoding, handed in from above it
    (``decoding.engine.Engine`` is one)."""

    def greedy_answer(
        self, row: RowInputs, max_new_tokens: int, progress: ProgressFn | None = None, stage: str = ""
    ) -> str:
        """A plain greedy answer for one row (stripped), reporting ``(stage, share done)`` to ``progress``."""
        ...

    def first_step_logits(self, rows: list[RowInputs]) -> torch.Tensor:
        """Each row's raw next-token logits at the first step, from one batched prefill: ``(len(rows), vocab)``."""
        ...


def noised_row(original: RowInputs, step: int, seed: int) -> RowInputs:
    """The original prompt with VCD's forward-diffusion noise on its preprocessed pixels."""
    generator = torch.Generator().manual_seed(seed)
    vision = dict(original.vision_kwargs)
    vision["pixel_values"] = branches.diffusion_noise(original.vision_kwargs["pixel_values"], step, generator=generator)
    return _with_vision(original, vision)


def augmented_row(adapter: FamilyAdapter, original: RowInputs, name: str, seed: int) -> tuple[RowInputs, dict]:
    """Self-augmented VCD's augmentation on every view of the preprocessed pixels, with the same relative placement."""
    views, params = branches.augment_views(
        adapter.pixel_views(original.vision_kwargs),
        name,
        random.Random(seed),
        adapter.image_mean,
        adapter.image_std,
        generator=torch.Generator().manual_seed(seed),
    )
    vision = adapter.with_pixel_views(original.vision_kwargs, views)
    return _with_vision(original, vision), {"augmentation_params": params, "augmentation_seed": seed}


def branch_image(adapter: FamilyAdapter, row: RowInputs) -> Image.Image:
    """What the model actually sees in a row: its first preprocessed view, un-normalised, as a picture."""
    view = adapter.pixel_views(row.vision_kwargs)[0].float()
    return branches.view_to_image(view, adapter.image_mean, adapter.image_std)


def _with_vision(row: RowInputs, vision: dict) -> RowInputs:
    return RowInputs(
        input_ids=row.input_ids,
        position_ids=row.position_ids,
        token_kwargs=row.token_kwargs,
        vision_kwargs=vision,
        image_token_positions=row.image_token_positions,
        image_grid=row.image_grid,
    )


# ---- model pre-steps (cached) -------------------------------------------------------------------------------------
class _LRU:
    def __init__(self, size: int):
        self.size, self.items = size, OrderedDict()

    def get(self, key):
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        return None

    def put(self, key, value):
        self.items[key] = value
        self.items.move_to_end(key)
        while len(self.items) > self.size:
            self.items.popitem(last=False)


_DESCRIPTIONS = _LRU(64)
_CHOICES = _LRU(256)

DESCRIPTION_MAX_NEW_TOKENS = 512
SELECTION_MAX_NEW_TOKENS = 96


def prefill_image_attention(adapter: FamilyAdapter, row: RowInputs) -> torch.Tensor:
    """``(layers, image tokens)``: each language-model layer's head-mean attention of the prompt's last token over the
    row's image tokens, from one prefill of the row alone (what AvisC selects its blind tokens from)."""
    inputs = {"input_ids": row.input_ids, "attention_mask": torch.ones_like(row.input_ids), **row.token_kwargs}
    inputs = adapter.to_model({**inputs, "position_ids": row.position_ids, **row.vision_kwargs})
    positions = row.image_token_positions.to(adapter.device)
    with torch.inference_mode(), lab_attention_for(adapter.model):
        attentions = adapter.forward(**inputs, output_attentions=True).attentions
    return torch.stack([layer[0, :, -1, positions].float().mean(dim=0) for layer in attentions])


def describe_image(
    adapter: FamilyAdapter, image: Image.Image, pre_steps: PreSteps, progress: ProgressFn | None = None
) -> str:
    """CODE's self-description: greedy, up to 512 new tokens, with the image; cached per model and image."""
    key = (_model_key(adapter), _image_key(image), branches.DESCRIPTION_PROMPT, DESCRIPTION_MAX_NEW_TOKENS)
    cached = _DESCRIPTIONS.get(key)
    if cached is None:
        row = adapter.build_row(branches.DESCRIPTION_PROMPT, image)
        cached = pre_steps.greedy_answer(row, DESCRIPTION_MAX_NEW_TOKENS, progress, "describing the image")
        _DESCRIPTIONS.put(key, cached)
    return cached


def choose_augmentation(
    adapter: FamilyAdapter, question: str, pre_steps: PreSteps, progress: ProgressFn | None = None
) -> tuple[str, str, bool]:
    """Self-augmentation: the model, text-only and greedy, picks the augmentation that most disrupts this question.

    Returns (augmentation name, the model's full answer as its reason, whether the choice parsed; noise if not).
    Cached per model and question.
    """
    key = (_model_key(adapter), question)
    cached = _CHOICES.get(key)
    if cached is None:
        row = adapter.build_row(branches.build_selection_prompt(question), None)
        answer = pre_steps.greedy_answer(row, SELECTION_MAX_NEW_TOKENS, progress, "choosing an augmentation")
        name, parsed = branches.parse_augmentation_choice(answer)
        cached = (name, answer, parsed)
        _CHOICES.put(key, cached)
    return cached


def _model_key(adapter: FamilyAdapter):
    return (adapter.model_id, id(adapter.model))


def _image_key(image: Image.Image) -> str:
    digest = hashlib.sha1(image.tobytes())
    digest.update(f"{image.mode}{image.size}".encode())
    return digest.hexdigest()
