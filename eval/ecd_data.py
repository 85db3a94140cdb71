"""The ECD-like detector's data (``python -m eval.ecd_train``): answers, their labels, and the per-token features of
one teacher-forced forward, the same the decoding engine hands ECD's rule at each step (``decoding.detector``).

The answers come from a ``Source``: the shapes world's scenes (``shapes_source``, labelled by the world's grader) or
COCO images (``eval.coco_data``, labelled by CHAIR's object words); both give ``Example``s, so the same features and
the same training follow."""

from __future__ import annotations

import dataclasses
import math
import os
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from decoding.detector import candidate_features, step_features
from models.shapes_world import grading, world
from models.shapes_world.train import Progress, save_atomically

from .report import write_json
from .strength_sweep import sweep_table as _table
from .strength_sweep import world_scenes

GROUP_IDS = {"other": 0, "object": 1, "attribute": 2, "answer": 3}
_OBJECT_WORDS = set(world.KINDS) | set(world.PLURALS.values())
_ATTRIBUTE_WORDS = set(world.COLOURS) | set(world.NUMBER_WORDS.values())
CHUNK = 50  # scenes per cached part of the features: an interrupted extraction resumes from the last part
MAX_DESCRIPTION_TOKENS = 40

Labeller = Callable[[list[str]], list[tuple[int, int]]]  # answer pieces -> (label, group id) per piece

__all__ = ["GROUP_IDS", "Example", "Source", "cached_features", "features_of", "pieces_of", "write_json"]


@dataclass
class Example:
    """One answer to teacher-force: its prompt (image + question), its token ids and how to label its pieces."""

    image: Image.Image
    question: str
    answer: list[int]
    generated: bool
    labeller: Labeller


def pieces_of(adapter, ids: list[int]) -> list[str]:
    """The text each token adds to the decoded answer, as the engine's trace has it (spaces kept)."""
    pieces, text = [], ""
    for k in range(len(ids)):
        now = adapter.decode(ids[: k + 1])
        pieces.append(now[len(text):] if now.startswith(text) else adapter.decode([ids[k]]))
        text = now
    return pieces


def word_group(piece: str, words: dict[str, str] | None = None) -> int:
    word = piece.strip(" ,.;:!?").lower()
    if words is not None:
        return GROUP_IDS[words.get(word, "other")]
    if word in _OBJECT_WORDS:
        return GROUP_IDS["object"]
    if word in _ATTRIBUTE_WORDS:
        return GROUP_IDS["attribute"]
    return GROUP_IDS["answer"] if word in ("yes", "no") else GROUP_IDS["other"]


def shapes_labeller(scene: world.Scene, question: str) -> Labeller:
    """Labels by the world's grader: hallucinated or missed 1, correct 0; a piece it does not mark: 0, "other"."""
    def label(pieces: list[str]) -> list[tuple[int, int]]:
        marks = grading.grade_answer(scene, question, pieces).marks
        return [(0, GROUP_IDS["other"]) if mark is None else (int(mark != grading.CORRECT), word_group(piece))
                for piece, mark in zip(pieces, marks, strict=True)]
    return label


# ---- the shapes world's answers ---------------------------------------------------------------------------------

def text_ids(adapter, text: str) -> list[int]:
    return adapter.tokenizer.encode(text, add_special_tokens=False) + [adapter.eos_token_ids[0]]


def swapped_descriptions(scene: world.Scene, rng: random.Random) -> list[str]:
    """The canonical description with one object's kind swapped for an absent one (its absent partner when it has
    one), and with one object's colour swapped for one no object of its kind has."""
    if not scene.objects:
        return []
    out = []
    index = rng.randrange(len(scene.objects))
    absent = sorted(world.absent_partners(scene)) or [k for k in world.KINDS if k not in scene.kinds]
    if absent:
        objects = list(scene.objects)
        objects[index] = dataclasses.replace(objects[index], kind=rng.choice(absent))
        out.append(world.describe(world.Scene(objects)))
    target = scene.objects[rng.randrange(len(scene.objects))]
    colours = [c for c in world.COLOURS if c not in scene.colours_of(target.kind)]
    objects = [dataclasses.replace(o, colour=rng.choice(colours)) if o is target else o for o in scene.objects]
    out.append(world.describe(world.Scene(objects)))
    return out


def yes_no_questions(scene: world.Scene, rng: random.Random) -> list[world.Question]:
    """An existence, a colour (when a kind is there once) and a count question, the wrong number half the time."""
    questions = [world.sample_training_question(scene, rng, family_weights={"existence": 1.0},
                                                partner_question_rate=0.5)]
    if any(scene.count(k) == 1 for k in scene.kinds):
        questions.append(world.sample_training_question(scene, rng, family_weights={"colour": 1.0}))
    questions.append(world.sample_training_question(scene, rng, family_weights={"count": 1.0}))
    return questions


