"""AGLA-like's local view (An et al., CVPR 2025, "Assembly of Global and Local Attention"): the picture with the pixels
least relevant to the prompt blacked out, its geometry kept (no crop, no zoom).

The release ranks the pixels by a GradCAM of BLIP's image-text matching head (LAVIS ``blip_image_text_matching``
"large", text-encoder block 6, its 24 x 24 patch map upsampled with LAVIS' ``getAttMap``) and keeps the top share
``ratio = min(1 - ITC/2, 1 - 1e-5)``, ITC the same model's image-text contrastive score; everything else is set to 0
(black) in a 384 x 384 resize of the picture, which the LVLM then preprocesses (``Lackel/AGLA@efa1263
eval/augmentation.py`` L9-37, ``eval/run_llava.py`` L38, L62-68). BLIP's weights cannot be had offline, so the
relevance here is one of two stand-ins, and the method is "AGLA-like":

- the LVLM's own attention saliency (``upsampled``): the prompt's last token's head-mean attention over the image
  tokens, averaged over the layers (one prefill of the original row), laid over the part of the picture those tokens
  see (the whole picture, or LLaVA-1.5's centre crop: ``FamilyAdapter.image_grid_box``; the rest, which the model
  never sees, is left as it is), and upsampled as ``getAttMap`` upsamples the GradCAM (cubic spline, then a Gaussian
  blur of sigma 2 % of the longer side);
- on the shapes world, an oracle from the scene's ground truth (``oracle_relevance``): nearness to the visible pixels
  of the shapes the question names (of every shape where none of them is in the scene, or it names none), an upper
  bound. The scene is found by the picture's pixels among the scenes some caller remembered (``remember_scenes``: the
  shapes-world lab does).

The kept share is a parameter (0.75 by default: the release's ratio at an ITC score of 0.5), not the release's
ITC-adaptive one; the mask is made at the picture's own size, not on a 384 x 384 squash of it.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterable

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from models.shapes_world import grading, world

# LAVIS getAttMap (lavis/common/gradcam.py L11-13): its blur's sigma, as a share of the picture's longer side.
BLUR_SHARE = 0.02


def upsampled(
    grid: torch.Tensor, size: tuple[int, int], box: tuple[float, float, float, float] | None = None
) -> np.ndarray:
    """A (rows, cols) relevance map over the picture as a (height, width) float map for a picture of ``size``
    (width, height): LAVIS' ``getAttMap`` without its colouring, i.e. skimage's ``resize(order=3, mode="constant")``
    (``ndimage.zoom`` on the grid, cubic spline, zeros outside) and ``gaussian_filter(sigma = 0.02 * longer side)``.

    ``box`` (left, top, right, bottom): the part of the picture the grid lies over (``FamilyAdapter.image_grid_box``;
    default the whole picture). The map is made at that part's size; the pixels outside it, which the model never
    sees (LLaVA-1.5's centre crop leaves them out), are NaN: no relevance (``keep_top`` leaves them as they are).

    >>> upsampled(torch.tensor([[0.0, 1.0], [0.0, 0.0]]), (8, 4)).shape
    (4, 8)
    >>> bool(np.isnan(upsampled(torch.ones(2, 2), (8, 4), box=(2.0, 0.0, 6.0, 4.0))[:, [0, 1, 6, 7]]).all())
    True
    """
    width, height = size
    heat = np.asarray(grid, dtype=np.float64)
    if heat.ndim != 2 or not heat.size:
        raise ValueError(f"a relevance grid must be 2-D and non-empty, got shape {heat.shape}")
    left, top, right, bottom = (round(v) for v in (box or (0, 0, width, height)))
    right, bottom = max(right, left + 1), max(bottom, top + 1)
    factors = ((bottom - top) / heat.shape[0], (right - left) / heat.shape[1])
    heat = ndimage.zoom(heat, factors, order=3, mode="grid-constant", cval=0.0, grid_mode=True)
    heat = ndimage.gaussian_filter(heat, BLUR_SHARE * max(bottom - top, right - left))
    if (left, top, right, bottom) == (0, 0, width, height):
        return heat
    out = np.full((height, width), np.nan)
    x0, y0, x1, y1 = max(left, 0), max(top, 0), min(right, width), min(bottom, height)
    out[y0:y1, x0:x1] = heat[y0 - top : y1 - top, x0 - left : x1 - left]
    return out


def keep_top(relevance: np.ndarray, ratio: float) -> np.ndarray:
    """The pixels to keep: those at least as relevant as the pixel ranked ``int(n·ratio)`` (0-based, clamped to the
    last) in descending order, so about the top ``ratio`` share, ties kept (augmentation.py L30-33: ``where(cam <
    sorted[int(384·384·ratio)], 0, 1)``). The share and the rank are of the pixels with a relevance; a NaN one, which
    the model never sees (``upsampled``), is kept as it is: blacked, it would bleed into the edge of what the model
    sees through the preprocessing's resize.

    >>> keep_top(np.array([[4.0, 3.0], [2.0, 1.0]]), 0.5)
    array([[ True,  True],
           [ True, False]])
    """
    relevance = np.asarray(relevance, dtype=np.float64)
    unseen = np.isnan(relevance)
    flat = np.sort(relevance[~unseen])[::-1]
    return unseen | (relevance >= flat[min(int(flat.size * ratio), flat.size - 1)])


def kept_share(relevance: np.ndarray, keep: np.ndarray) -> float:
    """The share of the pixels the model sees (those with a relevance) that ``keep`` keeps."""
    return float(keep[~np.isnan(relevance)].mean())


def blacked(image: Image.Image, keep: np.ndarray) -> Image.Image:
    """``image`` (as RGB) with every pixel outside ``keep`` set to black; same size."""
    pixels = np.asarray(image.convert("RGB"))
    if keep.shape != pixels.shape[:2]:
        raise ValueError(f"a mask of shape {keep.shape} does not fit a {image.width} x {image.height} picture")
    return Image.fromarray(pixels * keep[..., None].astype(np.uint8))


# ---- the shapes world's oracle ---------------------------------------------------------------------------------------
def oracle_relevance(scene: world.Scene, question: str) -> np.ndarray:
    """(48, 48): minus each pixel's distance to the nearest visible pixel of the shapes ``question`` names (read with
    the world's grammar, ``grading.parse_question``), or of every shape where the scene has none of those (an object
    asked for that is not there) or the question names none (a description); all equal in a scene without shapes.

    >>> scene = world.Scene([world.SceneObject("circle", "red", 0, 0, cx=8, cy=8, radius=5)])
    >>> relevance = oracle_relevance(scene, "is there a circle in the image ?")
    >>> float(relevance[8, 8]), float(relevance[8, 20])
    (0.0, -7.0)
    """
    masks = world.object_masks(scene)
    parsed = grading.parse_question(question)
    named = set(parsed[1]) if parsed is not None else set()
    chosen = [i for i, obj in enumerate(scene.objects) if obj.kind in named] or list(range(len(scene.objects)))
    shown = masks[chosen].any(axis=0) if chosen else np.zeros(masks.shape[1:], dtype=bool)
    if not shown.any():
        return np.zeros(shown.shape)
    return 0.0 - ndimage.distance_transform_edt(~shown)  # 0.0 - : no negative zero on the shapes themselves


class _KnownScenes:
    """Shapes-world scenes by their rendered picture's pixels (the most recent ``size``); the app's sessions add and
    read them from their own threads, hence the lock."""

    def __init__(self, size: int = 4096):
        self.size, self.scenes, self.lock = size, OrderedDict(), threading.Lock()

    def add(self, scene: world.Scene) -> None:
        key = _pixels_key(world.render(scene))
        with self.lock:
            self.scenes[key] = scene
            self.scenes.move_to_end(key)
            while len(self.scenes) > self.size:
                self.scenes.popitem(last=False)

    def get(self, picture: Image.Image) -> world.Scene | None:
        if picture.size != (world.IMAGE_SIZE, world.IMAGE_SIZE):
            return None
        key = _pixels_key(picture)
        with self.lock:
            return self.scenes.get(key)


def _pixels_key(picture: Image.Image) -> str:
    return hashlib.sha1(np.ascontiguousarray(np.asarray(picture.convert("RGB"))).tobytes()).hexdigest()


_KNOWN = _KnownScenes()


def remember_scenes(scenes: Iterable[world.Scene]) -> None:
    """Make these scenes' ground truth known to the oracle (by their rendered pixels)."""
    for scene in scenes:
        _KNOWN.add(scene)


def known_scene(picture: Image.Image) -> world.Scene | None:
    """The remembered scene whose rendering is, pixel for pixel, ``picture``; None if there is none."""
    return _KNOWN.get(picture)
