"""DCD's two image projections (Chen et al., NeurIPS 2025, arXiv 2504.08809), trained on preference pairs of the
shapes world or of COCO:

    python -m eval.dcd_train --model assets/shapes-llava [--steps 400] [--out assets/shapes-llava/dcd]
    python -m eval.dcd_train --model assets/shapes-llava --sweep 0,0.5,1,2,4        # α on the validation world
    python -m eval.dcd_train --model llava-hf/llava-1.5-7b-hf --device cuda --work runs/dcd-llava15 --batch 8 \
        --coco-images val2014 --coco-instances instances_val2014.json --coco-captions captions_val2014.json

DCD trains two copies of the MLLM's image projection, decoupled: a positive one on the likelihood of the chosen
answers and a negative one on the likelihood of the rejected ones (no pairwise DPO term), and decodes
``(1+α)·logit_pos − α·logit_neg`` from the same image through both. Its code (announced at HKUST-LongGroup/DCD) is
not public, so whether the LLM is frozen, α and the data mix are not verified; here the vision tower and the language
model stay frozen and only the projector copies learn, with a plain per-example NLL on their side's answers. Any
family whose adapter names a projector (``FamilyAdapter.image_projector``: LLaVA-style, Idefics3) is loaded through
``models.load_model``; the answer's NLL is taken after the adapter's own prompt (``adapter_nll``), or, for the shapes
world's LLaVA, through its fast encoder where that gives the processor's exact tensors (``encoder_nll``).

Preference pairs are free in the shapes world: for each scene, the canonical description (chosen) against the same
with one object's kind or colour swapped (rejected, ``eval.ecd_data.swapped_descriptions``), and the right against
the wrong answer of existence, colour and count questions. With ``--coco-images DIR --coco-instances FILE
--coco-captions FILE`` they are COCO's (``eval.coco_data.preference_pairs``): each human caption against the same with
one object word swapped for a category the image lacks, and the right against the wrong answer of existence
questions; the images split by id, the held-out pairs those of the test images. Seeded; the training state is
written every ``--save-every`` steps to ``--work`` and resumed from there; a progress bar per side. Writes
``positive.safetensors``, ``negative.safetensors`` (the projector's weights, fp16) and ``dcd.json`` (settings, data,
held-out figures) under ``--out`` (default: where ``decoding.dcd`` reads them). The held-out figure: on pairs never
trained on, how often each projector gives the chosen answer a higher likelihood than the rejected one (the positive
should prefer the chosen, the negative the rejected). Decoding with them is the registry method ``dcd``
(``decoding.dcd``: the negative projector's contrast row). ``--sweep`` decodes the shapes validation world with the
baseline and DCD at each α (``eval.strength_sweep``) and adds the graded errors to ``dcd.json``; the registry's α is
its pick.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import functools
import json
import os
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
from PIL import Image
from safetensors.torch import save_file

from decoding.dcd import DCDMissing, ProjectorSwap, dcd_folder, image_projector
from models.shapes_world import build, world
from models.shapes_world.train import Progress, lr_at, resume, save_atomically

from . import coco_data, strength_sweep
from .ecd_data import buckets, stacked, swapped_descriptions, text_ids
from .errors import EvalInputError

TRAIN_SEED_BASE = 30_000_000  # apart from training (10-20 M), evaluation (1e9 on) and the app's scenes (1.5e9 on)
HELD_OUT_SEED_BASE = 31_000_000
SIDES = ("positive", "negative")
SETTINGS = ("model", "steps", "stop_at", "batch", "lr", "seed", "held_out", "save_every", "log_every")  # dcd.json's
COCO_SETTINGS = ("coco_images", "coco_instances", "coco_captions", "coco_count", "chair_variant")


def preference_pairs(scene: world.Scene, rng: random.Random) -> list[tuple[str, str, str]]:
    """(question, chosen, rejected) triples of one scene: its description against each swapped one, and the right
    against the wrong answer of an existence, a colour (when a kind is there once) and a count question."""
    truth = world.describe(scene)
    pairs = [(world.DESCRIBE_PROMPT, truth, wrong) for wrong in swapped_descriptions(scene, rng) if wrong != truth]
    families = ["existence", "count"] + (["colour"] if any(scene.count(k) == 1 for k in scene.kinds) else [])
    for family in families:
        question = world.sample_training_question(scene, rng, family_weights={family: 1.0}, partner_question_rate=0.5)
        pairs.append((question.text, question.answer, "no" if question.answer == "yes" else "yes"))
    return pairs


def pair_batch(seed_base: int, step: int, batch: int, seed: int) -> list[tuple[world.Scene, str, str, str]]:
    """``batch`` (scene, question, chosen, rejected) examples of one step, deterministic in seed and step."""
    rng = random.Random(f"dcd {seed} {step}")
    out: list = []
    i = 0
    while len(out) < batch:
        scene = world.sample_scene(seed_base + seed * 1_000_003 + step * batch + i)
        i += 1
        out += [(scene, *pair) for pair in preference_pairs(scene, rng)]
    return out[:batch]


Pair = tuple[Image.Image, str, str, str]  # (image, question, chosen, rejected)
NLL = Callable[[list[Image.Image], list[str], list[str]], torch.Tensor]  # (images, questions, answers) -> (n,)


@dataclass
class Pairs:
    """The preference pairs of one run: a step's batch (the same for the same seed and step) and the held-out ones."""

    describe: str  # what dcd.json records of the data
    batch: Callable[[int, int], list[Pair]]  # (step, size) -> pairs
    held_out: Callable[[int], list[Pair]]  # n -> the first n held-out pairs


