"""Rank a model's attention heads by their attention to the image while it writes captions, for DeCoRe and MaskCD
(``decoding/image_heads.py``), and save the list beside the model.

    python -m eval.image_heads --model assets/shapes-llava --work runs/heads     # -> assets/shapes-llava/image_heads/
    python -m eval.image_heads --model llava-hf/llava-1.5-7b-hf --device cuda --work runs/heads-llava15 --rows 1 \
        --coco-images val2014 --coco-instances instances_val2014.json --coco-captions captions_val2014.json

The model describes each image (greedy; the shapes world's "describe the image ." on ``--scenes`` validation scenes,
or CHAIR's prompt on ``--coco-count`` COCO images drawn by ``--seed``, ``eval.coco_data``); one teacher-forced forward
of each description then gives, at every position that predicts a description token, each head's attention weights of
that query; a head's score is the mean, over all generated tokens, of the share of those weights on the image tokens
(MaskCD's statistic as its paper is described: no code is public). The ranking, the scores, the chosen count
(``--top``; 0: DeCoRe's 50 of 1024 heads, 4.9 %, scaled to the model), the command and its seed go into
``image_heads/heads.json`` of the model's folder (for a Hub id, under ``$CD_IMAGE_HEADS_HOME``), or ``--out``.
Each chunk of images is cached under ``--work``: an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

import torch

from decoding.image_heads import head_folder, head_geometry, save_head_list, scaled_head_count
from models.shapes_world import world

from . import coco_data, ecd_data, strength_sweep
from .errors import EvalInputError

CHUNK = 25  # images per cached part


def head_shares(adapter, images, prompt: str, answers: list[list[int]], max_rows: int | None):
    """(layers, heads) sums of the image share of each head's attention over the answers' tokens, and their count:
    one teacher-forced forward per bucket of equal-length prompts, under eager attention (its weights)."""
    rows = [adapter.build_row(prompt, image) for image in images]
    layers, heads = head_geometry(adapter.model)
    total, tokens = torch.zeros(layers, heads, dtype=torch.float64), 0
    model = adapter.model
    before = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        for bucket in ecd_data.buckets(rows, max_rows):
            inputs = ecd_data.stacked(adapter, [rows[i] for i in bucket], [answers[i] for i in bucket])
            with torch.inference_mode():
                out = adapter.forward(**inputs, output_attentions=True, return_dict=True)
            for k, i in enumerate(bucket):
                row, n = rows[i], len(answers[i])
                at = torch.arange(row.length - 1, row.length - 1 + n, device=out.logits.device)
                image = row.image_token_positions.to(out.logits.device)
                for layer, weights in enumerate(out.attentions):
                    w = weights[k][:, at, :].float()  # (heads, answer tokens, keys)
                    share = w.index_select(-1, image).sum(-1) / w.sum(-1).clamp_min(1e-12)
                    total[layer] += share.sum(-1).double().cpu()
                tokens += n
    finally:
        model.set_attn_implementation(before)
    return total, tokens


def _images(args):
    """(the images, the prompt, what the data was): validation scenes of the shapes world, or COCO images."""
    if args.coco_images:
        coco = coco_data.read_coco(args.coco_images, args.coco_instances, args.coco_captions, args.coco_count,
                                   args.seed, args.chair_variant)
        source = {"source": "coco", "images": len(coco.ids), "instances": os.path.basename(args.coco_instances)}
        return [coco.image(i) for i in coco.ids], coco_data.DESCRIBE_PROMPT, source
    scenes = strength_sweep.world_scenes("validation", args.scenes)
    return [world.render(scene) for scene in scenes], world.DESCRIBE_PROMPT, {"source": "shapes world validation",
                                                                               "scenes": args.scenes}


def _chunk(adapter, images, prompt, args, index: int) -> dict:
    path = os.path.join(args.work, f"heads-{index:04d}.pt")
    if os.path.exists(path):
        return torch.load(path)
    answers = ecd_data.generate(adapter, images, prompt, do_sample=False, seed=args.seed,
                                max_new_tokens=args.max_new_tokens, max_rows=args.rows)
    total, tokens = head_shares(adapter, images, prompt, answers, args.rows)
    part = {"total": total, "tokens": tokens}
    torch.save(part, path + ".tmp")
    os.replace(path + ".tmp", path)
    return part


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a models.load_model source: local folder or Hub id")
    parser.add_argument("--out", help="the list's folder (default: where decoding.image_heads looks for it)")
    parser.add_argument("--work", required=True, help="cached parts of the statistic (resumable)")
    parser.add_argument("--scenes", type=int, default=100, help="shapes-world validation scenes described")
    parser.add_argument("--top", type=int, default=0, help="heads chosen (0: DeCoRe's 50 of 1024, scaled)")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="longest description (default: 40 on the shapes world, 96 on COCO)")
    parser.add_argument("--rows", type=int, default=None, help="most rows of one forward (default: no limit)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    coco_data.add_coco_arguments(parser)
    parser.set_defaults(coco_count=50, sweep=None)  # a few dozen captions (methods-3 §3); no sweep here
    args = parser.parse_args(argv)
    coco_data.check_coco_arguments(parser, args)
    if args.scenes < 1 or args.top < 0:
        parser.error("--scenes must be at least 1 and --top at least 0")
    if args.max_new_tokens is None:
        args.max_new_tokens = coco_data.DESCRIPTION_TOKENS if args.coco_images else ecd_data.MAX_DESCRIPTION_TOKENS
    args.command = shlex.join(["python", "-m", "eval.image_heads", *(sys.argv[1:] if argv is None else argv)])
    return args


def main(argv=None) -> int:
    """The command; 2 (and the message on stderr) when an input file is missing or malformed."""
    return coco_data.exit_status(run, parse_args(argv))


def run(args) -> None:
    from models import load_model

    torch.set_num_threads(args.threads)
    adapter = load_model(args.model, device=args.device)
    images, prompt, source = _images(args)
    os.makedirs(args.work, exist_ok=True)
    layers, heads = head_geometry(adapter.model)
    total, tokens = torch.zeros(layers, heads, dtype=torch.float64), 0
    for index, start in enumerate(range(0, len(images), CHUNK)):
        part = _chunk(adapter, images[start : start + CHUNK], prompt, args, index)
        total, tokens = total + part["total"], tokens + part["tokens"]
        print(f"{min(start + CHUNK, len(images))}/{len(images)} images, {tokens} tokens", file=sys.stderr, flush=True)
    if not tokens:
        raise EvalInputError("the model wrote no token on any image: no attention to rank heads by")
    scores = (total / tokens).float()
    chosen = min(args.top or scaled_head_count(layers * heads), layers * heads)
    extra = {"command": args.command, "seed": args.seed, "data": source, "prompt": prompt, "generated_tokens": tokens,
             "statistic": "mean share of each head's attention on the image tokens, at every position that predicts "
                          "a generated token (teacher-forced, greedy descriptions)"}
    path = save_head_list(args.out or head_folder(adapter.model_id), scores, chosen, extra)
    top = ", ".join(f"{name}" for name in _top_names(scores, chosen))
    print(f"top {chosen} of {layers * heads} heads (layer-head): {top}\nsaved {path}", file=sys.stderr, flush=True)


def _top_names(scores: torch.Tensor, count: int) -> list[str]:
    order = scores.flatten().argsort(descending=True)[:count].tolist()
    return [f"{i // scores.shape[1]}-{i % scores.shape[1]}" for i in order]


if __name__ == "__main__":
    sys.exit(main())
