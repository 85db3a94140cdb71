"""The example gallery: images shipped in assets/examples/ (see LICENSES.md there) with a question for each."""

from __future__ import annotations

from pathlib import Path

from .shapes_lab import EXAMPLE_SEEDS, draw_scene, example_file

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "assets" / "examples"

# (file, question): questions that tend to draw a hallucination out of a model that leans on its language prior.
EXAMPLES = (
    ("cat.jpg", "Describe this image in detail."),
    ("coffee.jpg", "Is there a spoon in the image?"),
    ("breakfast_table.png", "Is there a fork next to the plate?"),
    ("left_right.png", "Is the red circle on the left or on the right of the blue square?"),
    ("circle_without_square.png", "Is there a square in the image?"),
    ("street_sign.png", "What does the sign say?"),
    ("cluttered_shapes.png", "How many triangles are there?"),
    ("astronaut.jpg", "What is the person holding?"),
    ("rocket.jpg", "How many people are standing near the rocket?"),
    ("camera.jpg", "What brand is the camera?"),
)

EXAMPLE_QUESTIONS = (
    "Describe this image in detail.",
    "Is there a dog in the image?",
    "What color is the object on the left?",
    "How many objects are there?",
    "What is written in the image?",
)


def shapes_examples() -> list[tuple[str, str]]:
    """(file, question) of the shapes-world scenes: the embedded model's own world, with ground truth."""
    return [(example_file(seed), draw_scene(seed)[1]) for seed in EXAMPLE_SEEDS]


def gallery_examples(shapes_first: bool = False) -> list[list[str]]:
    """[[image path, question], ...] for the examples whose file is present; ``shapes_first`` puts the shapes-world
    scenes before the photos (when the embedded model is served, the photos mean nothing to it)."""
    photos, shapes = list(EXAMPLES), shapes_examples()
    ordered = shapes + photos if shapes_first else photos + shapes
    return [[str(EXAMPLES_DIR / name), question] for name, question in ordered if (EXAMPLES_DIR / name).is_file()]
