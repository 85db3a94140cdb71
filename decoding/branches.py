"""How the contrast branches' inputs are made: the pure tensor / PIL / text parts (the engine glues them to models).

- VCD: forward-diffusion noise on the preprocessed, normalised pixel tensor (:func:`diffusion_noise`).
- RITUAL: one random transform of the raw PIL image per query (:func:`ritual_transform`).
- Self-augmented VCD: the model's own choice among six augmentations (:data:`SELF_AUGMENTATION_PROMPT`,
  :func:`parse_augmentation_choice`), applied to the preprocessed views (:func:`draw_augmentation_params`,
  :func:`apply_augmentation`).
- CODE: the description prompt and the text that replaces the image (:data:`DESCRIPTION_PROMPT`,
  :func:`description_context`).
- ICD: the default disturbance system instruction (:data:`ICD_DISTURBANCE_INSTRUCTION`, ours).
- ID: the noisy instructions (:data:`ID_VARIANTS`; :data:`ID_OPPOSITE_INSTRUCTION` ours, :func:`truncated_shuffled`,
  :func:`vocabulary_words`).

Randomness: every random draw comes from an explicit argument, never from a global RNG. PIL-side and parameter draws
take ``rng``: a ``random.Random``, a ``numpy.random.Generator`` or an ``int`` seed (turned into ``random.Random``).
Tensor noise takes ``generator``: a ``torch.Generator`` or an ``int`` seed; ``None`` means seed 0, so that even a
call without a generator is reproducible (pass a generator to get independent draws across calls). Every random
choice is returned in a plain ``dict`` description so that it can be reported and replayed.
"""

from __future__ import annotations

import functools
import math
import random
import re
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance

__all__ = [
    "NUM_DIFFUSION_STEPS",
    "DEFAULT_NOISE_STEP",
    "noise_coefficients",
    "diffusion_noise",
    "RITUAL_TRANSFORMS",
    "ritual_transform",
    "AUGMENTATIONS",
    "draw_augmentation_params",
    "apply_augmentation",
    "augment_view",
    "augment_views",
    "SELF_AUGMENTATION_PROMPT",
    "build_selection_prompt",
    "parse_augmentation_choice",
    "DESCRIPTION_PROMPT",
    "description_context",
    "ICD_DISTURBANCE_INSTRUCTION",
    "ID_OPPOSITE_INSTRUCTION",
    "ID_VARIANTS",
    "truncated_shuffled",
    "vocabulary_words",
]

# ---------------------------------------------------------------------------------------------------------------------
# random helpers (random.Random or numpy Generator; never the global RNGs)
# ---------------------------------------------------------------------------------------------------------------------
def _rng(rng):
    if isinstance(rng, (random.Random, np.random.Generator)):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return random.Random(int(rng))
    raise ValueError(
        f"rng must be a random.Random, a numpy.random.Generator or an int seed, got {type(rng).__name__}"
    )


def _uniform(rng, low: float, high: float) -> float:
    """Uniform float in ``[low, high)``: numpy's Generator and ``random.Random`` both spell it ``uniform``."""
    return float(rng.uniform(low, high))


def _randint(rng, low: int, high: int) -> int:
    """Uniform integer in ``[low, high]`` (both inclusive)."""
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(low, high + 1))
    return int(rng.randint(low, high))


def _permutation(rng, n: int) -> list[int]:
    if isinstance(rng, np.random.Generator):
        return [int(i) for i in rng.permutation(n)]
    return rng.sample(range(n), n)


def _torch_generator(generator) -> torch.Generator:
    if generator is None:
        return torch.Generator().manual_seed(0)
    if isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, (int, np.integer)) and not isinstance(generator, bool):
        return torch.Generator().manual_seed(int(generator))
    raise ValueError(f"generator must be a torch.Generator, an int seed or None, got {type(generator).__name__}")


# ---------------------------------------------------------------------------------------------------------------------
# VCD: forward-diffusion noise
# ---------------------------------------------------------------------------------------------------------------------
NUM_DIFFUSION_STEPS = 1000
DEFAULT_NOISE_STEP = 500


