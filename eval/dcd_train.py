"""DCD's two image projections (Chen et al., NeurIPS 2025, arXiv 2504.08809), trained on the shapes world's
preference pairs:

    python -m eval.dcd_train --model assets/shapes-llava [--steps 400] [--out assets/shapes-llava/dcd]

DCD trains two copies of the MLLM's image projection, decoupled: a positive one on the likelihood of the chosen
answers and a negative one on the likelihood of the rejected ones (no pairwise DPO term), and decodes
``(1+α)·logit_pos − α·logit_neg`` from the same image through both. Its code (announced at HKUST-LongGroup/DCD) is
not public, so whether the LLM is frozen, α and the data mix are not verified; here the vision tower and the language
model stay frozen and only the projector copies learn, with a plain per-example NLL on their side's answers.

Preference pairs are free in the shapes world: for each scene, the canonical description (chosen) against the same
with one object's kind or colour swapped (rejected, ``eval.ecd_data.swapped_descriptions``), and the right against
the wrong answer of existence, colour and count questions. Seeded; the training state is written every
``--save-every`` steps to ``--work`` and resumed from there; a progress bar per side. Writes ``positive.safetensors``,
``negative.safetensors`` (the projector's weights, fp16) and ``dcd.json`` (settings, data, held-out figures) under
``--out``. The held-out figure: on pairs of scenes never trained on, how often each projector gives the chosen answer
a higher likelihood than the rejected one (the positive should prefer the chosen, the negative the rejected).
Decoding with them is the registry method ``dcd`` (``decoding.dcd``: the negative projector's contrast row).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import random

import torch
from safetensors.torch import save_file

from decoding.dcd import ProjectorSwap
from models.shapes_world import build, world
from models.shapes_world.train import Progress, lr_at, resume, save_atomically, stage2_loss

from .ecd_data import swapped_descriptions

TRAIN_SEED_BASE = 30_000_000  # apart from training (10-20 M), evaluation (1e9 on) and the app's scenes (1.5e9 on)
HELD_OUT_SEED_BASE = 31_000_000
SIDES = ("positive", "negative")


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


def _swap(model, projector) -> ProjectorSwap:
    """The model run with ``projector`` in place of its own ``multi_modal_projector`` (a LLaVA model here)."""
    return ProjectorSwap(model.model.multi_modal_projector, projector)


def side_loss(model, encoder: build.Encoder, examples, side: str) -> torch.Tensor:
    answers = [chosen if side == "positive" else rejected for _, _, chosen, rejected in examples]
    batch = encoder.batch([world.render(s) for s, _, _, _ in examples], [q for _, q, _, _ in examples], answers)
    return stage2_loss(model, batch)


@torch.no_grad()
def preference_accuracy(model, encoder: build.Encoder, projector, n: int, seed: int) -> float:
    """How often, on ``n`` held-out pairs, ``projector`` (None: the model's own) gives the chosen answer a lower
    per-example NLL than the rejected one."""
    examples = pair_batch(HELD_OUT_SEED_BASE, 0, n, seed)
    losses = {}
    for side in SIDES:
        answers = [c if side == "positive" else r for _, _, c, r in examples]
        batch = encoder.batch([world.render(s) for s, _, _, _ in examples], [q for _, q, _, _ in examples], answers)
        with _swap(model, projector) if projector is not None else contextlib.nullcontext():
            logits = model(input_ids=batch["input_ids"], pixel_values=batch["pixel_values"]).logits
        targets = batch["targets"]
        nll = torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100,
                                                reduction="none").view(targets.shape)
        answered = (targets != -100).float()
        losses[side] = (nll * answered).sum(1) / answered.sum(1).clamp(min=1)
    return round(float((losses["positive"] < losses["negative"]).float().mean()), 4)


def train_side(model, encoder, side: str, args) -> torch.nn.Module:
    """One projector copy trained on its side's answers (resumed from ``--work`` when a state is there)."""
    projector = copy.deepcopy(model.model.multi_modal_projector).float().requires_grad_(True)
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
        with _swap(model, projector):
            loss = side_loss(model, encoder, pair_batch(TRAIN_SEED_BASE, step, args.batch, args.seed), side)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        smooth = loss.item() if smooth is None else 0.95 * smooth + 0.05 * loss.item()
        progress.update(step, loss=smooth)
        if (step + 1) % args.save_every == 0 or step + 1 == end:
            save_atomically({"projector": projector.state_dict(), "optimizer": optimizer.state_dict(),
                             "step": step + 1}, state_path)
    return projector


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="assets/shapes-llava", help="a shapes-world model folder")
    parser.add_argument("--out", default=None, help="where the projectors go (default: <model>/dcd)")
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
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch < 1:
        parser.error("--steps and --batch must be at least 1")
    if args.stop_at is not None and not 0 < args.stop_at <= args.steps:
        parser.error(f"--stop-at must be between 1 and --steps ({args.steps})")
    args.out = args.out or os.path.join(args.model, "dcd")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from transformers import LlavaForConditionalGeneration, LlavaProcessor

    model = LlavaForConditionalGeneration.from_pretrained(args.model, dtype=torch.float32).eval()
    model.requires_grad_(False)
    encoder = build.Encoder(LlavaProcessor.from_pretrained(args.model))
    figures = {"original": preference_accuracy(model, encoder, None, args.held_out, args.seed)}
    os.makedirs(args.out, exist_ok=True)
    for side in SIDES:
        projector = train_side(model, encoder, side, args)
        figures[side] = preference_accuracy(model, encoder, projector, args.held_out, args.seed)
        weights = {k: v.detach().to(torch.float16).contiguous() for k, v in projector.state_dict().items()}
        save_file(weights, os.path.join(args.out, f"{side}.safetensors"))
    report = {"method": "DCD (Chen et al., NeurIPS 2025, arXiv 2504.08809): decoupled projections",
              "settings": {k: v for k, v in vars(args).items() if k not in ("work", "out", "threads")},
              "data": "shapes world: description vs one kind or colour swapped; right vs wrong yes/no answers",
              "held_out_chosen_preferred": figures}
    with open(os.path.join(args.out, "dcd.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
