"""The shapes-world lab in the app: scenes with ground truth, the answers marked against it, a running score.

A "new scene" draws a held-out scene of the world the embedded model was trained on, with a question in its grammar
(often the one its co-occurrence bias gets wrong). Any run whose picture is, pixel for pixel, a known scene (the one
drawn, or a shapes example of the gallery) is scored with `models.shapes_world.grading`: the panels mark each shape
word and yes/no answer, and the session's score adds both sides up. Pure logic: ui.py wires it to components.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import html
import random
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from models.shapes_world import grading, world

from . import checks, images

# Scene seeds of the app's draws: apart from the training seeds (train.STAGE*_SEED_BASE, below 1e9) and from the
# evaluation's held-out seeds (evaluate.EVAL_SEED_BASE, 1e9 to about 1.2e9).
APP_SEED_BASE = 1_500_000_000
APP_SEED_RANGE = 100_000_000

# What a drawn scene asks: the partner the scene leaves out (the world's trap), a description, or another family.
PARTNER_SHARE = 0.4
DESCRIPTION_SHARE = 0.3
OTHER_FAMILIES = {"existence": 0.3, "colour": 0.25, "count": 0.25, "position": 0.2}

# Gallery scenes, by seed (their question comes from draw_scene): scenes on which the page, as it opens with the
# embedded model (VCD, sampling at T = 1, seed 0), answers differently in its two panels, found with
# `python -m demo.make_examples --find-differing 40`: a square, a star and a diamond asked for without being there
# (the baseline says "yes", VCD "no"), a star where VCD says "yes" and is wrong, a count VCD gets right, a
# description the baseline hallucinates in and a colour VCD gets wrong. Written to assets/examples by
# `python -m demo.make_examples`.
EXAMPLE_SEEDS = (1_600_000_138, 1_600_000_015, 1_600_000_022, 1_600_000_044, 1_600_000_020, 1_600_000_053,
                 1_600_000_245)


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


def remove_expired(folder: Path, pattern: str, ttl_s: float) -> None:
    """Delete the files matching ``pattern`` in ``folder`` that are older than ``ttl_s`` seconds."""
    expired = time.time() - ttl_s
    for old in folder.glob(pattern):
        with contextlib.suppress(OSError):
            if old.stat().st_mtime < expired:
                old.unlink()


# Scene pictures drawn for sessions are deleted after this long (gradio keeps its own copy for the page).
SCENE_TTL_S = 3600


@dataclass(frozen=True)
class DrawnScene:
    """What "New shapes-world scene" puts on the page: the picture's file, its question, the scene, the caption."""

    path: str
    question: str
    scene: world.Scene
    caption: str


def new_scene(folder: Path, seed: int | None = None) -> DrawnScene:
    """Draw a held-out scene (a random one unless ``seed`` is given) and write its picture into ``folder``."""
    remove_expired(folder, "shapes-scene-*.png", SCENE_TTL_S)
    scene, question = draw_scene(random_seed() if seed is None else seed)
    return DrawnScene(str(write_scene(scene, folder)), question, scene, scene_caption(scene))


def upload_caption(
    payload, drawn: world.Scene | None, upload_folder: str | Path, max_pixels: int = checks.DEFAULT_MAX_PIXELS,
    max_bytes: int | None = None,
) -> str:
    """The caption under the inputs for the picture a visitor put there: its ground truth when it is a known scene,
    or why Compare will refuse the file. The file is read as a run reads it (`demo.images`, the allow-listed
    decoders, from gradio's upload folder); only a picture of the world's size is decoded, so photos cost nothing."""
    try:
        path = checks.upload_path(payload, upload_folder)
    except ValueError:  # not a file of this app's uploads: nothing is opened, and Compare refuses it too
        return scene_caption(None)
    if path is None:
        return scene_caption(None)
    try:
        images.check_file(path, max_bytes)
        with images.open_image(path, max_pixels) as opened:
            images.check_pixels(opened, max_pixels)
            size = opened.size
        if size != (world.IMAGE_SIZE, world.IMAGE_SIZE):
            return scene_caption(None)
        picture = images.read_upload(path, max_pixels, max_bytes)
    except ValueError as error:  # the message Compare would give for this file
        return refused_caption(str(error))
    return scene_caption(known_scene(picture, drawn if isinstance(drawn, world.Scene) else None))


