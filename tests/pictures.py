"""The test picture of the tiny-model tests: a red square on seeded noise, 56 x 40 (not square, so that a family's
resizing and tiling show)."""

import numpy as np
from PIL import Image


def red_square_on_noise(seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 255, size=(40, 56, 3), dtype=np.uint8)
    pixels[10:30, 8:28] = (220, 30, 30)
    return Image.fromarray(pixels)