@functools.lru_cache(maxsize=1)
def _alphas_bar() -> torch.Tensor:
    # Schedule computed in float64 (the authors use float32; the difference is ~1e-7 and only makes it more exact).
    betas = torch.sigmoid(torch.linspace(-6.0, 6.0, NUM_DIFFUSION_STEPS, dtype=torch.float64)) * (5e-3 - 1e-5) + 1e-5
    return torch.cumprod(1.0 - betas, dim=0)


def _noise_step(step) -> int:
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
        raise ValueError(f"noise step must be an integer in [0, {NUM_DIFFUSION_STEPS - 1}], got {step!r}")
    step = int(step)
    if not 0 <= step < NUM_DIFFUSION_STEPS:
        raise ValueError(f"noise step must be in [0, {NUM_DIFFUSION_STEPS - 1}], got {step}")
    return step


def noise_coefficients(step: int = DEFAULT_NOISE_STEP) -> tuple[float, float]:
    """``(sqrt(abar_T), sqrt(1 - abar_T))`` of VCD's schedule at ``T = step``.

    ``beta_t = sigmoid(linspace(-6, 6, 1000)) * (5e-3 - 1e-5) + 1e-5``, ``abar = cumprod(1 - beta)`` and ``T`` is a
    **0-based** index into that cumulative product, as in the authors' code (``alphas_bar_sqrt[noise_step]``), i.e.
    ``abar_T = prod_{t=0..T} (1 - beta_t)``: ``T = 500`` gives 0.8630 / 0.5052 (a 1-based reading
    would give 0.8641 / 0.5033). Valid steps: 0..999.
    """
    step = _noise_step(step)
    abar = float(_alphas_bar()[step])
    return math.sqrt(abar), math.sqrt(1.0 - abar)


def diffusion_noise(pixel_values: torch.Tensor, step: int = DEFAULT_NOISE_STEP, generator=None) -> torch.Tensor:
    """VCD's distortion: ``x_T = sqrt(abar_T) * x + sqrt(1 - abar_T) * eps``, ``eps ~ N(0, 1)`` elementwise.

    Acts on the *preprocessed, normalised* pixel tensor, of any shape. Computed in float32, returned in the input's
    dtype and device. The noise is drawn on the generator's device (CPU for seeds / None) and moved to the input's
    device, so a given seed gives the same noise everywhere.

    Args:
        pixel_values: floating tensor of any shape.
        step: diffusion step ``T`` in ``[0, 999]`` (0-based, see :func:`noise_coefficients`); default 500.
        generator: ``torch.Generator``, int seed, or None (= seed 0).
    """
    if not isinstance(pixel_values, torch.Tensor) or not pixel_values.is_floating_point():
        raise ValueError("pixel_values must be a floating torch.Tensor")
    a, b = noise_coefficients(step)
    g = _torch_generator(generator)
    eps = torch.randn(pixel_values.shape, generator=g, device=g.device, dtype=torch.float32)
    x = pixel_values.to(torch.float32)
    out = a * x + b * eps.to(x.device)
    return out.to(pixel_values.dtype)


# ---------------------------------------------------------------------------------------------------------------------
# RITUAL: random transforms of the raw PIL image
# ---------------------------------------------------------------------------------------------------------------------
RITUAL_TRANSFORMS: tuple[str, ...] = (
    "horizontal_flip",
    "vertical_flip",
    "rotation",
    "color_jitter",
    "gaussian_blur",
    "random_resized_crop",
)

ROTATION_DEGREES = 180.0
JITTER_BRIGHTNESS = 1.0
JITTER_CONTRAST = 1.0
JITTER_SATURATION = 1.0
JITTER_HUE = 0.5
BLUR_KERNEL_SIZE = 13
BLUR_SIGMA = (1.5, 2.0)
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)


