"""Train the shapes-world LLaVA in LLaVA's two stages (seeded, resumable, CPU-friendly).

    # stage 1: the CLIP vision tower alone, as a supervised classifier on UNBIASED scenes (small linear heads on its
    # last-layer tokens, thrown away afterwards), so that it really sees shapes, colours, counts and positions
    python -m models.shapes_world.train stage1 --steps 2000 --batch 64 --lr 1.5e-3 --checkpoint /tmp/shapes/stage1.pt

    # stage 2: tower frozen; projector + language model on the BIASED question mix; writes the checkpoint folder
    python -m models.shapes_world.train stage2 --init /tmp/shapes/stage1.pt --steps 6000 --batch 32 \
        --checkpoint /tmp/shapes/stage2.pt --save assets/shapes-llava

(assets/shapes-llava/MODEL_CARD.md lists the exact commands the shipped checkpoint came from, with their wall times.)
Re-running a command whose ``--checkpoint`` file exists resumes from it (model, optimiser, schedule and step; the data
of step ``i`` depends only on the seed and ``i``, so a resumed run sees what an uninterrupted one would).
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from . import build, world

# Scene seeds of each stage start here (and stay below the next base); eval.shapes_world.evaluate.EVAL_SEED_BASE
# keeps test scenes apart.
STAGE1_SEED_BASE = 10_000_000
STAGE2_SEED_BASE = 20_000_000
_MIN_PATCH_PIXELS = 6  # a patch is labelled with the object covering most of it, if at least this many pixels
N_CELLS = world.GRID * world.GRID
VISIBILITY = {"mixed": world.VISIBLE_MIX, "clear": world.ALL_CLEAR}


# ---- stage 1: the vision tower as a classifier ------------------------------------------------------------------

class VisionProbeHeads(torch.nn.Module):
    """Linear heads on the vision tower's last-layer patch tokens (the features LLaVA hands to the projector)."""

    def __init__(self, hidden: int):
        super().__init__()
        k, c = len(world.KINDS), len(world.COLOURS)
        self.patch_kind = torch.nn.Linear(hidden, k + 1)
        self.patch_colour = torch.nn.Linear(hidden, c + 1)
        self.presence = torch.nn.Linear(hidden, k)
        self.count = torch.nn.Linear(hidden, k * (world.MAX_PER_KIND + 1))
        self.kind_colour = torch.nn.Linear(hidden, k * c)
        self.kind_cell = torch.nn.Linear(hidden, k * N_CELLS)


def vision_labels(scenes: list[world.Scene]) -> dict[str, torch.Tensor]:
    """Per-patch kind/colour (index K / C = nothing) and per-scene presence, counts, kind x colour, kind x cell."""
    k_index = {k: i for i, k in enumerate(world.KINDS)}
    c_index = {c: i for i, c in enumerate(world.COLOURS)}
    side = world.IMAGE_SIZE // build.PATCH
    n, k, c = len(scenes), len(world.KINDS), len(world.COLOURS)
    patch_kind = np.full((n, side * side), k, dtype=np.int64)
    patch_colour = np.full((n, side * side), c, dtype=np.int64)
    presence = np.zeros((n, k), dtype=np.float32)
    count = np.zeros((n, k), dtype=np.int64)
    kind_colour = np.zeros((n, k, c), dtype=np.float32)
    kind_cell = np.zeros((n, k, N_CELLS), dtype=np.float32)
    for i, scene in enumerate(scenes):
        for obj in scene.objects:
            presence[i, k_index[obj.kind]] = 1
            count[i, k_index[obj.kind]] += 1
            kind_colour[i, k_index[obj.kind], c_index[obj.colour]] = 1
            kind_cell[i, k_index[obj.kind], obj.row * world.GRID + obj.col] = 1
        if scene.objects:
            masks = world.object_masks(scene)
            per_patch = masks.reshape(len(masks), side, build.PATCH, side, build.PATCH).sum(axis=(2, 4))
            per_patch = per_patch.reshape(len(masks), side * side)
            best = per_patch.argmax(axis=0)
            covered = per_patch.max(axis=0) >= _MIN_PATCH_PIXELS
            for p in np.nonzero(covered)[0]:
                obj = scene.objects[best[p]]
                patch_kind[i, p] = k_index[obj.kind]
                patch_colour[i, p] = c_index[obj.colour]
    labels = {"patch_kind": patch_kind, "patch_colour": patch_colour, "presence": presence, "count": count,
              "kind_colour": kind_colour.reshape(n, -1), "kind_cell": kind_cell.reshape(n, -1)}
    return {name: torch.from_numpy(value) for name, value in labels.items()}


