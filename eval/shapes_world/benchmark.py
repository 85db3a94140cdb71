"""The shapes world's held-out benchmark, written in the published POPE, MME and CHAIR (COCO) formats, so that the
same evaluation command scores the toy lab and the real benchmarks.

    python -m eval.shapes_world.benchmark --out runs/shapes-bench [--n 300] [--seed 0]

writes, under ``--out``:

    pope/images/*.png, pope/shapes_pope_{random,popular,adversarial}.json     POPE: one JSON object a line
    pope/shapes_probe_{trigger,control}.json                                 the co-occurrence probe, as POPE files
    mme/{existence,count,position,color}/{images/*.png, questions_answer_YES_NO/*.txt}   MME: "question<TAB>Yes|No"
    chair/images/*.png, chair/instances.json, chair/captions.json            COCO instances / captions
    chair/synonyms.txt                                                       CHAIR's table, for the world's kinds

and prints the `python -m eval` commands that score them. Questions use the world's own grammar (the embedded model
was trained on it), so score with ``--prompt-suffix none``. Scenes are held out: their seeds lie far above the training
seeds. The POPE scenes mix trigger-without-partner scenes (where the co-occurrence bias bites) with ordinary ones.
"""

from __future__ import annotations

import argparse
import json
import os
import random

from models.shapes_world import world

from ..pattern_inflect import singularize
from . import evaluate

SPLITS = ("random", "popular", "adversarial")
MME_SUBTASKS = ("existence", "count", "position", "color")
CHAIR_SEED_OFFSET = 40  # scene-seed block of the description images (apart from POPE's and MME's)
MME_SEED_OFFSET = 41


def _save(scene: world.Scene, folder: str, name: str) -> str:
    os.makedirs(folder, exist_ok=True)
    world.render(scene).save(os.path.join(folder, name))
    return name


def write_pope(out: str, n: int, seed: int = 0) -> dict[str, str]:
    """Toy-POPE's three splits over ``n`` held-out scenes (half of them trigger-without-partner); returns the files."""
    scenes = evaluate.pope_scenes(n, seed)
    images = os.path.join(out, "images")
    names = [_save(scene, images, f"shapes_pope_{i:05d}.png") for i, scene in enumerate(scenes)]
    statistics = evaluate.training_world_statistics()
    files = {}
    for split in SPLITS:
        path = os.path.join(out, f"shapes_pope_{split}.json")
        with open(path, "w", encoding="utf-8") as f:
            for qid, (index, question) in enumerate(evaluate.pope_questions(scenes, split, seed, statistics), 1):
                record = {"question_id": qid, "image": names[index], "text": question.text, "label": question.answer}
                f.write(json.dumps(record) + "\n")
        files[split] = path
    return files


def write_partner_probe(out: str, n: int, seed: int = 0) -> dict[str, str]:
    """The co-occurrence probe as two POPE files: "is there a <partner> ?" on scenes with the trigger but not the
    partner ("trigger") and on scenes with neither ("control"). Every label is "no", so the harness's yes-ratio of
    each file is its false-"yes" rate."""
    images = os.path.join(out, "images")
    files = {}
    probe = evaluate.partner_probe(n, seed)
    for kind in ("trigger", "control"):
        path = os.path.join(out, f"shapes_probe_{kind}.json")
        with open(path, "w", encoding="utf-8") as f:
            for qid, item in enumerate((p for p in probe if p["kind"] == kind), 1):
                name = _save(item["scene"], images, f"shapes_probe_{kind}_{qid:05d}.png")
                question = item["question"]
                record = {"question_id": qid, "image": name, "text": question.text, "label": question.answer}
                f.write(json.dumps(record) + "\n")
        files[kind] = path
    return files


def _mme_pair(scene: world.Scene, subtask: str, rng: random.Random) -> list[world.Question] | None:
    """MME asks two questions per image, one whose answer is yes and one whose answer is no; None if the scene
    cannot carry the subtask."""
    singles = sorted(k for k in scene.kinds if scene.count(k) == 1)
    if subtask == "existence":
        present = rng.choice(sorted(scene.kinds))
        absent = rng.choice([k for k in world.KINDS if k not in scene.kinds])
        return [world.existence_question(scene, present), world.existence_question(scene, absent)]
    if subtask == "count":
        kind = rng.choice(sorted(scene.kinds))
        wrong = rng.choice([c for c in world.NUMBER_WORDS if c != scene.count(kind)])
        return [world.count_question(scene, kind, scene.count(kind)), world.count_question(scene, kind, wrong)]
    if subtask == "color":
        if not singles:
            return None
        kind = rng.choice(singles)
        colour = scene.the(kind).colour
        wrong = rng.choice([c for c in world.COLOURS if c != colour])
        return [world.colour_question(scene, kind, colour), world.colour_question(scene, kind, wrong)]
    if subtask == "position":
        if len(singles) < 2:
            return None
        a, b = rng.sample(singles, 2)
        holding = [r for r in world.RELATIONS if world.relation_holds(scene, a, r, b)]
        failing = [r for r in world.RELATIONS if not world.relation_holds(scene, a, r, b)]
        if not holding or not failing:
            return None
        return [world.position_question(scene, a, rng.choice(holding), b),
                world.position_question(scene, a, rng.choice(failing), b)]
    raise ValueError(f"unknown MME subtask {subtask!r}")