def _adjust_hue(img: Image.Image, hue_factor: float) -> Image.Image:
    """torchvision's PIL ``adjust_hue``: shift the HSV hue channel by ``hue_factor * 255`` with uint8 wrap-around."""
    h, s, v = img.convert("HSV").split()
    shift = int(hue_factor * 255) % 256  # np.uint8(hue_factor * 255) in torchvision: truncation, then wrap
    np_h = ((np.asarray(h, dtype=np.int32) + shift) % 256).astype(np.uint8)
    return Image.merge("HSV", (Image.fromarray(np_h, "L"), s, v)).convert(img.mode)


def _color_jitter(img: Image.Image, rng) -> tuple[Image.Image, dict]:
    """torchvision ``ColorJitter(brightness=1, contrast=1, saturation=1, hue=0.5)`` on a PIL image.

    Like torchvision: a random order of the four adjustments, then the four factors drawn uniformly from
    ``[max(0, 1 - b), 1 + b]`` (brightness, contrast, saturation) and ``[-hue, hue]``; PIL's ImageEnhance does
    brightness / contrast / colour (= saturation), the hue shift is done in HSV.
    """
    names = ("brightness", "contrast", "saturation", "hue")
    order = _permutation(rng, 4)
    b = _uniform(rng, max(0.0, 1.0 - JITTER_BRIGHTNESS), 1.0 + JITTER_BRIGHTNESS)
    c = _uniform(rng, max(0.0, 1.0 - JITTER_CONTRAST), 1.0 + JITTER_CONTRAST)
    s = _uniform(rng, max(0.0, 1.0 - JITTER_SATURATION), 1.0 + JITTER_SATURATION)
    h = _uniform(rng, -JITTER_HUE, JITTER_HUE)
    out = img
    for i in order:
        if i == 0:
            out = ImageEnhance.Brightness(out).enhance(b)
        elif i == 1:
            out = ImageEnhance.Contrast(out).enhance(c)
        elif i == 2:
            out = ImageEnhance.Color(out).enhance(s)
        else:
            out = _adjust_hue(out, h)
    desc = {"order": [names[i] for i in order], "brightness": b, "contrast": c, "saturation": s, "hue": h}
    return out, desc


def _gaussian_blur(img: Image.Image, sigma: float, kernel_size: int = BLUR_KERNEL_SIZE) -> Image.Image:
    """torchvision ``GaussianBlur(kernel_size, sigma)``: a true ``kernel_size``-tap separable Gaussian.

    PIL's ``ImageFilter.GaussianBlur`` takes a radius (and approximates with box blurs) and ``ImageFilter.Kernel`` is
    at most 5x5, so the kernel is built like torchvision's (``x = linspace(-(k-1)/2, (k-1)/2, k)``,
    ``exp(-x^2 / (2 sigma^2))`` normalised) and applied with a float32 conv2d, reflect padding, rounding back to
    uint8. Images smaller than the padding (< 7 px on a side) use replicate padding instead (reflect is undefined).
    """
    arr = np.asarray(img, dtype=np.uint8)
    x = torch.from_numpy(arr.copy()).to(torch.float32).permute(2, 0, 1).unsqueeze(0)  # (1, C, H, W)
    channels = x.shape[1]
    half = (kernel_size - 1) * 0.5
    t = torch.linspace(-half, half, kernel_size, dtype=torch.float32)
    k1 = torch.exp(-0.5 * (t / sigma) ** 2)
    k1 = k1 / k1.sum()
    pad = kernel_size // 2
    mode = "reflect" if min(x.shape[-2:]) > pad else "replicate"
    x = F.pad(x, (pad, pad, pad, pad), mode=mode)
    x = F.conv2d(x, k1.view(1, 1, 1, -1).expand(channels, 1, 1, kernel_size), groups=channels)
    x = F.conv2d(x, k1.view(1, 1, -1, 1).expand(channels, 1, kernel_size, 1), groups=channels)
    out = x.round().clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(out), img.mode)