def patch_features(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """(B, patches, hidden): the layer LLaVA feeds its projector (``vision_feature_layer``), CLS dropped."""
    out = model.model.vision_tower(pixel_values, output_hidden_states=True)
    return out.hidden_states[model.config.vision_feature_layer][:, 1:]


def stage1_loss(model, heads: VisionProbeHeads, pixel_values, labels) -> tuple[torch.Tensor, dict]:
    tokens = patch_features(model, pixel_values)
    pooled = tokens.mean(dim=1)
    k = len(world.KINDS)
    losses = {
        "patch_kind": F.cross_entropy(heads.patch_kind(tokens).flatten(0, 1), labels["patch_kind"].flatten()),
        "patch_colour": F.cross_entropy(heads.patch_colour(tokens).flatten(0, 1), labels["patch_colour"].flatten()),
        "presence": F.binary_cross_entropy_with_logits(heads.presence(pooled), labels["presence"]),
        "count": F.cross_entropy(heads.count(pooled).view(-1, world.MAX_PER_KIND + 1), labels["count"].flatten()),
        "kind_colour": F.binary_cross_entropy_with_logits(heads.kind_colour(pooled), labels["kind_colour"]),
        "kind_cell": F.binary_cross_entropy_with_logits(heads.kind_cell(pooled), labels["kind_cell"]),
    }
    with torch.no_grad():
        presence_acc = ((heads.presence(pooled) > 0).float() == labels["presence"]).float().mean()
        count_acc = (heads.count(pooled).view(-1, k, world.MAX_PER_KIND + 1).argmax(-1) == labels["count"]).float()
        metrics = {"presence_acc": float(presence_acc), "count_acc": float(count_acc.mean())}
    # The BCE heads see mostly negatives; weight them up so presence, colour and cell are learnt as fast as patches.
    total = (losses["patch_kind"] + losses["patch_colour"] + 5 * losses["presence"] + losses["count"]
             + 10 * losses["kind_colour"] + 10 * losses["kind_cell"])
    return total, metrics


def stage1_batch(encoder: build.Encoder, step: int, batch: int, seed: int,
                 visibility: world.Visibility = world.VISIBLE_MIX):
    scenes = [world.sample_scene(STAGE1_SEED_BASE + seed * 1_000_003 + step * batch + i, world.UNBIASED,
                                 visibility=visibility) for i in range(batch)]
    return encoder.pixels([world.render(s) for s in scenes]), vision_labels(scenes)


# ---- stage 2: projector + language model on the biased question mix --------------------------------------------

def stage2_examples(step: int, batch: int, seed: int, partner_question_rate: float = 0.0,
                    family_weights: dict | None = None, visibility: world.Visibility = world.VISIBLE_MIX):
    """The (scene, question) pairs of one stage-2 step (deterministic in seed and step)."""
    rng = random.Random(seed * 1_000_003 + step)
    examples = []
    for i in range(batch):
        scene = world.sample_scene(STAGE2_SEED_BASE + seed * 1_000_003 + step * batch + i, world.BIASED,
                                   visibility=visibility)
        examples.append((scene, world.sample_training_question(scene, rng, world.BIASED, family_weights,
                                                               partner_question_rate=partner_question_rate)))
    return examples


def stage2_loss(model, batch: dict, mean: str = "example") -> torch.Tensor:
    """Cross-entropy on the answer tokens. ``mean="example"``: averaged over each example's answer tokens, then over
    examples, so a one-word answer weighs as much as a 20-token description (a plain token mean lets descriptions
    drown the yes/no questions). ``mean="token"``: that plain mean over all answer tokens of the batch, which the
    shipped model's first 1,400 stage-2 steps used (its descriptions taught colours early; see the model card)."""
    if mean not in ("example", "token"):
        raise ValueError(f"mean must be 'example' or 'token', not {mean!r}")
    logits = model(input_ids=batch["input_ids"], pixel_values=batch["pixel_values"]).logits
    targets = batch["targets"]
    per_token = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-100,
                                reduction="none").view(targets.shape)
    answered = (targets != -100).float()
    if mean == "token":
        return (per_token * answered).sum() / answered.sum().clamp(min=1)
    return ((per_token * answered).sum(1) / answered.sum(1).clamp(min=1)).mean()


