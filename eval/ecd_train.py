"""Train the ECD-like hallucination detector of a model (``decoding/detector.py``), measure it, and choose ECD's
strength on a validation world.

    python -m eval.ecd_train --model assets/shapes-llava --work runs/ecd            # -> assets/shapes-llava/ecd/
    python -m eval.ecd_train --model assets/shapes-llava --work runs/ecd --sweep 0,0.5,1,2,4
    python -m eval.ecd_train --model llava-hf/llava-1.5-7b-hf --device cuda --work runs/ecd-llava15 \
        --coco-images val2014 --coco-instances instances_val2014.json --coco-captions captions_val2014.json

Data (``--scenes`` per world; the shapes world's seeds are ``strength_sweep.SEED_BASE`` + the world's offset, apart
from the model's own training and evaluation scenes): on each scene the model's own greedy and sampled descriptions, and
teacher-forced ones (the canonical description, and the same with one object's kind, then one object's colour,
swapped for a wrong one), so right and wrong words occur at the same positions; and yes/no questions (existence,
colour, count — the asked number swapped half the time) with both answers forced. Every answer token is labelled by
the world's grader (``models.shapes_world.grading``): 1 where it is hallucinated or missed, 0 where correct, 0 for
words that claim nothing (group "other"). Any model can be trained this way on the world's scenes (the grader reads
any LVLM's answers).

With ``--coco-images DIR --coco-instances FILE --coco-captions FILE`` the answers are COCO's instead
(``eval.coco_data``; ``--coco-count`` images drawn, split by image id): the model's own descriptions, a human caption
and the same with one object word swapped for an absent category, and existence questions, labelled by CHAIR's object
words (1: an object not in the image, 0: one that is). ``--rows`` caps the rows of one forward (attention maps of a
real model's long prompts are large).

Features come from one teacher-forced forward per prompt, at each answer position exactly what the decoding engine
gives the rule at that step (``decoding.detector``); they are cached under ``--work``, and training resumes from the
checkpoint there. It prints, and writes into the detector's ``detector.json``, the held-out (test world) AUROC and
AUPRC per token, object and attribute words and yes/no answers apart, on all tokens and on the model's own
generations only. ``--sweep`` decodes the validation world with the baseline and ECD at each strength (sampling at
T = 1, common seeds) and reports the graded errors of each; the default strength (``ECD_DEFAULT_LAM``) is its pick.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

from decoding.detector import Detector, model_signature, save_detector
from models.shapes_world.train import Progress, resume, save_atomically

from . import coco_data, ecd_data, strength_sweep

GROUPS = ("object", "attribute", "answer")


# ---- metrics ----------------------------------------------------------------------------------------------------

def auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Area under the ROC curve (ties count half), by the rank-sum formula; NaN with one class only.

    >>> auroc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1]))
    0.75
    """
    pos, neg = int(labels.sum()), int((1 - labels).sum())
    if not pos or not neg:
        return float("nan")
    order = scores.double().argsort()
    ranks = torch.empty_like(order, dtype=torch.float64).scatter_(0, order, torch.arange(1, len(scores) + 1).double())
    for value in scores.unique():  # average ranks of ties
        tied = scores == value
        ranks[tied] = ranks[tied].mean()
    return float((ranks[labels.bool()].sum() - pos * (pos + 1) / 2) / (pos * neg))


def auprc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """Average precision: the mean, over the positives, of the precision at their rank (NaN without positives).

    >>> auprc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1]))
    0.8333333333333333
    """
    if not int(labels.sum()):
        return float("nan")
    hits = labels[scores.argsort(descending=True)].double()
    precision = hits.cumsum(0) / torch.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / hits.sum())


def evaluate(detector: Detector, data: dict) -> dict:
    """AUROC / AUPRC per group (and all content words together), on all tokens and on generated ones only."""
    with torch.no_grad():
        scores = detector_scores(detector, data, torch.arange(len(data["label"])))
    out = {}
    for subset in ("all", "generated"):
        keep = torch.ones_like(data["label"], dtype=torch.bool) if subset == "all" else data["generated"]
        for group in (*GROUPS, "content"):
            in_group = data["group"] != ecd_data.GROUP_IDS["other"] if group == "content" else (
                data["group"] == ecd_data.GROUP_IDS[group])
            chosen = keep & in_group
            labels = data["label"][chosen]
            out[f"{subset}/{group}"] = {
                "tokens": int(chosen.sum()), "wrong": int(labels.sum()),
                "auroc": auroc(scores[chosen], labels), "auprc": auprc(scores[chosen], labels),
                "base_rate": float(labels.float().mean()) if len(labels) else float("nan"),
            }
    return out


# ---- training ---------------------------------------------------------------------------------------------------

def detector_scores(detector: Detector, data: dict, index: torch.Tensor) -> torch.Tensor:
    proj = detector.token(data["embeddings"][data["token"][index]])[:, None, :]
    return detector.score(data["candidate"][index][:, None, :], data["step"][index], data["hidden"][index], proj)[:, 0]


def new_detector(model, hidden_layer: int, rank: int, data: dict, seed: int) -> Detector:
    torch.manual_seed(seed)
    detector = Detector({**model_signature(model), "hidden_layer": hidden_layer, "rank": rank})
    flat = torch.cat([data["candidate"], data["step"]], dim=1)
    detector.fit_standardisation(flat, data["hidden"])
    return detector