def _resized_crop_params(height: int, width: int, rng) -> tuple[int, int, int, int, bool]:
    """torchvision ``RandomResizedCrop.get_params``: (top, left, h, w, fell_back). 10 tries of a random area in
    ``scale`` times the image and a log-uniform aspect ratio in ``ratio``; else the central crop clamped to
    ``ratio``."""
    area = height * width
    log_lo, log_hi = math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])
    for _ in range(10):
        target_area = area * _uniform(rng, CROP_SCALE[0], CROP_SCALE[1])
        aspect = math.exp(_uniform(rng, log_lo, log_hi))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = _randint(rng, 0, height - h)
            left = _randint(rng, 0, width - w)
            return top, left, h, w, False
    in_ratio = width / height
    if in_ratio < min(CROP_RATIO):
        w = width
        h = int(round(w / min(CROP_RATIO)))
    elif in_ratio > max(CROP_RATIO):
        h = height
        w = int(round(h * max(CROP_RATIO)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w, True


def ritual_transform(
    image: Image.Image,
    rng,
    output_size: tuple[int, int] | None = None,
    name: str | None = None,
) -> tuple[Image.Image, dict]:
    """RITUAL's contrast image: one transform of the raw image, chosen uniformly per query (or forced by ``name``).

    The six transforms, with the paper's parameters (torchvision semantics, reimplemented with PIL / torch):

    - ``horizontal_flip`` / ``vertical_flip``;
    - ``rotation``: angle uniform in [-180, 180] degrees, counter-clockwise, nearest neighbour, same canvas size,
      black fill (``RandomRotation(180)``);
    - ``color_jitter``: brightness 1, contrast 1, saturation 1, hue 0.5, random order;
    - ``gaussian_blur``: 13-tap kernel, sigma uniform in [1.5, 2.0];
    - ``random_resized_crop``: scale [0.08, 1], ratio [3/4, 4/3], resized (bilinear, antialiased) to
      ``output_size``.

    Args:
        image: the raw PIL image; converted to RGB first (the models take RGB).
        rng: ``random.Random``, ``numpy.random.Generator`` or int seed.
        output_size: ``(height, width)`` for the resized crop (the model's input size); None = the image's size.
            Other transforms keep the image's size.
        name: force one of :data:`RITUAL_TRANSFORMS` (tests, UI); then no draw is spent on the choice.

    Returns:
        ``(transformed image, description)``; the description has ``"name"`` and every drawn parameter.
    """
    if not isinstance(image, Image.Image):
        raise ValueError(f"image must be a PIL.Image.Image, got {type(image).__name__}")
    rng = _rng(rng)
    if name is None:
        name = RITUAL_TRANSFORMS[_randint(rng, 0, len(RITUAL_TRANSFORMS) - 1)]
    elif name not in RITUAL_TRANSFORMS:
        raise ValueError(f"unknown RITUAL transform {name!r}; expected one of {RITUAL_TRANSFORMS}")
    img = image if image.mode == "RGB" else image.convert("RGB")
    width, height = img.size

    if name == "horizontal_flip":
        return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT), {"name": name}
    if name == "vertical_flip":
        return img.transpose(Image.Transpose.FLIP_TOP_BOTTOM), {"name": name}
    if name == "rotation":
        angle = _uniform(rng, -ROTATION_DEGREES, ROTATION_DEGREES)
        out = img.rotate(angle, resample=Image.Resampling.NEAREST, expand=False, fillcolor=(0, 0, 0))
        return out, {"name": name, "angle": angle}
    if name == "color_jitter":
        out, desc = _color_jitter(img, rng)
        return out, {"name": name, **desc}
    if name == "gaussian_blur":
        sigma = _uniform(rng, BLUR_SIGMA[0], BLUR_SIGMA[1])
        return _gaussian_blur(img, sigma), {"name": name, "kernel_size": BLUR_KERNEL_SIZE, "sigma": sigma}
    # random_resized_crop
    if output_size is None:
        out_h, out_w = height, width
    else:
        if len(output_size) != 2 or any(int(s) <= 0 for s in output_size):
            raise ValueError(f"output_size must be (height, width) with positive sizes, got {output_size!r}")
        out_h, out_w = int(output_size[0]), int(output_size[1])
    top, left, h, w, fell_back = _resized_crop_params(height, width, rng)
    out = img.crop((left, top, left + w, top + h)).resize((out_w, out_h), Image.Resampling.BILINEAR)
    desc = {
        "name": name,
        "top": top,
        "left": left,
        "height": h,
        "width": w,
        "scale": (h * w) / (height * width),
        "ratio": w / h,
        "output_size": (out_h, out_w),
        "central_fallback": fell_back,
    }
    return out, desc


# ---------------------------------------------------------------------------------------------------------------------
# Self-augmented VCD: augmentations of the preprocessed views
# ---------------------------------------------------------------------------------------------------------------------
AUGMENTATIONS: tuple[str, ...] = (
    "vertical_flip",
    "horizontal_flip",
    "color_inversion",
    "random_crop",
    "random_mask",
    "noise",
)


def draw_augmentation_params(name: str, rng) -> dict:
    """Draw the random parameters of one augmentation *once per query*, in relative coordinates.

    ``random_crop`` / ``random_mask`` draw ``{"top": u, "left": v}`` with ``u, v`` uniform in [0, 1]: the fraction of
    the free range at which the square sits, so on a view of size ``(h, w)`` with side ``s = min(h, w) // 2`` the
    square starts at ``(round(u * (h - s)), round(v * (w - s)))`` (``"side": 0.5`` records that fraction of
    ``min(h, w)``). Applying the same dict to every view of the image
    (base view, high-resolution canvas...) puts the square at the same relative place in each, edges aligned.
    ``noise`` records its diffusion step (500); flips and inversion have no parameters.

    Returns a dict with ``"name"`` plus the parameters: it is also the description to report.
    """
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}; expected one of {AUGMENTATIONS}")
    rng = _rng(rng)
    if name in ("random_crop", "random_mask"):
        return {"name": name, "top": _uniform(rng, 0.0, 1.0), "left": _uniform(rng, 0.0, 1.0), "side": 0.5}
    if name == "noise":
        return {"name": name, "step": DEFAULT_NOISE_STEP}
    return {"name": name}