def shapes_pairs(seed: int) -> Pairs:
    def rendered(examples):
        return [(world.render(scene), *pair) for scene, *pair in examples]

    return Pairs("shapes world: description vs one kind or colour swapped; right vs wrong yes/no answers",
                 lambda step, size: rendered(pair_batch(TRAIN_SEED_BASE, step, size, seed)),
                 lambda n: rendered(pair_batch(HELD_OUT_SEED_BASE, 0, n, seed)))


def coco_pairs(args) -> Pairs:
    """COCO's pairs (``eval.coco_data.preference_pairs``) of the training images, reshuffled every epoch (seeded),
    and of the test images (the held-out figures), split by image id."""
    coco = coco_data.read_coco(args.coco_images, args.coco_instances, args.coco_captions, args.coco_count, args.seed,
                               args.chair_variant)
    splits = coco_data.split_images(coco.ids, args.seed)
    triples = {split: [(i, *pair) for i in ids for pair in coco_data.preference_pairs(coco, i, args.seed)]
               for split, ids in splits.items()}
    if not triples["train"] or not triples["test"]:
        raise EvalInputError("no preference pair could be made (a caption naming an object CHAIR knows, and a "
                             "category the image lacks, are needed) in the training or the test images")
    image = functools.lru_cache(maxsize=64)(coco.image)
    train = triples["train"]

    @functools.lru_cache(maxsize=2)
    def order(epoch: int) -> list[int]:
        return random.Random(f"dcd coco {args.seed} {epoch}").sample(range(len(train)), len(train))

    def batch(step: int, size: int) -> list[Pair]:
        at = [divmod(k, len(train)) for k in range(step * size, (step + 1) * size)]
        return [(image(train[order(e)[k]][0]), *train[order(e)[k]][1:]) for e, k in at]

    describe = (f"COCO ({len(splits['train'])} training, {len(splits['test'])} test images): each caption vs one "
                "object word swapped for an absent category; right vs wrong existence answers")
    return Pairs(describe, batch, lambda n: [(image(i), *pair) for i, *pair in triples["test"][:n]])


def encoder_nll(model, encoder: build.Encoder) -> NLL:
    """Per-example NLL of the answers through the shapes LLaVA's fast encoder (the exact tensors of its processor,
    ``build.Encoder``), as its own training computes it (``stage2_loss``, mean per example)."""
    def nll(images, questions, answers):
        batch = encoder.batch(images, questions, answers)
        pixels = batch["pixel_values"].to(model.device, model.dtype)
        logits = model(input_ids=batch["input_ids"].to(model.device), pixel_values=pixels).logits
        targets = batch["targets"].to(model.device)
        per_token = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(),
                                                      ignore_index=-100, reduction="none").view(targets.shape)
        answered = (targets != -100).float()
        return (per_token * answered).sum(1) / answered.sum(1).clamp(min=1)
    return nll