def refused_caption(message: str) -> str:
    """The caption of a file a run would refuse: the refusal itself, as text (never markup)."""
    return "⚠️ " + html.escape(message, quote=False)


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


def grade_sides(scene: world.Scene, question: str, pieces: dict[str, list[str]]) -> dict[str, grading.Grade]:
    """Each side's whole answer scored against ``scene``: {side name: grade}."""
    return {name: grading.grade_answer(scene, question, side_pieces) for name, side_pieces in pieces.items()}


# A word as `grading.grade_answer` reads it: a run of a-z in the lower-cased answer.
_WORD = re.compile(r"[a-z]+")


class LiveMarks:
    """The marks of an answer while it streams: after each new token, the same marks as ``grading.grade_answer`` on
    the answer so far, without grading the whole answer again.

    grade_answer marks a token by the words it overlaps; a word's mark depends only on the word and, for a colour
    word, on the word after it, and a yes/no answer is the first "yes" or "no" of the text. So a token that ends
    before the second-to-last word keeps its mark for good, and each new token grades only the tokens after those
    (from the start of the first word they touch). tests/test_demo_live_marks.py checks the equality on random answers
    cut into random tokens.
    """

    def __init__(self, scene: world.Scene, question: str):
        self.scene, self.question = scene, question
        asked = grading.question_about(scene, question)
        self._yes_no = asked is not None and asked.family != "description"
        self.marks: list[str | None] = []
        self._given: list[str] = []  # the pieces as they came
        self._pieces: list[str] = []  # lower-cased, as grade_answer reads them
        self._text = ""
        self._starts: list[int] = []  # where each piece starts in _text
        self._final = 0  # the leading tokens whose marks can no longer change
        self._checked = 0  # _text[:_checked] holds no yes/no answer (yes/no questions), or else _answered
        self._answered = False
        self._exact = True  # False once lower-casing changes a piece's length: then every token grades everything

    def __len__(self) -> int:
        return len(self._pieces)

    def extend(self, pieces: Iterable[str]) -> tuple[str | None, ...]:
        """Add the answer's next tokens; the marks of every token so far."""
        for piece in pieces:
            lowered = piece.lower()
            self._exact = self._exact and len(lowered) == len(piece)
            self._starts.append(len(self._text))
            self._given.append(piece)
            self._pieces.append(lowered)
            self._text += lowered
        if not self._pieces:
            return ()
        if not self._exact:  # the word positions grade_answer finds no longer match the pieces' own
            self.marks = list(grading.grade_answer(self.scene, self.question, self._given).marks)
            return tuple(self.marks)
        first = self._final
        start = self._word_start(self._starts[first])
        if self._yes_no and not self._answered:  # does the text before the window (whole words) hold the answer?
            before = grading.grade_answer(self.scene, self.question, [self._text[self._checked : start]])
            self._answered, self._checked = before.marks[0] is not None, start
        if self._answered:  # the answer lies before these tokens: nothing after it is marked
            tail = [None] * (len(self._pieces) - first)
        else:
            window = [self._text[start : self._starts[first]], *self._pieces[first:]]
            tail = list(grading.grade_answer(self.scene, self.question, window).marks[1:])
        self.marks[first:] = tail
        words = [match.start() for match in _WORD.finditer(self._text, start)]
        if len(words) >= 2:  # the token holding the start of the second-to-last word, and all after it, may change
            self._final = max(first, bisect.bisect_right(self._starts, words[-2]) - 1)
        return tuple(self.marks)

    def _word_start(self, position: int) -> int:
        """The start of the word that runs across ``position``, else ``position``."""
        text = self._text
        if position >= len(text) or not _WORD.match(text, position):
            return position
        while position > 0 and _WORD.match(text, position - 1):
            position -= 1
        return position


