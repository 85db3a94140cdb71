"""The shapes-world lab in the app: scenes with ground truth, the answers marked against it, a running score.

A "new scene" draws a held-out scene of the world the embedded model was trained on, with a question in its grammar
(often the one its co-occurrence bias gets wrong). Any run whose picture is, pixel for pixel, a known scene (the one
drawn, or a shapes example of the gallery) is scored with `models.shapes_world.grading`: the panels mark each shape
word and yes/no answer, and the session's score adds both sides up. Pure logic: ui.py wires it to components.
"""

from __future__ import annotations

import functools
import html
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from models.shapes_world import grading, world

# Scene seeds of the app's draws: apart from the training seeds (train.STAGE*_SEED_BASE, below 1e9) and from the
# evaluation's held-out seeds (evaluate.EVAL_SEED_BASE, 1e9 to about 1.2e9).
APP_SEED_BASE = 1_500_000_000
APP_SEED_RANGE = 100_000_000

# What a drawn scene asks: the partner the scene leaves out (the world's trap), a description, or another family.
PARTNER_SHARE = 0.4
DESCRIPTION_SHARE = 0.3
OTHER_FAMILIES = {"existence": 0.3, "colour": 0.25, "count": 0.25, "position": 0.2}

# Gallery scenes, by seed (their question comes from draw_scene): a circle, a triangle and a cross each without its
# partner, a description, a count and a colour question. Written to assets/examples by `python -m demo.make_examples`.
EXAMPLE_SEEDS = (1_600_000_005, 1_600_000_001, 1_600_000_007, 1_600_000_002, 1_600_000_020, 1_600_000_006)


def example_file(seed: int) -> str:
    return f"shapes-{seed}.png"


def random_seed(rng: random.Random | None = None) -> int:
    return APP_SEED_BASE + (rng or random.SystemRandom()).randrange(APP_SEED_RANGE)


def draw_scene(seed: int) -> tuple[world.Scene, str]:
    """A scene and a question for it, both fixed by ``seed``.

    With probability PARTNER_SHARE the scene has a trigger shape without its usual partner and the question asks for
    the partner (the answer is "no"; the biased model tends to say "yes"); then a description; else one question of
    another family, as the model was trained to answer them.
    """
    # Its own stream, not random.Random(seed): the scene sampler draws from that one, and sharing it would tie the
    # kind of question to the kind of trigger (no triangle scene would ever be asked about its star).
    rng = random.Random(f"shapes-lab-{seed}")
    draw = rng.random()
    if draw < PARTNER_SHARE:
        scene = world.trigger_without_partner_scene(seed)
        partner = min(world.absent_partners(scene))
        return scene, world.existence_question(scene, partner).text
    scene = world.sample_scene(seed)
    if draw < PARTNER_SHARE + DESCRIPTION_SHARE:
        return scene, world.DESCRIBE_PROMPT
    return scene, world.sample_training_question(scene, rng, family_weights=OTHER_FAMILIES).text


def same_picture(picture: Image.Image, scene: world.Scene) -> bool:
    """Whether ``picture`` is exactly the rendering of ``scene`` (a re-encoded or edited picture is not)."""
    if picture.size != (world.IMAGE_SIZE, world.IMAGE_SIZE):
        return False
    return np.array_equal(np.asarray(picture.convert("RGB")), np.asarray(world.render(scene)))


@functools.cache
def _gallery_scenes() -> tuple[world.Scene, ...]:
    # Built once: every run and every image change looks for its picture among them. Read only, never mutated.
    return tuple(draw_scene(seed)[0] for seed in EXAMPLE_SEEDS)


def known_scene(picture: Image.Image, drawn: world.Scene | None) -> world.Scene | None:
    """The ground truth of ``picture``: the scene the visitor drew, or a gallery scene; None for any other picture."""
    candidates = ([drawn] if drawn is not None else []) + list(_gallery_scenes())
    return next((scene for scene in candidates if same_picture(picture, scene)), None)