def _square(h: int, w: int, params: dict) -> tuple[int, int, int]:
    """(top, left, side) in pixels of the square described by relative ``params`` on an ``h x w`` view.

    ``side = int(min(h, w) * params["side"])`` (``side`` = 0.5 by default: ``min(h, w) // 2``, the size Self-Aug
    uses for crop and mask: ``crop_ratio`` / ``mask_ratio`` 2.0 in its ``src/eval/pope.py``)."""
    u, v = float(params["top"]), float(params["left"])
    frac = float(params.get("side", 0.5))
    if not (0.0 <= u <= 1.0 and 0.0 <= v <= 1.0):
        raise ValueError(f"relative top/left must be in [0, 1], got {u}, {v}")
    if not 0.0 < frac <= 1.0:
        raise ValueError(f"relative side must be in (0, 1], got {frac}")
    side = max(1, int(min(h, w) * frac))
    return int(round(u * (h - side))), int(round(v * (w - side))), side


def _channel_stats(values, name: str, channels: int, like: torch.Tensor) -> torch.Tensor:
    if values is None:
        raise ValueError(f"color_inversion needs the processor's image {name}")
    t = torch.as_tensor(values, dtype=torch.float32, device=like.device).flatten()
    if t.numel() != channels:
        raise ValueError(f"image {name} must have {channels} values (one per channel), got {t.numel()}")
    return t.view(channels, 1, 1)