@dataclass
class SideScore:
    correct: int = 0
    hallucinated: int = 0
    missed: int = 0
    per_run: dict[int, tuple[int, int]] = field(default_factory=dict)  # run number -> (hallucinated, claims)

    def add(self, grade: grading.Grade, run: int = 0) -> None:
        self.correct += grade.correct
        self.hallucinated += grade.hallucinated
        self.missed += grade.missed
        self.per_run[run] = (grade.hallucinated, grade.correct + grade.hallucinated)

    def interval(self):
        """The hallucinated share with its 95 % bootstrap interval over the scored runs (``eval.stats``), or None
        before two runs with claims: one run says nothing about the spread."""
        from eval import stats

        runs = [v for v in self.per_run.values() if v[1]]
        if len(runs) < 2:
            return None
        hallucinated, claims = (np.array(column, float) for column in zip(*runs))
        return stats.interval(stats.ratio, [hallucinated, claims])

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
            self.sides.setdefault(title, SideScore()).add(grade, self.runs)

    def differences(self) -> list:
        """Every side against the first one (the baseline) on the runs both were scored on: the hallucinated share's
        difference with its paired-bootstrap interval, Holm-corrected over the session's comparisons
        (``eval.stats.PairedTest``); a pair with fewer than two such runs is left out."""
        from eval import stats

        titles = list(self.sides)
        tests = []
        for title in titles[1:]:
            side, reference = self.sides[title].per_run, self.sides[titles[0]].per_run
            both = [r for r in side if r in reference and side[r][1] and reference[r][1]]
            if len(both) < 2:
                continue
            arrays = [np.array([table[r][k] for r in both], float) for table in (side, reference) for k in (0, 1)]
            tests.append(stats.paired_bootstrap(stats.ratio, arrays[:2], arrays[2:], "hallucinated share",
                                                (title, titles[0]), group=f"{len(both)} runs"))
        return stats.holm(tests)

    def html(self) -> str:
        if not self.runs:
            return (
                '<div class="cd-score cd-empty">Draw a shapes-world scene (or pick a shapes example) to score both '
                "answers against the ground truth.</div>"
            )
        rows = []
        for title, score in self.sides.items():
            rate, found = score.hallucination_rate, score.interval()
            spread = "" if found is None else f" [{found.low:.0%}, {found.high:.0%}]"
            rows.append(
                f"<tr><td>{html.escape(title)}</td><td>{score.correct}</td><td>{score.hallucinated}</td>"
                f"<td>{score.missed}</td><td>{'n/a' if rate is None else f'{rate:.0%}'}{spread}</td></tr>"
            )
        return (
            f'<div class="cd-score"><b>Running score</b> over {self.runs} scored run{"s" if self.runs != 1 else ""} '
            "(shape words, colour words and yes/no answers):"
            '<table class="cd-top"><tr><th>side</th><th>✓ correct</th><th>✗ hallucinated</th><th>○ missed</th>'
            f"<th>hallucinated share [95 % interval]</th></tr>{''.join(rows)}</table>{self._verdicts()}</div>"
        )

    def _verdicts(self) -> str:
        """One line per side against the baseline: its difference, its interval, and whether that is noise."""
        lines = []
        for t in self.differences():
            d = t.difference
            verdict = "a real difference" if t.significant else "no different from noise so far"
            lines.append(f"{html.escape(t.side)} − {html.escape(t.reference)}: {100 * d.estimate:+.0f} points "
                         f"[{100 * d.low:+.0f}, {100 * d.high:+.0f}] over {t.group}: {verdict}")
        if not lines:
            return ""
        return ("<p>" + "<br>".join(lines) + "<br>(95 % paired-bootstrap intervals over the scored runs; "
                "Holm-corrected p &lt; 0.05 for a real difference)</p>")


__all__ = [
    "DEFAULT_CAPTION",
    "EXAMPLE_SEEDS",
    "DrawnScene",
    "LiveMarks",
    "Scoreboard",
    "SideScore",
    "draw_scene",
    "example_file",
    "grade_sides",
    "ground_truth_record",
    "known_scene",
    "new_scene",
    "random_seed",
    "remove_expired",
    "same_picture",
    "scene_caption",
    "truth_text",
    "upload_caption",
    "write_scene",
]