def adapter_nll(adapter, max_rows: int | None = None) -> NLL:
    """Per-example NLL of the answers for any family: the adapter's prompt (``build_row``) with the answer's ids and
    EOS appended, the mean over the answer's tokens; prompts of one length in one forward."""
    def nll(images, questions, answers):
        rows = [adapter.build_row(q, image) for image, q in zip(images, questions, strict=True)]
        ids = [text_ids(adapter, answer) for answer in answers]
        out: list = [None] * len(rows)
        for bucket in buckets(rows, max_rows):
            logits = adapter.forward(**stacked(adapter, [rows[i] for i in bucket], [ids[i] for i in bucket])).logits
            for j, i in enumerate(bucket):
                at = rows[i].length - 1  # the position that predicts the answer's first token
                target = torch.tensor(ids[i], device=logits.device)
                out[i] = torch.nn.functional.cross_entropy(logits[j, at : at + len(ids[i])].float(), target)
        return torch.stack(out)
    return nll


def nll_for(adapter, shapes: bool, max_rows: int | None) -> NLL:
    """The shapes LLaVA's fast encoder where it gives its processor's exact tensors (checked on a scene), else the
    adapter's path."""
    if shapes and adapter.family == "llava":
        encoder = build.Encoder(adapter.processor)
        try:
            encoder.check(world.render(world.sample_scene(0)), world.DESCRIBE_PROMPT)
            return encoder_nll(adapter.model, encoder)
        except (AssertionError, RuntimeError):  # a real LLaVA's processor resizes: the fast path is the world's
            pass
    return adapter_nll(adapter, max_rows)


def side_loss(nll: NLL, examples: list[Pair], side: str) -> torch.Tensor:
    answers = [chosen if side == "positive" else rejected for _, _, chosen, rejected in examples]
    return nll([e[0] for e in examples], [e[1] for e in examples], answers).mean()


@torch.no_grad()
def preference_accuracy(own, nll: NLL, projector, examples: list[Pair]) -> float:
    """How often, on held-out pairs, ``projector`` (None: the model's own) gives the chosen answer a lower
    per-example NLL than the rejected one."""
    losses = {}
    for side in SIDES:
        answers = [c if side == "positive" else r for _, _, c, r in examples]
        with ProjectorSwap(own, projector) if projector is not None else contextlib.nullcontext():
            losses[side] = nll([e[0] for e in examples], [e[1] for e in examples], answers)
    return round(float((losses["positive"] < losses["negative"]).float().mean()), 4)