def apply_augmentation(
    view: torch.Tensor,
    name: str,
    params: dict | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    generator=None,
) -> torch.Tensor:
    """Apply one self-augmentation to a preprocessed, normalised view ``(3, H, W)`` (or ``(..., C, H, W)``).

    - ``vertical_flip`` / ``horizontal_flip``: flip along H / W;
    - ``color_inversion``: un-normalise with ``mean`` / ``std``, clamp to [0, 1], ``1 - x``, re-normalise;
    - ``random_crop``: the square of side ``min(H, W) // 2`` at ``params``' relative position, resized back to
      ``(H, W)`` (bilinear, ``align_corners=False``);
    - ``random_mask``: that square set to 0 in normalised space (the dataset's mean colour, not black);
    - ``noise``: :func:`diffusion_noise` at ``params["step"]`` (500), drawn from ``generator``.

    Computed in float32, returned in the view's dtype; the input is not modified. ``params`` come from
    :func:`draw_augmentation_params` (only needed for crop / mask / noise).
    """
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}; expected one of {AUGMENTATIONS}")
    if not isinstance(view, torch.Tensor) or not view.is_floating_point() or view.dim() < 3:
        raise ValueError("view must be a floating tensor of shape (C, H, W) or (..., C, H, W)")
    if params is not None and params.get("name", name) != name:
        raise ValueError(f"params were drawn for {params.get('name')!r}, not {name!r}")
    x = view.to(torch.float32)
    h, w = x.shape[-2], x.shape[-1]

    if name == "vertical_flip":
        out = x.flip(-2)
    elif name == "horizontal_flip":
        out = x.flip(-1)
    elif name == "color_inversion":
        c = x.shape[-3]
        m = _channel_stats(mean, "mean", c, x)
        s = _channel_stats(std, "std", c, x)
        if bool((s <= 0).any()):
            raise ValueError("image std must be > 0")
        out = ((1.0 - (x * s + m).clamp(0.0, 1.0)) - m) / s
    elif name in ("random_crop", "random_mask"):
        if params is None or "top" not in params or "left" not in params:
            raise ValueError(f"{name} needs params with relative 'top' and 'left' (see draw_augmentation_params)")
        top, left, side = _square(h, w, params)
        if name == "random_mask":
            out = x.clone()
            out[..., top : top + side, left : left + side] = 0.0
        else:
            patch = x[..., top : top + side, left : left + side]
            lead = patch.shape[:-2]
            flat = patch.reshape(-1, 1, side, side)  # bilinear acts per channel: fold every leading dim into batch
            out = F.interpolate(flat, size=(h, w), mode="bilinear", align_corners=False).reshape(*lead, h, w)
    else:  # noise
        step = DEFAULT_NOISE_STEP if params is None else params.get("step", DEFAULT_NOISE_STEP)
        return diffusion_noise(view, step=step, generator=generator)
    return out.to(view.dtype)


def augment_view(
    view: torch.Tensor,
    name: str,
    rng,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    generator=None,
) -> tuple[torch.Tensor, dict]:
    """Draw ``name``'s parameters from ``rng`` and apply them to one view: ``(augmented view, description)``."""
    params = draw_augmentation_params(name, rng)
    return apply_augmentation(view, name, params, mean, std, generator), params


def augment_views(
    views: Sequence[torch.Tensor],
    name: str,
    rng,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    generator=None,
) -> tuple[list[torch.Tensor], dict]:
    """All views of one image with the *same* relative parameters (drawn once): ``(augmented views, description)``.

    For ``noise`` the views get independent noise drawn one after another from ``generator`` (a seed or None is
    turned into one generator shared by all views, so the views do not get correlated noise).
    """
    params = draw_augmentation_params(name, rng)
    g = _torch_generator(generator) if name == "noise" else generator
    return [apply_augmentation(v, name, params, mean, std, g) for v in views], params


