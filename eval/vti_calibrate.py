"""VTI's steering directions of a model (``decoding.vti``; Liu, Ye, Zou, ICLR 2025, ``shengliu66/VTI@bb5dfee``),
computed once from a calibration set and saved where decoding reads them:

    python -m eval.vti_calibrate --model assets/shapes-llava --work /tmp/vti-work    # -> assets/shapes-llava/vti/
    python -m eval.vti_calibrate --model llava-hf/llava-1.5-7b-hf --device cuda --work runs/vti-llava15 \
        --coco-images train2014 --coco-instances instances_train2014.json --coco-captions captions_train2014.json

Each demo is an image with a clean caption and its hallucinated twin (the release's 100 COCO train2014 images with a
detailed caption and the same with co-occurring objects inserted, ``experiments/data/hallucination_vti_demos.jsonl``,
are not in the store). Ours, labelled so in ``vti.json``:

- the shapes world (default): scenes with their exact canonical description, and the same with one more object, of an
  absent partner kind where the scene's bias has one (else of a kind it lacks), inserted at its end;
- COCO (``--coco-images DIR --coco-instances FILE --coco-captions FILE``, ``eval.coco_data``): one human caption
  (seeded), and the same with one object word swapped for an absent category (``coco_data.swapped_caption``) and a
  sentence naming the absent category that co-occurs most with the image's objects in the drawn images appended.

Per demo (``utils.py`` L150–325): the textual difference, at every decoder layer, of the hidden state of the caption's
last token after the prompt and the clean image (clean minus hallucinated; ``hidden_states[1:]``); and the visual
difference, at every vision-encoder layer and token, of the layer's output averaged over ``--trials`` copies of the
image with ``--mask-ratio`` of its patches filled with the per-channel mean of the normalised image, minus the clean
image's. The directions are the mean over demos plus the first principal direction, as released (the visual one's
principal term in the release's scrambled layout, ``decoding.vti.visual_token_direction``), for each count of
``--demos`` (default 50 as released and 70 as the paper's README command; the first n demos each); a token-mean visual
direction (ours) for encoders whose output is not one view of a fixed number of tokens. Seeded (demos and masks); the
differences of each demo are cached under ``--work`` and a rerun resumes from them; a progress line per demo. Writes
``directions.safetensors`` and ``vti.json`` (command, seed, demos, settings) under ``--out`` (default: where
``decoding.vti`` looks: ``<folder>/vti``, or under ``$CD_VTI_HOME`` for a Hub id).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
from collections import Counter
from dataclasses import dataclass

import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from decoding.dcd import language_model_inputs
from decoding.detector import model_source
from decoding.vti import (
    MASK_RATIO,
    PAPER_DEMOS,
    RELEASED_DEMOS,
    TRIALS,
    Directions,
    VTIMissing,
    masked_view,
    patch_size,
    save_directions,
    textual_direction,
    vision_layer_outputs,
    visual_token_direction,
    vti_folder,
    vti_signature,
)
from models.shapes_world import world
from models.shapes_world.train import Progress

from . import coco_data
from .ecd_data import stacked
from .errors import EvalInputError

# The shapes demos' scenes: apart from training (10-20 M), DCD's pairs (30-31 M), evaluation (1e9 on), the app's
# scenes (1.5e9 on) and the strength sweeps' worlds (2e9 on).
SEED_BASE = 32_000_000
DATA_NOTE = ("ours: the release's demo file (100 COCO train2014 images with detailed captions and inserted "
             "co-occurring objects) is not available; see eval/vti_calibrate.py")


@dataclass
class Demo:
    """One calibration example: an image, the question, its clean caption and the hallucinated twin."""

    key: str
    image: Image.Image
    question: str
    clean: str
    hallucinated: str

    def record(self) -> dict:
        return {"key": self.key, "question": self.question, "clean": self.clean, "hallucinated": self.hallucinated}


# ---- demos ----------------------------------------------------------------------------------------------------------

def inserted_description(scene: world.Scene, rng: random.Random) -> str:
    """The scene's canonical description with one more object at its end: an absent partner kind where the world's
    bias has one for this scene, else a kind the scene lacks, in a random colour."""
    absent = sorted(world.absent_partners(scene)) or [k for k in world.KINDS if k not in scene.kinds]
    extra = world.SceneObject(rng.choice(absent), rng.choice(world.COLOURS), world.GRID, world.GRID)
    return world.describe(world.Scene([*scene.objects, extra]))


def shapes_demos(count: int, seed: int) -> list[Demo]:
    """``count`` scenes (not empty) from ``SEED_BASE``, each with its description and the inserted twin."""
    demos, i = [], 0
    while len(demos) < count:
        scene_seed = SEED_BASE + seed * 1_000_003 + i
        i += 1
        scene = world.sample_scene(scene_seed)
        if not scene.objects:
            continue
        rng = random.Random(f"vti shapes {scene_seed}")
        demos.append(Demo(str(scene_seed), world.render(scene), world.DESCRIBE_PROMPT, world.describe(scene),
                          inserted_description(scene, rng)))
    return demos


def co_occurring_absent(coco: coco_data.CocoImages, image_id: int, rng: random.Random) -> str | None:
    """The category the image lacks that shares most images with its objects among the drawn images (ties drawn)."""
    truth = coco.truth[image_id]
    absent = [c for c in coco.categories if c not in truth]
    if not absent or not truth:
        return None
    together = Counter(c for objects in coco.truth.values() if objects & truth for c in objects)
    best = max(together.get(c, 0) for c in absent)
    return rng.choice([c for c in absent if together.get(c, 0) == best])


def coco_twin(coco: coco_data.CocoImages, image_id: int, seed: int) -> tuple[str, str] | None:
    """(clean, hallucinated) for one image, or None when no twin can be made."""
    rng = random.Random(f"vti coco {seed} {image_id}")
    caption = rng.choice(coco.captions[image_id]).strip()
    extra = co_occurring_absent(coco, image_id, rng)
    if extra is None:
        return None
    swapped = coco_data.swapped_caption(coco, image_id, caption, rng) or caption
    article = "an" if extra[0] in "aeiou" else "a"
    return caption, f"{swapped.rstrip()} There is also {article} {extra} in the image."


def coco_demos(args, count: int) -> list[Demo]:
    coco = coco_data.read_coco(args.coco_images, args.coco_instances, args.coco_captions, args.coco_count, args.seed,
                               args.chair_variant)
    twins = {i: twin for i in coco.ids if (twin := coco_twin(coco, i, args.seed)) is not None}
    if len(twins) < count:
        raise EvalInputError(f"--demos asks for {count} demos and only {len(twins)} of the {len(coco.ids)} images "
                             "drawn have a caption naming a COCO object and an absent category to insert: give more "
                             "images (--coco-count) or fewer demos")
    chosen = random.Random(f"vti demos {args.seed}").sample(sorted(twins), count)
    return [Demo(str(i), coco.image(i), coco_data.DESCRIBE_PROMPT, *twins[i]) for i in chosen]


# ---- one demo's differences ------------------------------------------------------------------------------------------

@torch.no_grad()
def text_difference(adapter, demo: Demo) -> torch.Tensor:
    """``(layers, hidden)``: the last caption token's hidden state after every decoder layer, clean minus
    hallucinated, both after the prompt and the clean image (one forward of the two rows)."""
    row = adapter.build_row(demo.question, demo.image)
    answers = [adapter.tokenizer.encode(text, add_special_tokens=False) for text in (demo.clean, demo.hallucinated)]
    if not all(answers):
        raise EvalInputError(f"demo {demo.key}: a caption is empty once tokenised")
    states = adapter.forward(**stacked(adapter, [row, row], answers), output_hidden_states=True,
                             use_cache=False).hidden_states[1:]
    last = [row.length - 1 + len(a) for a in answers]
    clean, hallucinated = (torch.stack([h[b, last[b]].float().cpu() for h in states]) for b in (0, 1))
    return clean - hallucinated


@torch.no_grad()
def visual_difference(adapter, demo: Demo, trials: int, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """``(vision layers, *output)``: each vision-encoder layer's output averaged over ``trials`` masked copies of the
    image minus the clean image's (the image alone through the model's own input path, up to its language model)."""
    row = adapter.build_row(demo.question, demo.image)
    with vision_layer_outputs(adapter) as outputs:
        language_model_inputs(adapter, row)
        clean = [outputs[i] for i in range(len(outputs))]
        patch = patch_size(adapter)
        total = [torch.zeros_like(c) for c in clean]
        for _ in range(trials):
            views = [masked_view(v, patch, ratio, generator) for v in adapter.pixel_views(row.vision_kwargs)]
            masked = dataclasses.replace(row, vision_kwargs=adapter.with_pixel_views(row.vision_kwargs, views))
            language_model_inputs(adapter, masked)
            total = [t + outputs[i] for i, t in enumerate(total)]
    return torch.stack([t / trials - c for t, c in zip(total, clean, strict=True)])


def demo_differences(adapter, demo: Demo, index: int, args) -> dict[str, torch.Tensor]:
    """The demo's ``text`` and ``visual_mean`` differences, and ``visual_tokens`` where the vision encoder's output is
    one view of ``(tokens, dim)``; cached under ``--work`` (reused when the demo and settings are the same)."""
    path = os.path.join(args.work, f"demo-{index:04d}.safetensors")
    stamp = json.dumps({"demo": demo.record(), "trials": args.trials, "mask_ratio": args.mask_ratio,
                        "seed": args.seed}, sort_keys=True)
    if os.path.exists(path):
        with safe_open(path, "pt") as f:
            if (f.metadata() or {}).get("stamp") == stamp:
                return load_file(path)
    generator = torch.Generator().manual_seed(args.seed * 100_003 + index)
    visual = visual_difference(adapter, demo, args.trials, args.mask_ratio, generator)
    out = {"text": text_difference(adapter, demo),
           "visual_mean": visual.reshape(visual.shape[0], -1, visual.shape[-1]).mean(dim=1)}
    if visual.dim() == 4 and visual.shape[1] == 1:
        out["visual_tokens"] = visual[:, 0]
    save_file({k: v.contiguous() for k, v in out.items()}, path + ".tmp", metadata={"stamp": stamp})
    os.replace(path + ".tmp", path)
    return out


# ---- directions ------------------------------------------------------------------------------------------------------

def directions_of(differences: list[dict[str, torch.Tensor]], counts: list[int]) -> tuple[dict, dict, dict]:
    """Per count n, from the first n demos: the textual and token-mean visual directions, and the per-token visual
    ones where every one of those demos had them, of one shape."""
    text, means, tokens = {}, {}, {}
    for n in counts:
        first = differences[:n]
        text[n] = textual_direction(torch.stack([d["text"] for d in first]))
        means[n] = textual_direction(torch.stack([d["visual_mean"] for d in first]))
        shapes = {tuple(d["visual_tokens"].shape) if "visual_tokens" in d else None for d in first}
        if len(shapes) == 1 and None not in shapes:
            tokens[n] = visual_token_direction(torch.stack([d["visual_tokens"] for d in first]))
    return text, means, tokens


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="assets/shapes-llava", help="a models.load_model source: folder or Hub id")
    parser.add_argument("--out", default=None, help="where the directions go (default: where decoding.vti looks: "
                        "<folder>/vti, or under $CD_VTI_HOME for a Hub id)")
    parser.add_argument("--work", required=True, help="each demo's differences (a rerun resumes from them)")
    parser.add_argument("--demos", default=f"{RELEASED_DEMOS},{PAPER_DEMOS}",
                        help="comma-separated demo counts to save directions for (50: the release's run_mmhal_vti.py; "
                        "70: the paper's README command)")
    parser.add_argument("--trials", type=int, default=TRIALS, help="masked copies per image (num_trials)")
    parser.add_argument("--mask-ratio", type=float, default=MASK_RATIO, help="share of patches masked (mask_ratio)")
    parser.add_argument("--seed", type=int, default=42, help="demos and masks (the release's seed 42)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    coco_data.add_coco_arguments(parser)
    args = parser.parse_args(argv)
    args.sweep = None  # check_coco_arguments asks; this command has no sweep
    coco_data.check_coco_arguments(parser, args)
    try:
        args.counts = sorted({int(n) for n in args.demos.split(",")})
    except ValueError:
        parser.error(f"--demos must be comma-separated whole numbers, got {args.demos!r}")
    if args.counts[0] < 2:
        parser.error("--demos: every count must be at least 2 (a principal direction needs two demos)")
    if args.trials < 1 or not 0.0 <= args.mask_ratio <= 1.0:
        parser.error("--trials must be at least 1 and --mask-ratio between 0 and 1")
    args.command = "python -m eval.vti_calibrate " + " ".join(sys.argv[1:] if argv is None else argv)
    return args


def main(argv=None) -> int:
    """The command; 2 (and the message on stderr) when an input is missing or malformed, or the family cannot be
    steered."""
    return coco_data.exit_status(run, parse_args(argv), (EvalInputError, VTIMissing))


def run(args) -> None:
    from models import load_model

    torch.set_num_threads(args.threads)
    adapter = load_model(args.model, device=args.device)
    count = args.counts[-1]
    demos = coco_demos(args, count) if args.coco_images else shapes_demos(count, args.seed)
    os.makedirs(args.work, exist_ok=True)
    progress = Progress("vti demos", count, 0, every=1, stream=sys.stderr)
    differences = []
    for index, demo in enumerate(demos):
        differences.append(demo_differences(adapter, demo, index, args))
        progress.update(index)
    text, means, tokens = directions_of(differences, args.counts)
    settings = {"demos": args.counts, "trials": args.trials, "mask_ratio": args.mask_ratio, "seed": args.seed,
                "source": "coco" if args.coco_images else "shapes world"}
    if args.coco_images:
        settings.update({k: getattr(args, k) for k in ("coco_images", "coco_instances", "coco_captions", "coco_count",
                                                       "chair_variant")})
    config = {"method": "VTI (Liu, Ye, Zou, ICLR 2025; shengliu66/VTI@bb5dfee)", "command": args.command,
              "settings": settings, "data": DATA_NOTE, "demos": [d.record() for d in demos],
              "signature": vti_signature(adapter),
              "visual_tokens": {str(n): list(t.shape) for n, t in tokens.items()},
              "visual": "per token (as released) and token-mean" if tokens else "token-mean only (ours)"}
    out = args.out or vti_folder(model_source(adapter))
    save_directions(Directions(text, means, tokens, config), out)
    print(f"saved {out}: directions for {', '.join(map(str, args.counts))} demos ({config['visual']})",
          file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
