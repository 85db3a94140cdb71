"""Each method as data: which contrast rows it feeds and which rule combines them.

A method's plan is built in two separate parts, as the guide asks: *branch construction* (noise, transforms,
augmentations, descriptions: `decoding.branches` and the model pre-steps here) and the per-step *rule*
(`decoding.rules`). The engine runs every plan the same way.
"""

from __future__ import annotations

import hashlib
import random
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from models.adapters.base import FamilyAdapter, RowInputs

from . import branches, rules
from .engine import Combination, Engine, SamplingConfig, Side

METHODS = ("vcd", "ritual", "ritual_vcd", "savcd", "code", "m3id", "icd")

METHOD_TITLES = {
    "vcd": "VCD: contrast with a noised image",
    "ritual": "RITUAL: add a randomly transformed image",
    "ritual_vcd": "RITUAL + VCD: transformed image added, noised image subtracted",
    "savcd": "Self-augmented VCD: the model picks its augmentation; entropy-adaptive threshold",
    "code": "CODE: contrast with the model's own description",
    "m3id": "M3ID: contrast with the prompt without the image, growing with each token",
    "icd": "ICD: contrast with a disturbing system instruction",
}

# Visual dependence is measured against this distortion, the same for every method and both panels.
VISUAL_DEPENDENCE_NOISE_STEP = 500

ProgressFn = Callable[[str, float], None]


@dataclass
class MethodPlan:
    """The method side's contrast rows, its rule, and what was done to build them (reported to the user)."""

    method: str
    contrast_rows: dict[str, RowInputs]
    combine: Callable[[dict[str, torch.Tensor], int], Combination]
    info: dict[str, Any] = field(default_factory=dict)