# ---- the loop --------------------------------------------------------------------------------------------------

def lr_at(step: int, steps: int, peak: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


class Progress:
    """A one-line text progress bar, printed every ``every`` steps (a log file gets one line per update)."""

    def __init__(self, name: str, total: int, start: int, every: int = 25, stream=sys.stderr):
        self.name, self.total, self.start, self.every, self.stream = name, total, start, every, stream
        self.t0 = time.time()

    def update(self, step: int, **values) -> None:
        done = step + 1
        if done % self.every and done != self.total:
            return
        rate = (time.time() - self.t0) / max(1, done - self.start)
        filled = int(30 * done / self.total)
        shown = " ".join(f"{k} {v:.4f}" for k, v in values.items())
        eta = rate * (self.total - done)
        print(f"{self.name} [{'#' * filled}{'.' * (30 - filled)}] {done}/{self.total} {shown} "
              f"{rate:.3f} s/step eta {eta / 60:.1f} min", file=self.stream, flush=True)


def save_atomically(state, path: str) -> None:
    """``torch.save`` through a temporary file and a rename: a stopped run never leaves a half-written state."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save(state, path + ".tmp")
    os.replace(path + ".tmp", path)


def resume(path: str, label: str, **parts) -> int:
    """Load a state ``save_atomically`` wrote (each of ``parts``, a module or an optimizer, from its own key) and
    return its step; 0, and nothing loaded, when there is none yet."""
    if not os.path.exists(path):
        return 0
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key, part in parts.items():
        part.load_state_dict(state[key])
    print(f"resuming {label} from step {state['step']} ({path})", file=sys.stderr, flush=True)
    return state["step"]


def initial_weights(source: str) -> dict[str, torch.Tensor]:
    """Stage 2's starting weights: a stage-1 training state (its vision tower; the rest is freshly initialised) or a
    saved model folder (all of it, in float32: fine-tuning a shipped checkpoint further)."""
    if os.path.isdir(source):
        from transformers import LlavaForConditionalGeneration

        saved = LlavaForConditionalGeneration.from_pretrained(source, dtype=torch.float32)
        return saved.state_dict()
    return torch.load(source, map_location="cpu", weights_only=True)["model"]


def train(args) -> None:
    torch.set_num_threads(args.threads)
    processor = build.build_processor()
    encoder = build.Encoder(processor)
    scene = world.sample_scene(0)
    encoder.check(world.render(scene), world.DESCRIBE_PROMPT)  # the fast input path must be the processor's
    size = build.TINY_TEST_SIZE if args.tiny else build.ModelSize()
    model = build.build_model(processor, size, seed=args.seed)
    heads = VisionProbeHeads(size.vision_hidden) if args.stage == "stage1" else None

    if args.stage == "stage1":
        trainable = list(model.model.vision_tower.parameters()) + list(heads.parameters())
    else:
        if args.init:
            model.load_state_dict(initial_weights(args.init))
        model.model.vision_tower.requires_grad_(False)
        trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=args.weight_decay, betas=(0.9, 0.98))

    start = 0
    if args.checkpoint and os.path.exists(args.checkpoint):
        state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
        if state["stage"] != args.stage:
            raise SystemExit(f"{args.checkpoint} is a {state['stage']} checkpoint, not {args.stage}")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if heads is not None:
            heads.load_state_dict(state["heads"])
        start = state["step"]
        print(f"resuming {args.stage} from step {start} ({args.checkpoint})", file=sys.stderr, flush=True)

    def save(step):
        if not args.checkpoint:
            return
        state = {"stage": args.stage, "step": step, "model": model.state_dict(), "optimizer": optimizer.state_dict()}
        if heads is not None:
            state["heads"] = heads.state_dict()
        save_atomically(state, args.checkpoint)

    end = args.stop_at or args.steps
    if start > end:
        print(f"{args.checkpoint} is at step {start}, past --stop-at {end}: nothing to do", file=sys.stderr, flush=True)
        return
    model.train()
    model.model.vision_tower.train(args.stage == "stage1")
    torch.manual_seed(args.seed)
    progress = Progress(args.stage, end, start, every=args.log_every)
    smooth = None
    for step in range(start, end):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr, args.warmup)
        if args.stage == "stage1":
            pixels, labels = stage1_batch(encoder, step, args.batch, args.seed, VISIBILITY[args.visibility])
            loss, metrics = stage1_loss(model, heads, pixels, labels)
        else:
            examples = stage2_examples(step, args.batch, args.seed, args.partner_question_rate, args.family_weights,
                                       VISIBILITY[args.visibility])
            batch = encoder.batch([world.render(s) for s, _ in examples], [q.text for _, q in examples],
                                  [q.answer for _, q in examples])
            loss, metrics = stage2_loss(model, batch, args.loss_mean), {}
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        value = loss.item()
        smooth = value if smooth is None else 0.95 * smooth + 0.05 * value
        progress.update(step, loss=smooth, **metrics)
        if (step + 1) % args.save_every == 0:
            save(step + 1)
    if start < end:
        save(end)
    if args.save:
        model.eval()
        build.save_checkpoint(model, processor, args.save)
        print(f"saved {args.save}", file=sys.stderr, flush=True)


def _family_weights(text: str) -> dict[str, float]:
    weights = {}
    for item in text.split(","):
        family, _, weight = item.partition("=")
        if family.strip() not in world.TRAINING_FAMILY_WEIGHTS:
            raise argparse.ArgumentTypeError(f"unknown question family {family!r}")
        weights[family.strip()] = float(weight)
    return weights


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", choices=("stage1", "stage2"))
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--batch", type=int, default=None, help="default 96 (stage 1) / 32 (stage 2)")
    parser.add_argument("--stop-at", type=int, default=None,
                        help="end this run at this step, on the learning-rate schedule of --steps (a later run with "
                             "a larger --stop-at or none resumes from --checkpoint: how a run is made in segments)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", help="training state file: written every --save-every steps, resumed from")
    parser.add_argument("--init", help="stage 2: the stage-1 checkpoint whose vision tower is used, or a saved model "
                                       "folder to fine-tune further")
    parser.add_argument("--save", help="stage 2: the folder to write the fp16 model + processor to")
    parser.add_argument("--partner-question-rate", type=float, default=0.0,
                        help="how often an absent partner is asked about on trigger-without-partner scenes")
    parser.add_argument("--family-weights", type=_family_weights, default=None,
                        help="stage 2 question mix, e.g. existence=0.45,colour=0.15,count=0.15,position=0.15,"
                             "description=0.1 (default: world.TRAINING_FAMILY_WEIGHTS)")
    parser.add_argument("--visibility", choices=sorted(VISIBILITY), default="mixed",
                        help="mixed (default): some shapes small, faint, covered or cut off (world.VISIBLE_MIX); "
                             "clear: every shape crisp, the world the first checkpoints were trained on")
    parser.add_argument("--loss-mean", choices=("example", "token"), default="example",
                        help="stage 2: average the answer loss per example (default) or over all answer tokens")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--save-every", type=int, default=200)
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--tiny", action="store_true", help="a very small model (tests)")
    args = parser.parse_args(argv)
    if args.stop_at is not None and not 0 < args.stop_at <= args.steps:
        parser.error(f"--stop-at must be between 1 and --steps ({args.steps})")
    if args.batch is None:
        args.batch = 96 if args.stage == "stage1" else 32
    return args


def main(argv=None) -> None:
    train(parse_args(argv))


if __name__ == "__main__":
    main()