def shapes_examples(adapter, scenes: list[world.Scene], seed: int,
                    description_tokens: int = MAX_DESCRIPTION_TOKENS) -> list[Example]:
    """Every answer of these scenes: the model's own greedy and sampled descriptions, the canonical and swapped
    ones, and both answers to each yes/no question."""
    images = [world.render(s) for s in scenes]
    greedy = generate(adapter, images, world.DESCRIBE_PROMPT, False, seed, description_tokens)
    sampled = generate(adapter, images, world.DESCRIBE_PROMPT, True, seed, description_tokens)
    out = []
    for scene, image, own, drawn in zip(scenes, images, greedy, sampled, strict=True):
        rng = random.Random(scene.seed * 31 + seed)
        describe = shapes_labeller(scene, world.DESCRIBE_PROMPT)
        out += [Example(image, world.DESCRIBE_PROMPT, ids, True, describe) for ids in (own, drawn)]
        out += [Example(image, world.DESCRIBE_PROMPT, text_ids(adapter, text), False, describe)
                for text in (world.describe(scene), *swapped_descriptions(scene, rng))]
        for question in yes_no_questions(scene, rng):
            label = shapes_labeller(scene, question.text)
            out += [Example(image, question.text, text_ids(adapter, a), False, label) for a in ("yes", "no")]
    return out


def buckets(rows, max_rows: int | None = None) -> list[list[int]]:
    """Indices of rows of equal length together (their prompts stack with no padding), at most ``max_rows`` a bucket
    (None: no limit; a real model's attention maps of many rows at once do not fit)."""
    by_length: dict[int, list[int]] = {}
    for i, row in enumerate(rows):
        by_length.setdefault(row.length, []).append(i)
    step = max_rows or len(rows) or 1
    return [same[k : k + step] for same in by_length.values() for k in range(0, len(same), step)]


def stacked(adapter, rows, answers: list[list[int]] | None = None) -> dict:
    """Rows of one length stacked, each with its answer appended (right-padded: a causal model's real tokens never
    see the pads), positions continued after the prompt's (M-RoPE too)."""
    n, length = len(rows), rows[0].length
    width = max((len(a) for a in answers), default=0) if answers else 0
    ids = torch.full((n, width), adapter.pad_token_id, dtype=torch.long)
    for i, answer in enumerate(answers or []):
        ids[i, : len(answer)] = torch.tensor(answer, dtype=torch.long)
    positions = []
    for row in rows:
        after = row.position_ids.amax() + 1 + torch.arange(width)
        positions.append(torch.cat([row.position_ids, after.expand(*row.position_ids.shape[:-1], width)], dim=-1))
    tokens = {"input_ids": torch.cat([torch.cat([r.input_ids for r in rows]), ids], dim=1),
              "position_ids": torch.cat(positions, dim=-2),
              "attention_mask": torch.ones((n, length + width), dtype=torch.long)}
    for key in rows[0].token_kwargs:
        value = torch.cat([r.token_kwargs[key] for r in rows])
        tokens[key] = torch.cat([value, torch.zeros((n, width), dtype=value.dtype)], dim=1)
    vision = adapter.batch_vision_kwargs([r.vision_kwargs for r in rows]) if rows[0].has_image else {}
    return adapter.to_model({**tokens, **vision})


@torch.no_grad()
def generate(adapter, images: list[Image.Image], question: str, do_sample: bool, seed: int,
             max_new_tokens: int = MAX_DESCRIPTION_TOKENS, max_rows: int | None = None) -> list[list[int]]:
    """The model's own answers (greedy, or sampled at T = 1, top-p 1, no top-k, from ``seed``), up to and with their
    EOS; prompts of one length in one batch."""
    torch.manual_seed(seed)
    eos = set(adapter.eos_token_ids)
    tokenizer = adapter.tokenizer
    special = (set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)) - eos
    rows = [adapter.build_row(question, image) for image in images]
    sampling = {"do_sample": True, "temperature": 1.0, "top_p": 1.0, "top_k": None} if do_sample else {}
    out: list[list[int]] = [[] for _ in rows]
    for bucket in buckets(rows, max_rows):
        inputs = stacked(adapter, [rows[i] for i in bucket])
        inputs.pop("position_ids")  # generate computes them (the prompts are unpadded)
        made = adapter.model.generate(**inputs, max_new_tokens=max_new_tokens, **sampling)
        for i, ids in zip(bucket, made[:, rows[bucket[0]].length:].tolist(), strict=True):
            end = next((k for k, t in enumerate(ids) if t in eos), None)
            ids = ids if end is None else ids[: end + 1]
            cut = next((k for k, t in enumerate(ids) if t in special), len(ids))  # an image token, a role token...
            out[i] = ids[:cut] if cut else [adapter.eos_token_ids[0]]
    return out


# ---- features ---------------------------------------------------------------------------------------------------