def resolve_params(method: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """The method's defaults overridden by ``params``; unknown names and bad values raise ValueError."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    specs = {spec.name: spec for spec in rules.PARAMS[method]}
    params = dict(params or {})
    unknown = sorted(set(params) - set(specs))
    if unknown:
        raise ValueError(f"{method} has no parameter(s) {unknown}; it takes {sorted(specs)}")
    resolved = {}
    for name, spec in specs.items():
        resolved[name] = spec.validate(params.get(name, spec.default))
    return resolved


def plan_method(
    adapter: FamilyAdapter,
    image: Image.Image,
    question: str,
    original: RowInputs,
    method: str,
    params: dict[str, Any],
    *,
    seed: int,
    progress: ProgressFn | None = None,
) -> MethodPlan:
    """Build the method's contrast rows from the image and question, and bind its rule to ``params``."""
    p = params
    if method == "vcd":
        noised = noised_row(original, p["noise_step"], seed)
        return MethodPlan(
            method,
            {"noised": noised},
            lambda L, t: Combination(rules.vcd(L["original"], L["noised"], alpha=p["alpha"], beta=p["beta"])),
            {"noise_step": p["noise_step"], "noise_seed": seed},
        )
    if method in ("ritual", "ritual_vcd"):
        transformed_image, transform = branches.ritual_transform(
            image, random.Random(seed), output_size=adapter.image_size
        )
        contrast = {"transformed": adapter.build_row(question, transformed_image)}
        info = {"transform": transform, "transform_seed": seed}
        if method == "ritual":
            combine = lambda L, t: Combination(  # noqa: E731
                rules.ritual(L["original"], L["transformed"], alpha=p["alpha_pos"], beta=p["beta"])
            )
        else:
            contrast["noised"] = noised_row(original, p["noise_step"], seed)
            info.update(noise_step=p["noise_step"], noise_seed=seed)
            combine = lambda L, t: Combination(  # noqa: E731
                rules.ritual_vcd(
                    L["original"], L["transformed"], L["noised"], alpha_pos=p["alpha_pos"], alpha=p["alpha"], beta=p["beta"]
                )
            )
        return MethodPlan(method, contrast, combine, info)
    if method == "savcd":
        name, reason, parsed = choose_augmentation(adapter, question, progress=progress)
        augmented, aug_info = augmented_row(adapter, original, name, seed)
        combine = lambda L, t: Combination(  # noqa: E731
            rules.savcd(L["original"], L["augmented"], alpha=p["alpha"], gamma=p["gamma"]),
            beta_t=float(rules.savcd_beta(L["original"], gamma=p["gamma"])[0]),
        )
        info = {"augmentation": name, "augmentation_reason": reason, "choice_parsed": parsed, **aug_info}
        return MethodPlan(method, {"augmented": augmented}, combine, info)
    if method == "code":
        description = describe_image(adapter, image, progress=progress)
        row = adapter.build_row(question, None, context=branches.description_context(description))
        combine = lambda L, t: _code_combination(L, p["exponent"])  # noqa: E731
        return MethodPlan(method, {"description": row}, combine, {"description": description})
    if method == "m3id":
        row = adapter.build_row(question, None)
        combine = lambda L, t: Combination(  # noqa: E731
            rules.m3id(L["original"], L["text_only"], step=t, lam=p["lam"], beta=p["beta"]),
            alpha_t=float(rules.m3id_weight(t, lam=p["lam"])),
        )
        return MethodPlan(method, {"text_only": row}, combine, {})
    if method == "icd":
        row = adapter.build_row(question, image, system=branches.ICD_DISTURBANCE_INSTRUCTION)
        combine = lambda L, t: Combination(  # noqa: E731
            rules.icd(L["original"], L["disturbed"], alpha=p["alpha"], beta=p["beta"])
        )
        return MethodPlan(method, {"disturbed": row}, combine, {"instruction": branches.ICD_DISTURBANCE_INSTRUCTION})
    raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")


def _code_combination(L: dict[str, torch.Tensor], exponent: float) -> Combination:
    divergence = float(rules.code_divergence(L["original"], L["description"], exponent=exponent)[0])
    return Combination(
        rules.code(L["original"], L["description"], exponent=exponent), alpha_t=1.0 - divergence, beta_t=divergence
    )


# ---- branch rows ---------------------------------------------------------------------------------------------------
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


def greedy_answer(adapter: FamilyAdapter, row: RowInputs, max_new_tokens: int, progress=None, stage="") -> str:
    """A plain greedy answer for one row, through the same engine."""
    side = Side("answer", "baseline", {"original": 0})
    text = ""
    for event in Engine(adapter).run([row], [side], max_new_tokens=max_new_tokens, sampling=SamplingConfig()):
        text += event.tokens["answer"].piece
        if progress is not None:
            progress(stage, (event.step + 1) / max_new_tokens)
    return text.strip()


def describe_image(adapter: FamilyAdapter, image: Image.Image, progress: ProgressFn | None = None) -> str:
    """CODE's self-description: greedy, up to 512 new tokens, with the image; cached per model and image."""
    key = (_model_key(adapter), _image_key(image), branches.DESCRIPTION_PROMPT, DESCRIPTION_MAX_NEW_TOKENS)
    cached = _DESCRIPTIONS.get(key)
    if cached is None:
        row = adapter.build_row(branches.DESCRIPTION_PROMPT, image)
        cached = greedy_answer(adapter, row, DESCRIPTION_MAX_NEW_TOKENS, progress, "describing the image")
        _DESCRIPTIONS.put(key, cached)
    return cached


def choose_augmentation(
    adapter: FamilyAdapter, question: str, progress: ProgressFn | None = None
) -> tuple[str, str, bool]:
    """Self-augmentation: the model, text-only and greedy, picks the augmentation that most disrupts this question.

    Returns (augmentation name, the model's full answer as its reason, whether the choice parsed; noise if not).
    Cached per model and question.
    """
    key = (_model_key(adapter), question)
    cached = _CHOICES.get(key)
    if cached is None:
        row = adapter.build_row(branches.build_selection_prompt(question), None)
        answer = greedy_answer(adapter, row, SELECTION_MAX_NEW_TOKENS, progress, "choosing an augmentation")
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