def write_mme(out: str, n: int, seed: int = 0) -> dict[str, int]:
    """``n`` images per hallucination subtask in MME's folder layout; returns the number of images per subtask."""
    counts = {}
    for t, subtask in enumerate(MME_SUBTASKS):
        rng = random.Random(seed * 1_000 + t)
        images = os.path.join(out, subtask, "images")
        answers = os.path.join(out, subtask, "questions_answer_YES_NO")
        os.makedirs(answers, exist_ok=True)
        written, i = 0, 0
        while written < n:
            scene = world.sample_scene(evaluate._seed(MME_SEED_OFFSET + t, i, seed))
            i += 1
            pair = _mme_pair(scene, subtask, rng)
            if pair is None:
                continue
            stem = f"shapes_{subtask}_{written:05d}"
            _save(scene, images, stem + ".png")
            with open(os.path.join(answers, stem + ".txt"), "w", encoding="utf-8") as f:
                for question in pair:
                    f.write(f"{question.text}\t{question.answer.capitalize()}\n")
            written += 1
        counts[subtask] = written
    return counts


def write_chair(out: str, n: int, seed: int = 0) -> dict[str, str]:
    """``n`` held-out scenes with COCO-format instance and caption annotations, and the world's synonym table."""
    images = os.path.join(out, "images")
    categories = [{"id": i + 1, "name": kind, "supercategory": "shape"} for i, kind in enumerate(world.KINDS)]
    category_id = {c["name"]: c["id"] for c in categories}
    coco_images, instances, captions = [], [], []
    for i in range(n):
        scene = world.sample_scene(evaluate._seed(CHAIR_SEED_OFFSET, i, seed))
        name = _save(scene, images, f"shapes_chair_{i:05d}.png")
        image_id = i + 1
        coco_images.append({"id": image_id, "file_name": name, "width": world.IMAGE_SIZE, "height": world.IMAGE_SIZE})
        for obj in scene.objects:
            box = [obj.cx - obj.radius, obj.cy - obj.radius, 2 * obj.radius, 2 * obj.radius]
            instances.append({"id": len(instances) + 1, "image_id": image_id, "category_id": category_id[obj.kind],
                              "bbox": box, "area": box[2] * box[3], "iscrowd": 0})
        captions.append({"id": image_id, "image_id": image_id, "caption": world.describe(scene)})
    files = {
        "instances": os.path.join(out, "instances.json"),
        "captions": os.path.join(out, "captions.json"),
        "synonyms": os.path.join(out, "synonyms.txt"),
    }
    with open(files["instances"], "w", encoding="utf-8") as f:
        json.dump({"images": coco_images, "annotations": instances, "categories": categories}, f)
    with open(files["captions"], "w", encoding="utf-8") as f:
        json.dump({"images": coco_images, "annotations": captions}, f)
    with open(files["synonyms"], "w", encoding="utf-8") as f:
        f.write("# The shapes world's object kinds for CHAIR: name first, then its other forms, and what the original\n"
                "# CHAIR's singularize makes of them where that is another word (\"cross\" -> \"cros\").\n")
        for kind in world.KINDS:
            forms = [kind, world.PLURALS[kind], singularize(kind), singularize(world.PLURALS[kind])]
            f.write(", ".join(dict.fromkeys(forms)) + "\n")
    return files


def write_benchmark(out: str, n: int = 300, seed: int = 0) -> dict:
    """All three benchmarks under ``out``; returns where each one is."""
    pope = write_pope(os.path.join(out, "pope"), n, seed)
    pope.update(write_partner_probe(os.path.join(out, "pope"), max(1, n // 3), seed))
    mme = write_mme(os.path.join(out, "mme"), max(1, n // 4), seed)
    chair = write_chair(os.path.join(out, "chair"), max(1, n // 3), seed)
    return {"pope": pope, "mme": {"root": os.path.join(out, "mme"), "images": mme}, "chair": chair}


def eval_commands(out: str, model: str = "assets/shapes-llava", methods: str = "") -> list[str]:
    """The `python -m eval` commands that score the written benchmark."""
    pope_files = " ".join(os.path.join(out, "pope", f"shapes_pope_{s}.json") for s in SPLITS)
    probe_files = " ".join(os.path.join(out, "pope", f"shapes_probe_{k}.json") for k in ("trigger", "control"))
    chair = os.path.join(out, "chair")
    # yes/no answers need a token or two; a description of six shapes is 24 words, and the default of 512 new tokens
    # would not fit the embedded model's 256-token context
    return [
        f"python -m eval pope --model {model}{methods} --questions {pope_files} "
        f"--images {os.path.join(out, 'pope', 'images')} --prompt-suffix none --max-new-tokens 4 "
        f"--out {out}/results-pope",
        f"python -m eval pope --model {model}{methods} --questions {probe_files} "
        f"--images {os.path.join(out, 'pope', 'images')} --prompt-suffix none --max-new-tokens 4 "
        f"--out {out}/results-probe",
        f"python -m eval mme --model {model}{methods} --root {os.path.join(out, 'mme')} --prompt-suffix none "
        f"--max-new-tokens 4 --out {out}/results-mme",
        f"python -m eval chair --model {model}{methods} --images {chair}/images --instances {chair}/instances.json "
        f"--captions {chair}/captions.json --synonyms {chair}/synonyms.txt --num-images 1000000 "
        f"--prompt '{world.DESCRIBE_PROMPT}' --max-new-tokens 64 --out {out}/results-chair",
    ]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder to write the benchmark into")
    parser.add_argument("--n", type=int, default=300, help="POPE scenes (MME gets n/4 images a subtask, CHAIR n/3)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    where = write_benchmark(args.out, args.n, args.seed)
    print(json.dumps(where, indent=2))
    print("\nScore it (add --method NAME as often as you like):")
    for command in eval_commands(args.out):
        print("  " + command)


if __name__ == "__main__":
    main()