def view_to_image(view: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> Image.Image:
    """A normalised view ``(3, H, W)`` as the picture it encodes: ``x * std + mean``, clamped to [0, 1], 8-bit RGB.

    Used to show users the noised / augmented / transformed input a contrast branch really fed the model.
    """
    if not isinstance(view, torch.Tensor) or view.dim() != 3:
        raise ValueError("view must be a tensor of shape (C, H, W)")
    x = view.detach().to("cpu", torch.float32)
    c = x.shape[0]
    pixels = (x * _channel_stats(std, "std", c, x) + _channel_stats(mean, "mean", c, x)).clamp(0.0, 1.0)
    array = (pixels * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(array if c == 3 else array[..., 0])


# ---------------------------------------------------------------------------------------------------------------------
# Self-augmented VCD: the selection prompt and its parser
# ---------------------------------------------------------------------------------------------------------------------
SELF_AUGMENTATION_PROMPT = """\
You will be asked a question about an image, but first help choose how to damage that image. The goal is to pick \
the ONE image augmentation that would most disrupt the information needed to answer this particular question.

The available augmentations and what each one destroys:
- vertical flip: turns the image upside down; breaks above/below relations, up/down orientation and anything \
that depends on which way is up.
- horizontal flip: mirrors the image left to right; breaks left/right relations and the reading direction of text.
- color inversion: replaces every colour with its opposite; breaks questions about colours, lighting and shades.
- random crop: keeps only a random part of the image, enlarged; loses the global context, the overall scene \
layout and objects near the edges.
- random mask: covers a random square region with a flat patch; hides objects, which breaks questions about \
whether something is present, how many there are, or what an object's attributes are.
- noise: adds heavy random noise; destroys fine detail, textures, small objects and small printed text.

Examples:
Question: Is the lamp above or below the painting?
Reason: The answer depends on the vertical arrangement, which an upside-down image reverses.
Choice: vertical flip

Question: What colour is the bus?
Reason: The question is about a colour, and inverting the colours changes it.
Choice: color inversion

Question: How many people are sitting on the bench?
Reason: Counting needs every person to be visible; hiding a region removes some of them.
Choice: random mask

Question: What brand name is printed on the mug?
Reason: Reading small text needs fine detail, which noise wipes out.
Choice: noise

Question: Is the dog to the left of the bicycle?
Reason: Mirroring the image swaps left and right.
Choice: horizontal flip

Now the real question. Do not answer it. Give a one-sentence reason, then end with a final line of the form \
"Choice: <augmentation>", using one of: vertical flip, horizontal flip, color inversion, random crop, random mask, \
noise.

Question: {question}
Reason:"""

# Keywords searched (case-insensitively) after the last "choice:", mapped to augmentation names.
_CHOICE_KEYWORDS: tuple[tuple[str, str], ...] = (
    ("crop", "random_crop"),
    ("horizontal", "horizontal_flip"),
    ("vertical", "vertical_flip"),
    ("inver", "color_inversion"),
    ("mask", "random_mask"),
    ("noise", "noise"),
)
_CHOICE_RE = re.compile(r"choice\s*:", re.IGNORECASE)
FALLBACK_AUGMENTATION = "noise"


def build_selection_prompt(question: str) -> str:
    """The text-only prompt asking the model which augmentation would most disrupt answering ``question``."""
    if not isinstance(question, str):
        raise ValueError(f"question must be a str, got {type(question).__name__}")
    return SELF_AUGMENTATION_PROMPT.replace("{question}", question.strip())


def parse_augmentation_choice(text: str) -> tuple[str, bool]:
    """Parse the model's answer to :func:`build_selection_prompt`: ``(augmentation name, parsed_ok)``.

    Looks at the text after the *last* ``"choice:"`` (case-insensitive; spaces before the colon allowed) and maps
    keywords by substring: crop -> random_crop, horizontal -> horizontal_flip, vertical -> vertical_flip,
    inver -> color_inversion, mask -> random_mask, noise -> noise. If several keywords appear, the one that occurs
    *first* wins (Self-Aug's paper does not say; the first mention is the model's choice, later ones tend
    to be explanations). No ``"choice:"`` or no keyword after it: ``("noise", False)``.
    """
    if not isinstance(text, str):
        return FALLBACK_AUGMENTATION, False
    matches = list(_CHOICE_RE.finditer(text))
    if not matches:
        return FALLBACK_AUGMENTATION, False
    rest = text[matches[-1].end():].lower()
    best: tuple[int, str] | None = None
    for keyword, aug in _CHOICE_KEYWORDS:
        pos = rest.find(keyword)
        if pos >= 0 and (best is None or pos < best[0]):
            best = (pos, aug)
    if best is None:
        return FALLBACK_AUGMENTATION, False
    return best[1], True


# ---------------------------------------------------------------------------------------------------------------------
# CODE and ICD texts
# ---------------------------------------------------------------------------------------------------------------------
DESCRIPTION_PROMPT = (
    "Describe this image in as much detail as you can. Go through every visible element: the objects and people, "
    "their number, colours, sizes, materials and positions, any text or symbols, and the background and setting. "
    "Explain how the elements relate to and interact with each other. Write the description so that someone who "
    "cannot see the image could answer any question about it from your description alone."
)


def description_context(description: str) -> str:
    """The text that stands in for the image in CODE's contrast prompt (placed before the question)."""
    if not isinstance(description, str):
        raise ValueError(f"description must be a str, got {type(description).__name__}")
    return "Here is a description of an image:\n" + description.strip() + "\n\nBased on this description:"


# ICD's default instruction, in our own words (ICD's ``instruction`` parameter takes any other): the authors' LLaVA
# script runs five of theirs, p1k0pan/ICD@2fa44c5 experiments/gen_scripts/icd_llava_pope.py L117–122.
ICD_DISTURBANCE_INSTRUCTION = (
    "You are an inattentive assistant who only glanced at the image for a moment. Give a vague, hazy and somewhat "
    "confused impression of what it might show, mixing up details and guessing freely instead of looking closely."
)


# ---------------------------------------------------------------------------------------------------------------------
# Instructive Decoding's noisy instructions (the question is the instruction, the image the input)
# ---------------------------------------------------------------------------------------------------------------------
# ID's default meta-instruction, in our own words (``instruction`` takes any other): the authors' is at
# joonkeekim/Instructive-Decoding@56c0348 src/sni_generator.py L55–56 (and src/mmlu_generator.py L33–37).
ID_OPPOSITE_INSTRUCTION = "Answer wrongly on purpose: whatever you are asked, reply with the opposite of the truth."

# ID's trunc_shuf keeps this share of the instruction's words (src/run_eval.py L87: --trunc_rate 0.6).
ID_TRUNCATION_RATE = 0.6

# The noisy-instruction variants, by the number ID's ``variant`` parameter takes (the authors' --neg_type names).
ID_VARIANTS = ("opposite_full", "opposite", "none", "trunc_shuf", "random_words")


def truncated_shuffled(instruction: str, rng, rate: float = ID_TRUNCATION_RATE) -> str:
    """ID's ``trunc_shuf`` instruction: ``int(rate · n)`` of the instruction's ``n`` words, drawn without replacement
    in random order, joined by spaces, with a full stop (``src/utils.py`` L20–34, ``src/sni_generator.py`` L47–50).
    The release first slices off the definition's last five characters (meant for its ".\\n\\n" ending, it also
    takes two letters of the last word) and its "Definition:" label; a question has neither, so neither is done here.

    >>> truncated_shuffled("Is there a red square in the image?", random.Random(0))
    'the image? red Is.'
    """
    words = instruction.split()
    return " ".join(_rng(rng).sample(words, int(rate * len(words)))) + "."


def vocabulary_words(tokens: Sequence[str]) -> list[str]:
    """Whole words of a tokenizer's vocabulary, for ID's ``random_words`` (the release draws from NLTK's English word
    list, which is not shipped here): pieces of three or more ASCII letters, only those that start a word (``▁`` or
    ``Ġ``) where the vocabulary marks word starts; sorted, without repeats.

    >>> vocabulary_words(["▁red", "▁a", "ing", "▁square", "<unk>", "▁red"])
    ['red', 'square']
    """
    marked = any(token[:1] in ("▁", "Ġ") for token in tokens)
    words = {token.lstrip("▁Ġ") for token in tokens if not marked or token[:1] in ("▁", "Ġ")}
    return sorted(word for word in words if len(word) >= 3 and word.isascii() and word.isalpha())
