"""The shapes world and the tiny LLaVA trained on it (the embedded default model, ``assets/shapes-llava``).

world.py     scenes, rendering, ground truth, question generators, the deliberate biases and their measurement
grading.py   an answer about a scene marked word by word against its ground truth (correct / hallucinated / missed)
build.py     the model's tokenizer, processor, chat template and configuration; saving a checkpoint folder
train.py     ``python -m models.shapes_world.train``: stage 1 (vision tower) and stage 2 (projector + language model)
recipe.py    ``python -m models.shapes_world.recipe``: the shipped model's whole training history in one command

Scoring the model (``python -m eval.shapes_world.evaluate``) and writing its benchmark files
(``python -m eval.shapes_world.benchmark``) live in ``eval.shapes_world``.
"""

from .world import (
    BIASED,
    COLOURS,
    KINDS,
    UNBIASED,
    Question,
    Scene,
    SceneObject,
    WorldBias,
    describe,
    parse_description,
    realised_statistics,
    render,
    sample_scene,
)

__all__ = [
    "BIASED",
    "COLOURS",
    "KINDS",
    "UNBIASED",
    "Question",
    "Scene",
    "SceneObject",
    "WorldBias",
    "describe",
    "parse_description",
    "realised_statistics",
    "render",
    "sample_scene",
]