def write_scene(scene: world.Scene, folder: Path, name: str | None = None) -> Path:
    """The scene as a PNG (lossless, so that a run recognises it) in ``folder``."""
    path = folder / (name or f"shapes-scene-{scene.seed}.png")
    world.render(scene).save(path)
    return path


DEFAULT_CAPTION = (
    "A random scene of the embedded model's world, with its ground truth: both answers get marked against it "
    "(✓ correct, ✗ hallucinated, ○ missed)."
)


def scene_caption(scene: world.Scene | None) -> str:
    """What the app says under the inputs about a picture with known ground truth (or how to get one)."""
    if scene is None:
        return DEFAULT_CAPTION
    return (
        f"**Shapes-world scene #{scene.seed}** (held out from training). Ground truth: {world.describe(scene)}. "
        "Both answers will be marked against it: ✓ correct, ✗ hallucinated, ○ missed."
    )


def truth_text(scene: world.Scene, question: str) -> str:
    """The ground truth of a scored run, for its status line."""
    asked = grading.question_about(scene, question)
    answer = f' The true answer is "{asked.answer}".' if asked is not None and asked.family != "description" else ""
    return f"Ground truth: {world.describe(scene)}.{answer}"


def ground_truth_record(scene: world.Scene, question: str, grades: dict[str, grading.Grade]) -> dict:
    """What a run's JSON download adds about its scene: the scene, the true answer and each side's marks."""
    asked = grading.question_about(scene, question)
    return {
        "scene": scene.to_dict(),
        "description": world.describe(scene),
        "true_answer": asked.answer if asked is not None else None,
        "grades": {
            name: {"marks": list(g.marks), "correct": g.correct, "hallucinated": g.hallucinated, "missed": g.missed}
            for name, g in grades.items()
        },
    }


@dataclass
class SideScore:
    correct: int = 0
    hallucinated: int = 0
    missed: int = 0

    def add(self, grade: grading.Grade) -> None:
        self.correct += grade.correct
        self.hallucinated += grade.hallucinated
        self.missed += grade.missed

    @property
    def hallucination_rate(self) -> float | None:
        claims = self.correct + self.hallucinated
        return self.hallucinated / claims if claims else None


@dataclass
class Scoreboard:
    """A session's running score on scenes with ground truth, per side (baseline and each method it tried)."""

    runs: int = 0
    sides: dict[str, SideScore] = field(default_factory=dict)

    def add(self, grades: dict[str, grading.Grade]) -> None:
        """One scored run: {side title: its grade}."""
        self.runs += 1
        for title, grade in grades.items():
            self.sides.setdefault(title, SideScore()).add(grade)

    def html(self) -> str:
        if not self.runs:
            return (
                '<div class="cd-score cd-empty">Draw a shapes-world scene (or pick a shapes example) to score both '
                "answers against the ground truth.</div>"
            )
        rows = []
        for title, score in self.sides.items():
            rate = score.hallucination_rate
            rows.append(
                f"<tr><td>{html.escape(title)}</td><td>{score.correct}</td><td>{score.hallucinated}</td>"
                f"<td>{score.missed}</td><td>{'n/a' if rate is None else f'{rate:.0%}'}</td></tr>"
            )
        return (
            f'<div class="cd-score"><b>Running score</b> over {self.runs} scored run{"s" if self.runs != 1 else ""} '
            "(shape words, colour words and yes/no answers):"
            '<table class="cd-top"><tr><th>side</th><th>✓ correct</th><th>✗ hallucinated</th><th>○ missed</th>'
            f"<th>hallucinated share</th></tr>{''.join(rows)}</table></div>"
        )


__all__ = [
    "DEFAULT_CAPTION",
    "EXAMPLE_SEEDS",
    "Scoreboard",
    "SideScore",
    "draw_scene",
    "example_file",
    "ground_truth_record",
    "known_scene",
    "random_seed",
    "same_picture",
    "scene_caption",
    "truth_text",
    "write_scene",
]
