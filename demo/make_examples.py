"""Write the example gallery in assets/examples/: a few free-licensed photos and synthetic scenes drawn with PIL.

    python -m demo.make_examples                          # redraw the synthetic scenes
    python -m demo.make_examples --photos DIR             # also re-encode the photos from an unpacked skimage/data/

The photos come from scikit-image's wheel (``pip download --no-deps scikit-image`` and unzip it); scikit-image is not
a dependency, only the source of these files. Their licences are recorded in assets/examples/LICENSES.md. The synthetic
scenes are built to provoke the usual hallucinations: left/right relations, an object whose usual companion is
missing, text on a sign, and a cluttered scene to count in.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "assets" / "examples"
MAX_SIDE = 512

# file in skimage/data -> file written here. Only photos that scikit-image's docstrings mark public domain or CC0.
PHOTOS = {
    "chelsea.png": "cat.jpg",
    "coffee.png": "coffee.jpg",
    "astronaut.png": "astronaut.jpg",
    "rocket.jpg": "rocket.jpg",
    "camera.png": "camera.jpg",
}

BACKGROUND = (236, 236, 230)


def encode_photos(skimage_data: Path, out_dir: Path = EXAMPLES_DIR) -> list[Path]:
    """Downscale each photo to at most MAX_SIDE pixels and store it as a compact JPEG."""
    written = []
    for source, target in PHOTOS.items():
        with Image.open(skimage_data / source) as photo:
            picture = photo.convert("RGB")
        picture.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
        path = out_dir / target
        picture.save(path, quality=85, optimize=True)
        written.append(path)
    return written


def _circle(draw: ImageDraw.ImageDraw, centre, radius, fill):
    x, y = centre
    draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=fill, outline=(40, 40, 40), width=3)


def _square(draw: ImageDraw.ImageDraw, centre, half, fill):
    x, y = centre
    draw.rectangle((x - half, y - half, x + half, y + half), fill=fill, outline=(40, 40, 40), width=3)


def _triangle(draw: ImageDraw.ImageDraw, centre, half, fill):
    x, y = centre
    draw.polygon([(x, y - half), (x - half, y + half), (x + half, y + half)], fill=fill, outline=(40, 40, 40), width=3)


def left_right_scene() -> Image.Image:
    """A red circle on the left, a blue square on the right: for "which side is ...?" questions."""
    image = Image.new("RGB", (448, 320), BACKGROUND)
    draw = ImageDraw.Draw(image)
    _circle(draw, (110, 165), 62, (214, 48, 49))
    _square(draw, (335, 165), 58, (9, 132, 227))
    return image


def circle_without_square_scene() -> Image.Image:
    """A circle and a triangle but no square (and no star): the partners that co-occur with them in the shapes world."""
    image = Image.new("RGB", (384, 384), BACKGROUND)
    draw = ImageDraw.Draw(image)
    _circle(draw, (120, 130), 58, (253, 203, 110))
    _triangle(draw, (265, 265), 62, (0, 184, 148))
    return image


def breakfast_scene() -> Image.Image:
    """A plate and a cup on a table with no cutlery: models used to photos of meals like to add a fork."""
    image = Image.new("RGB", (480, 360), (222, 228, 235))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 170, 480, 360), fill=(160, 110, 70))  # table top
    draw.ellipse((120, 200, 300, 300), fill=(250, 250, 250), outline=(190, 190, 190), width=4)  # plate
    draw.ellipse((165, 225, 255, 275), fill=(242, 201, 76))  # an egg yolk-ish pancake
    draw.rectangle((345, 195, 405, 275), fill=(200, 60, 60), outline=(120, 30, 30), width=3)  # cup
    draw.arc((392, 210, 430, 255), start=-90, end=90, fill=(120, 30, 30), width=7)  # cup handle
    return image


def sign_scene() -> Image.Image:
    """A street sign with text on it: reading questions tempt a model to answer with a more common sign."""
    image = Image.new("RGB", (400, 440), (173, 216, 230))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 380, 400, 440), fill=(120, 120, 120))  # pavement
    draw.rectangle((190, 190, 210, 390), fill=(90, 90, 90))  # pole
    draw.rounded_rectangle((60, 50, 340, 200), radius=14, fill=(0, 110, 60), outline=(255, 255, 255), width=6)
    font = ImageFont.load_default(size=34)
    draw.text((200, 100), "NO PARKING", fill=(255, 255, 255), font=font, anchor="mm")
    draw.text((200, 150), "9 AM - 5 PM", fill=(255, 255, 255), font=font, anchor="mm")
    return image


def cluttered_scene() -> Image.Image:
    """Many small overlapping shapes: counting questions invite a guess from the prior."""
    image = Image.new("RGB", (448, 448), BACKGROUND)
    draw = ImageDraw.Draw(image)
    colours = [(214, 48, 49), (9, 132, 227), (0, 184, 148), (253, 203, 110), (108, 92, 231)]
    # A fixed layout (no randomness) so the file is the same every time it is drawn.
    for i in range(23):
        centre = (40 + (i * 97) % 380, 40 + (i * 61) % 380)
        colour = colours[i % len(colours)]
        [_circle, _square, _triangle][i % 3](draw, centre, 22 + (i * 7) % 18, colour)
    return image


SCENES = {
    "left_right.png": left_right_scene,
    "circle_without_square.png": circle_without_square_scene,
    "breakfast_table.png": breakfast_scene,
    "street_sign.png": sign_scene,
    "cluttered_shapes.png": cluttered_scene,
}


def draw_scenes(out_dir: Path = EXAMPLES_DIR) -> list[Path]:
    written = []
    for name, draw in SCENES.items():
        path = out_dir / name
        draw().save(path, optimize=True)
        written.append(path)
    return written


def write_shapes_scenes(out_dir: Path = EXAMPLES_DIR) -> list[Path]:
    """The shapes-world scenes of the gallery (PNG at the world's 48 px: the app recognises them pixel for pixel)."""
    from .shapes_lab import EXAMPLE_SEEDS, draw_scene, example_file, write_scene

    return [write_scene(draw_scene(seed)[0], out_dir, example_file(seed)) for seed in EXAMPLE_SEEDS]


def differing_scenes(model_dir: str, seeds: range, method: str = "vcd", decoding_seed: int = 0):
    """Yield (seed, question, baseline answer, method answer, baseline grade, method grade) for each drawn scene whose
    two panels answer differently when the app runs it as it opens (the embedded model, ``method`` with its
    defaults, sampling at T = 1 with ``decoding_seed``): how the gallery's shapes scenes were chosen."""
    from decoding import compare
    from decoding.sampling import SamplingConfig
    from models import load_model
    from models.shapes_world import grading, world

    from .checks import DEFAULT_MAX_NEW_TOKENS
    from .shapes_lab import draw_scene

    model = load_model(model_dir)
    for seed in seeds:
        scene, question = draw_scene(seed)
        result = compare(model, world.render(scene), question, method=method, attention_layers=None,
                         sampling=SamplingConfig(do_sample=True, temperature=1.0, seed=decoding_seed),
                         max_new_tokens=DEFAULT_MAX_NEW_TOKENS)
        sides = (result.baseline, result.method_side)
        if sides[0].text.strip() != sides[1].text.strip():
            grades = [grading.grade_answer(scene, question, [t.piece for t in side.tokens]) for side in sides]
            yield seed, question, sides[0].text.strip(), sides[1].text.strip(), *grades


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, help="an unpacked skimage/data/ folder to re-encode the photos from")
    parser.add_argument("--find-differing", type=int, metavar="N", default=0,
                        help="print the first N drawn scenes (from seed 1,600,000,000 on) whose baseline and VCD "
                             "panels differ in the app's opening mode, with the embedded model; write nothing")
    args = parser.parse_args(argv)
    if args.find_differing:
        from .allow_list import EMBEDDED_MODEL_DIR

        found = differing_scenes(str(EMBEDDED_MODEL_DIR), range(1_600_000_000, 1_600_100_000))
        for _, (seed, question, base, other, g_base, g_other) in zip(range(args.find_differing), found):
            print(f"{seed}  {question!r}: baseline {base!r} (right {g_base.correct}, wrong "
                  f"{g_base.hallucinated + g_base.missed}), vcd {other!r} (right {g_other.correct}, wrong "
                  f"{g_other.hallucinated + g_other.missed})", flush=True)
        return
    EXAMPLES_DIR.mkdir(parents=True, exist_ok=True)
    written = draw_scenes() + write_shapes_scenes()
    if args.photos is not None:
        written += encode_photos(args.photos)
    for path in written:
        print(f"{path.stat().st_size / 1024:6.1f} KiB  {path.relative_to(EXAMPLES_DIR.parent.parent)}")


if __name__ == "__main__":
    main()
