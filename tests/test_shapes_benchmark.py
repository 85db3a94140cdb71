"""The shapes world's held-out benchmark in POPE, MME and CHAIR formats: every label agrees with the scene's ground
truth, the evaluation harness reads all three, and `python -m eval pope` scores it end to end."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest
from PIL import Image

from eval.chair import read_coco_captions, read_coco_instances, read_synonyms
from eval.mme import read_mme
from eval.pope import read_pope
from eval.shapes_world import benchmark, evaluate
from models.shapes_world import world

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EMBEDDED = os.path.join(REPO, "assets", "shapes-llava")
N = 8


@pytest.fixture(scope="module")
def bench_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes-bench")
    benchmark.write_benchmark(str(out), n=N, seed=0)
    return out


def test_pope_labels_are_the_scenes_ground_truth(bench_dir):
    scenes = evaluate.pope_scenes(N, 0)
    for split in benchmark.SPLITS:
        items = read_pope(bench_dir / "pope" / f"shapes_pope_{split}.json")
        assert items and {item.label for item in items} == {"yes", "no"}
        for item in items:
            index = int(item.image.split("_")[-1].split(".")[0])
            kind = item.question.split("is there a ")[1].split(" in the image")[0]
            assert item.label == ("yes" if world.exists(scenes[index], kind) else "no")
            # the picture on disk is the scene's rendering
            assert (bench_dir / "pope" / "images" / item.image).is_file()
        yes = sum(item.label == "yes" for item in items)
        assert yes == len(items) - yes  # POPE's balance: as many absent objects as present ones


def test_partner_probe_files_ask_for_the_absent_partner(bench_dir):
    rules = {f"{t}->{p}": (t, p) for t, (p, _) in world.BIASED.pairs.items()}
    for kind in ("trigger", "control"):
        items = read_pope(bench_dir / "pope" / f"shapes_probe_{kind}.json")
        assert len(items) == len(rules) * max(1, N // 3)
        assert {item.label for item in items} == {"no"}
        partners = {p for _, p in rules.values()}
        assert all(item.question.split("is there a ")[1].split(" in")[0] in partners for item in items)


def test_mme_pairs_one_yes_and_one_no_per_image(bench_dir):
    items = read_mme(bench_dir / "mme")
    by_image = {}
    for item in items:
        by_image.setdefault(item.image, []).append(item.answer)
    assert {item.subtask for item in items} == set(benchmark.MME_SUBTASKS)
    assert all(sorted(answers) == ["no", "yes"] for answers in by_image.values())
    assert len(by_image) == len(benchmark.MME_SUBTASKS) * max(1, N // 4)


def test_chair_annotations_match_the_scenes(bench_dir):
    chair = bench_dir / "chair"
    instances = read_coco_instances(chair / "instances.json")
    captions = read_coco_captions(chair / "captions.json")
    vocabulary = read_synonyms(chair / "synonyms.txt")
    data = json.loads((chair / "instances.json").read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    for i, image in enumerate(data["images"]):
        scene = world.sample_scene(evaluate._seed(benchmark.CHAIR_SEED_OFFSET, i, 0))
        kinds = {names[a["category_id"]] for a in data["annotations"] if a["image_id"] == image["id"]}
        assert kinds == scene.kinds
        assert captions[image["id"]] == [world.describe(scene)]
        assert Image.open(chair / "images" / image["file_name"]).size == (world.IMAGE_SIZE, world.IMAGE_SIZE)
    assert len(instances.file_names) == max(1, N // 3)
    assert vocabulary is not None


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isfile(os.path.join(EMBEDDED, "config.json")), reason="embedded model not built")
def test_eval_command_scores_the_shapes_benchmark_with_the_embedded_model(bench_dir, tmp_path):
    out = tmp_path / "results"
    pope = bench_dir / "pope"
    command = [
        sys.executable, "-m", "eval", "pope", "--model", EMBEDDED, "--method", "vcd", "--limit", "6",
        "--questions", str(pope / "shapes_pope_random.json"), "--images", str(pope / "images"),
        "--prompt-suffix", "none", "--max-new-tokens", "4", "--no-progress", "--out", str(out),
    ]
    done = subprocess.run(command, check=False, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]["random"]
    for side in ("baseline", "vcd"):
        assert metrics[side]["n"] == 6
        assert 0.0 <= metrics[side]["accuracy"] <= 1.0
    # the embedded model sees: on these held-out questions its plain answers are mostly right
    assert metrics["baseline"]["accuracy"] >= 4 / 6


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isfile(os.path.join(EMBEDDED, "config.json")), reason="embedded model not built")
def test_every_printed_eval_command_runs(tmp_path):
    # what `python -m eval.shapes_world.benchmark` tells users to run must work as printed (CHAIR once asked for
    # eval's default 512 new tokens, more than the embedded model's context)
    benchmark.write_benchmark(str(tmp_path), n=4, seed=0)
    commands = benchmark.eval_commands(str(tmp_path), model=EMBEDDED, methods=" --method vcd")
    assert [shlex.split(c)[3] for c in commands] == ["pope", "pope", "mme", "chair"]
    for command in commands:
        argv = [sys.executable] + shlex.split(command)[1:] + ["--limit", "2", "--no-progress"]
        done = subprocess.run(argv, check=False, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (command, done.stderr[-2000:])
        words = shlex.split(command)
        metrics = json.loads((tmp_path / words[words.index("--out") + 1] / "metrics.json").read_text())
        assert metrics["metrics"], command