def train_detector(detector: Detector, data: dict, args) -> None:
    """Weighted logistic loss ("other" tokens weigh ``--other-weight``), AdamW, resumable from ``--work``."""
    optimizer = torch.optim.AdamW(detector.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    checkpoint = os.path.join(args.work, "detector-checkpoint.pt")
    n = len(data["label"])
    per_epoch = (n + args.batch - 1) // args.batch
    start = resume(checkpoint, "the detector", detector=detector, optimizer=optimizer)
    total = args.epochs * per_epoch
    weight = torch.where(data["group"] == ecd_data.GROUP_IDS["other"], args.other_weight, 1.0)
    progress = Progress("ecd detector", total, start, every=args.log_every)
    detector.train()
    for step in range(start, total):
        epoch, i = divmod(step, per_epoch)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed * 1009 + epoch))
        index = order[i * args.batch : (i + 1) * args.batch]
        z = detector_scores(detector, data, index)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            z, data["label"][index].float(), weight=weight[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        progress.update(step, loss=loss.item())
        if (step + 1) % per_epoch == 0 or step + 1 == total:
            save_atomically({"step": step + 1, "detector": detector.state_dict(),
                             "optimizer": optimizer.state_dict()}, checkpoint)
    detector.eval()


# ---- the λ sweep on the validation world -----------------------------------------------------------------------

def sweep(adapter, lams: list[float], n: int, seed: int) -> dict:
    """Graded errors (hallucinated + missed words) of the baseline and ECD at each strength on the validation world
    (``eval.strength_sweep``); the pick: fewest errors, the smallest on ties."""
    errors = strength_sweep.graded_errors(adapter, "ecd", "lam", lams, n, seed)
    return {"questions": n, "errors": errors, "chosen_lam": strength_sweep.pick(lams, errors), "seed": seed}


def coco_source(args) -> ecd_data.Source:
    """COCO's images as the detector's data (``eval.coco_data``), split by image id."""
    coco = coco_data.read_coco(args.coco_images, args.coco_instances, args.coco_captions, args.coco_count, args.seed,
                               args.chair_variant)
    splits = coco_data.split_images(coco.ids, args.seed)
    tokens = args.description_tokens or coco_data.DESCRIPTION_TOKENS

    def examples(adapter, ids, seed):
        return coco_data.coco_examples(adapter, coco, ids, seed, tokens, args.rows)

    summary = {"source": "coco", "images": {k: len(v) for k, v in splits.items()}, "chair_variant": args.chair_variant,
               "description_tokens": tokens}
    return ecd_data.Source("coco", splits, examples, f"coco-{coco.digest()}-{tokens}", summary, args.rows)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a models.load_model source: local folder or Hub id")
    parser.add_argument("--out", help="the detector's folder (default: where decoding.detector looks for it)")
    parser.add_argument("--work", required=True, help="cached features and the training checkpoint (resumable)")
    parser.add_argument("--scenes", type=int, default=1200, help="training scenes (validation/test: a quarter each)")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--other-weight", type=float, default=0.2, help="loss weight of tokens that claim nothing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sweep", help="comma-separated strengths to try on the validation world, e.g. 0,0.5,1,2")
    parser.add_argument("--sweep-questions", type=int, default=200)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--log-every", type=int, default=50)
    coco_data.add_coco_arguments(parser)
    parser.add_argument("--description-tokens", type=int, default=None,
                        help="longest own description (default: 40 on the shapes world, 96 on COCO)")
    parser.add_argument("--rows", type=int, default=None, help="most rows of one forward (default: no limit)")
    args = parser.parse_args(argv)
    coco_data.check_coco_arguments(parser, args)
    return args


def main(argv=None) -> int:
    """The command; 2 (and the message on stderr) when an input file is missing or malformed."""
    return coco_data.exit_status(run, parse_args(argv))


def run(args) -> None:
    from decoding.detector import detector_folder
    from models import load_model

    torch.set_num_threads(args.threads)
    adapter = load_model(args.model, device=args.device)
    out = args.out or detector_folder(adapter.model_id)
    if args.sweep:
        report = sweep(adapter, [float(x) for x in args.sweep.split(",")], args.sweep_questions, args.seed)
        print(ecd_data.sweep_table(report))
        os.makedirs(out, exist_ok=True)
        ecd_data.write_json(os.path.join(out, "sweep.json"), report)
        return
    source = coco_source(args) if args.coco_images else ecd_data.shapes_source(args)
    os.makedirs(args.work, exist_ok=True)
    hidden_layer = model_signature(adapter.model)["num_layers"] // 2
    data = {split: ecd_data.cached_features(adapter, source, split, args.work, args.seed, hidden_layer)
            for split in ("train", "test")}
    detector = new_detector(adapter.model, hidden_layer, args.rank, data["train"], args.seed)
    train_detector(detector, data["train"], args)
    report = evaluate(detector, data["test"])
    print(ecd_data.metrics_table(report))
    save_detector(detector, out, {"evaluation": report, "data": ecd_data.data_summary(data, source, args)})
    print(f"saved {out}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