@torch.no_grad()
def features_of(adapter, examples: list[Example], hidden_layer: int,
                max_rows: int | None = None) -> dict[str, torch.Tensor]:
    """Per answer token: the step's features at the position that predicts it, from one teacher-forced forward of
    the examples whose prompts have the same length."""
    rows = [adapter.build_row(e.question, e.image) for e in examples]
    found = {k: [] for k in ("candidate", "step", "hidden", "token", "label", "group", "generated")}
    model = adapter.model
    before = model.config._attn_implementation  # attention weights exist under eager attention only
    model.set_attn_implementation("eager")
    try:
        for bucket in buckets(rows, max_rows):
            batch = [examples[i] for i in bucket]
            out = adapter.forward(**stacked(adapter, [rows[i] for i in bucket], [e.answer for e in batch]),
                                  output_hidden_states=True, output_attentions=True, return_dict=True)
            for i, example in enumerate(batch):
                _token_features(adapter, example, rows[bucket[i]], out, i, hidden_layer, found)
    finally:
        model.set_attn_implementation(before)
    return {k: torch.cat(v).cpu() for k, v in found.items()}


def _token_features(adapter, example: Example, row, out, i: int, hidden_layer: int, found: dict) -> None:
    device = out.logits.device
    at = torch.arange(row.length - 1, row.length - 1 + len(example.answer), device=device)
    token = torch.tensor(example.answer, device=device)
    logits = out.logits[i, at].float()
    weights = torch.stack([a[i, :, at, :].float().mean(dim=0) for a in out.attentions], dim=1)  # (answer, layers, keys)
    image = row.image_token_positions.to(device)
    shares = weights.index_select(-1, image).sum(-1) / weights.sum(-1).clamp_min(1e-12)
    found["candidate"].append(candidate_features(logits).gather(1, token[:, None, None].expand(-1, 1, 3))[:, 0])
    found["step"].append(step_features(logits, shares))
    found["hidden"].append(out.hidden_states[hidden_layer][i, at].float())
    labels = example.labeller(pieces_of(adapter, example.answer))
    found["token"].append(token)
    found["label"].append(torch.tensor([label for label, _ in labels]))
    found["group"].append(torch.tensor([group for _, group in labels]))
    found["generated"].append(torch.full((len(example.answer),), example.generated))


@dataclass
class Source:
    """Where the detector's answers come from: each split's items (scenes, image ids), cut into parts of ``CHUNK``,
    and how a part's items become examples (``examples(adapter, items, seed)``)."""

    name: str
    items: dict[str, list]
    examples: Callable[[Any, list, int], list[Example]]
    prefix: str = "features"  # the cached parts' file names: another source, another name
    summary: dict = field(default_factory=dict)  # what detector.json records of the data
    max_rows: int | None = None  # rows of one teacher-forced forward (None: a whole bucket)


def shapes_source(args) -> Source:
    """The shapes world's training and test worlds (validation: a quarter each of ``--scenes``)."""
    sizes = {"train": args.scenes, "test": max(1, args.scenes // 4)}
    tokens = args.description_tokens or MAX_DESCRIPTION_TOKENS

    def examples(adapter, scenes, seed):
        return shapes_examples(adapter, scenes, seed, tokens)

    prefix = "features" if tokens == MAX_DESCRIPTION_TOKENS else f"features-{tokens}"  # the default's old names
    return Source("shapes world", {split: world_scenes(split, n) for split, n in sizes.items()}, examples, prefix,
                  {"source": "shapes world", "scenes": args.scenes}, args.rows)


def cached_features(adapter, source: Source, split: str, work: str, seed: int,
                    hidden_layer: int) -> dict[str, torch.Tensor]:
    """A split's features, extracted in parts of ``CHUNK`` items cached under ``work`` (an interrupted extraction
    resumes from the last part)."""
    items = source.items[split]
    parts = []
    progress = Progress(f"ecd features ({split})", math.ceil(len(items) / CHUNK), 0, every=1)
    for p, start in enumerate(range(0, len(items), CHUNK)):
        path = os.path.join(work, f"{source.prefix}-{split}-{hidden_layer}-{seed}-{p:04d}.pt")
        if not os.path.exists(path):
            examples = source.examples(adapter, items[start : start + CHUNK], seed * 1_000_003 + p)
            save_atomically(features_of(adapter, examples, hidden_layer, source.max_rows), path)
        parts.append(torch.load(path, weights_only=True))
        progress.update(p)
    data = {k: torch.cat([part[k] for part in parts]) for k in parts[0]}
    data["embeddings"] = adapter.model.get_input_embeddings().weight.detach().float().cpu()
    return data


# ---- reports ----------------------------------------------------------------------------------------------------

def metrics_table(report: dict) -> str:
    lines = ["| tokens | group | n | wrong | base rate | AUROC | AUPRC |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for key, m in report.items():
        subset, group = key.split("/")
        lines.append(f"| {subset} | {group} | {m['tokens']} | {m['wrong']} | {m['base_rate']:.3f} | "
                     f"{m['auroc']:.3f} | {m['auprc']:.3f} |")
    return "\n".join(lines)


def sweep_table(report: dict) -> str:
    return _table(report["errors"], "ECD λ=", f"chosen λ = {report['chosen_lam']:g} ({report['questions']} questions)")


def data_summary(data: dict, source: Source, args) -> dict:
    return {**source.summary, "seed": args.seed,
            "epochs": args.epochs, "rank": args.rank, "tokens": {k: int(len(v["label"])) for k, v in data.items()},
            "wrong": {k: int(v["label"].sum()) for k, v in data.items()}}


if __name__ == "__main__":
    sys.exit("run python -m eval.ecd_train")
