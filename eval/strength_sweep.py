"""The strength of a trained method, chosen on the shapes world's validation world: ``python -m eval.ecd_train
--sweep`` (ECD's λ) and ``python -m eval.dcd_train --sweep`` (DCD's α).

The worlds of the trained methods' data (seeds ``SEED_BASE`` + the world's offset) lie apart from the shapes model's
own training (10-20 M) and evaluation (from 1e9) scenes and from the app's (from 1.5e9). The sweep decodes the
validation world's questions with the baseline and the method at each strength, sampled at T = 1 with one seed per
question shared by all sides, grades every answer (``models.shapes_world.grading``: hallucinated + missed words) and
picks the fewest errors, the smallest strength on ties. The test world is never used for it.
"""

from __future__ import annotations

import random

from models.shapes_world import grading, world
from models.shapes_world.train import Progress

SEED_BASE = 2_000_000_000
WORLDS = {"train": 0, "validation": 10_000_000, "test": 20_000_000}


def world_scenes(name: str, n: int) -> list[world.Scene]:
    """A world's scenes: half trigger-without-partner scenes (where the co-occurrence prior misleads), half
    biased-world scenes."""
    base = SEED_BASE + WORLDS[name]
    return [world.trigger_without_partner_scene(base + i) if i % 2 else world.sample_scene(base + i)
            for i in range(n)]


def validation_question(scene: world.Scene, rng: random.Random) -> world.Question:
    """The sweep's question on a validation scene: existence (an absent partner half the time it can), colour,
    count or a description."""
    family = rng.choices(["existence", "colour", "count", "description"], [0.5, 0.15, 0.15, 0.2])[0]
    if family == "colour" and not any(scene.count(k) == 1 for k in scene.kinds):
        family = "count"
    return world.sample_training_question(scene, rng, family_weights={family: 1.0}, partner_question_rate=0.5)


def graded_errors(adapter, method: str, param: str, values: list[float], n: int, seed: int) -> dict[str, int]:
    """Graded errors of the baseline ("baseline") and of ``method`` at each value of ``param`` (keyed ``f"{v:g}"``)
    on ``n`` questions of the validation world."""
    from decoding import answer_all
    from decoding.sampling import SamplingConfig

    rng = random.Random(seed)
    errors = {"baseline": 0, **{f"{value:g}": 0 for value in values}}
    progress = Progress(f"{method} sweep", n, 0, every=max(1, n // 20))
    for i, scene in enumerate(world_scenes("validation", n)):
        question = validation_question(scene, rng)
        budget = 40 if question.family == "description" else 4
        sampling = SamplingConfig(do_sample=True, temperature=1.0, seed=seed * 100_003 + i)
        image = world.render(scene)
        for j, value in enumerate(values):
            sides, _ = answer_all(adapter, image, question.text, [(method, {param: value})], sampling=sampling,
                                  baseline=j == 0, max_new_tokens=budget)
            for name, side in sides.items():
                grade = grading.grade_answer(scene, question.text, [t.piece for t in side.tokens])
                errors["baseline" if name == "baseline" else f"{value:g}"] += grade.hallucinated + grade.missed
        progress.update(i)
    return errors


def pick(values: list[float], errors: dict[str, int]) -> float:
    """The value with the fewest errors, the smallest on ties."""
    return min(values, key=lambda value: (errors[f"{value:g}"], value))


def sweep_table(errors: dict[str, int], side: str, chosen: str) -> str:
    """A markdown table of the errors, ``side`` naming a strength's row ("ECD λ="), then ``chosen``'s line."""
    lines = ["| side | graded errors |", "| --- | ---: |"]
    lines += [f"| {'baseline' if k == 'baseline' else side + k} | {v} |" for k, v in errors.items()]
    return "\n".join(lines) + f"\n\n{chosen}"
