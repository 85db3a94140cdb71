"""Benchmarks of hallucination for the decoding methods: POPE, CHAIR and MME, read from their published file formats,
scored the way their own scripts score, decoded resumably on one or many processes.

Command line: ``python -m eval {pope,chair,mme} --help``. Library:

    from eval import read_pope, parse_pope_answer, pope_metrics          # POPE question files, POPE's answer rule
    from eval import read_coco_instances, read_coco_captions, coco_vocabulary, caption_report, chair_metrics
    coco_vocabulary("lvlm" or "original", tagger=None)   # CHAIR as the LVLM papers' / Rohrbach et al.'s chair.py
    from eval import read_mme, parse_mme_answer, mme_subtask_score
    from eval.benchmarks import pope_benchmark, chair_benchmark, mme_benchmark
    from eval.runner import RunConfig, run_benchmark

The readers are plain functions of a path, so any generator of data in these formats (the shapes world, say) can be
scored the same way; ``eval.shapes_world`` writes the embedded model's benchmark in them and measures its targets.
Importing the package (readers, metrics) does not import torch; the command line does, for the library's method names.
"""

from .chair import (
    ObjectVocabulary,
    caption_report,
    chair_metrics,
    coco_vocabulary,
    ground_truth_objects,
    read_coco_captions,
    read_coco_instances,
    read_synonyms,
)
from .chair_words import CHAIR_VARIANTS, DEFAULT_CHAIR_VARIANT
from .errors import EvalInputError
from .mme import MmeItem, mme_subtask_score, parse_mme_answer, read_mme
from .pope import PopeItem, parse_pope_answer, pope_metrics, read_pope

__all__ = [
    "CHAIR_VARIANTS",
    "DEFAULT_CHAIR_VARIANT",
    "EvalInputError",
    "MmeItem",
    "ObjectVocabulary",
    "PopeItem",
    "caption_report",
    "chair_metrics",
    "coco_vocabulary",
    "ground_truth_objects",
    "mme_subtask_score",
    "parse_mme_answer",
    "parse_pope_answer",
    "pope_metrics",
    "read_coco_captions",
    "read_coco_instances",
    "read_mme",
    "read_pope",
    "read_synonyms",
]