def train_side(own, nll: NLL, pairs: Pairs, side: str, args) -> torch.nn.Module:
    """One projector copy (fp32) trained on its side's answers (resumed from ``--work`` when a state is there)."""
    projector = copy.deepcopy(own).float().requires_grad_(True)
    optimizer = torch.optim.AdamW(projector.parameters(), lr=args.lr, weight_decay=0.0)
    state_path = os.path.join(args.work, f"{side}.pt")
    start = resume(state_path, side, projector=projector, optimizer=optimizer)
    torch.manual_seed(args.seed)
    end = args.stop_at or args.steps
    progress = Progress(f"dcd {side}", end, start, every=args.log_every)
    smooth = None
    for step in range(start, end):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr, min(50, args.steps // 10))
        with ProjectorSwap(own, projector):
            loss = side_loss(nll, pairs.batch(step, args.batch), side)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        smooth = loss.item() if smooth is None else 0.95 * smooth + 0.05 * loss.item()
        progress.update(step, loss=smooth)
        if (step + 1) % args.save_every == 0 or step + 1 == end:
            save_atomically({"projector": projector.state_dict(), "optimizer": optimizer.state_dict(),
                             "step": step + 1}, state_path)
    return projector


def sweep(adapter, alphas: list[float], n: int, seed: int) -> dict:
    """Graded errors of the baseline and DCD (its other parameters at their defaults) at each α on the shapes
    validation world (``eval.strength_sweep``); the pick: fewest errors, the smallest α on ties."""
    errors = strength_sweep.graded_errors(adapter, "dcd", "alpha", alphas, n, seed)
    return {"questions": n, "errors": errors, "chosen_alpha": strength_sweep.pick(alphas, errors), "seed": seed}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="assets/shapes-llava",
                        help="a models.load_model source of a family with a projector: local folder or Hub id")
    parser.add_argument("--out", default=None,
                        help="where the projectors go (default: where decoding.dcd looks: <folder>/dcd, or under "
                             "$CD_DCD_HOME for a Hub id)")
    parser.add_argument("--work", default="/tmp/dcd-train", help="training states (resumed from)")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--stop-at", type=int, default=None,
                        help="end at this step, on the learning-rate schedule of --steps (rerun to resume)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--held-out", type=int, default=400, help="held-out pairs for the preference figures")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--save-every", type=int, default=100)
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rows", type=int, default=None, help="most rows of one forward (default: no limit)")
    parser.add_argument("--sweep", help="comma-separated α to try on the shapes validation world, e.g. 0,0.5,1,2,4 "
                        "(decodes with the trained copies; adds its record to dcd.json)")
    parser.add_argument("--sweep-questions", type=int, default=200)
    coco_data.add_coco_arguments(parser)
    args = parser.parse_args(argv)
    coco_data.check_coco_arguments(parser, args)
    if args.steps < 1 or args.batch < 1:
        parser.error("--steps and --batch must be at least 1")
    if args.stop_at is not None and not 0 < args.stop_at <= args.steps:
        parser.error(f"--stop-at must be between 1 and --steps ({args.steps})")
    return args


def main(argv=None) -> int:
    """The command; 2 (and the message on stderr) when an input is missing or malformed, or the family has no
    projector."""
    return coco_data.exit_status(run, parse_args(argv), (EvalInputError, DCDMissing))


def run(args) -> None:
    from models import load_model

    torch.set_num_threads(args.threads)
    adapter = load_model(args.model, device=args.device)
    own = image_projector(adapter)
    adapter.model.requires_grad_(False)
    out = args.out or dcd_folder(adapter.model_id)
    if args.sweep:
        record_sweep(adapter, args, out)
        return
    pairs = coco_pairs(args) if args.coco_images else shapes_pairs(args.seed)
    nll = nll_for(adapter, not args.coco_images, args.rows)
    held_out = pairs.held_out(args.held_out)
    figures = {"original": preference_accuracy(own, nll, None, held_out)}
    os.makedirs(out, exist_ok=True)
    for side in SIDES:
        projector = train_side(own, nll, pairs, side, args)
        figures[side] = preference_accuracy(own, nll, projector, held_out)
        weights = {k: v.detach().to(torch.float16).contiguous().cpu() for k, v in projector.state_dict().items()}
        save_file(weights, os.path.join(out, f"{side}.safetensors"))
    settings = {k: v for k, v in vars(args).items() if k in SETTINGS or (args.coco_images and k in COCO_SETTINGS)}
    report = {"method": "DCD (Chen et al., NeurIPS 2025, arXiv 2504.08809): decoupled projections",
              "settings": settings, "data": pairs.describe, "held_out_chosen_preferred": figures}
    write_report(os.path.join(out, "dcd.json"), report)
    print(json.dumps(figures))


def record_sweep(adapter, args, out: str) -> None:
    """The α sweep, printed and added to dcd.json (``alpha_sweep``) beside the copies it decoded with."""
    if os.path.abspath(out) != os.path.abspath(dcd_folder(adapter.model_id)):
        raise EvalInputError(f"--sweep decodes with the copies DCD reads ({dcd_folder(adapter.model_id)}); "
                             "drop --out")
    report = sweep(adapter, [float(x) for x in args.sweep.split(",")], args.sweep_questions, args.seed)
    print(strength_sweep.sweep_table(report["errors"], "DCD α=",
                                     f"chosen α = {report['chosen_alpha']:g} ({report['questions']} questions)"))
    path = os.path.join(out, "dcd.json")
    record = {}
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    write_report(path, {**record, "alpha_sweep": report})


def write_report(path: str, report: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    sys.exit(main())
