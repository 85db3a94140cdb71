"""The `python -m eval` command end to end on a tiny random LLaVA: output files, the printed table, resuming, refusing
to mix runs, clear input errors, and a two-process sharded run that equals the single-process one.

The tiny model answers gibberish, so the metrics here are checked against the answers it gave (re-scored with the
benchmark's own rule), not against fixed numbers; the arithmetic itself is checked by hand in the other test_eval_*
files.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from PIL import Image

from eval import caption_report, coco_vocabulary, parse_pope_answer, pope_metrics
from eval.cli import main
from models import build_tiny

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POPE_HEADER = ("| Split | Method | Accuracy | Precision | Recall | F1 | Yes ratio | Questions | Acc., first token | "
               "Readouts disagree |")

# Two splits of three questions; the first question is the same in both (one shared request).
POPE_SPLITS = {
    "random": [
        (1, "COCO_val2014_000000000001.jpg", "Is there a dog in the image?", "yes"),
        (2, "COCO_val2014_000000000002.jpg", "Is there a cat in the image?", "no"),
        (3, "COCO_val2014_000000000003.jpg", "Is there a car in the image?", "no"),
    ],
    "popular": [
        (1, "COCO_val2014_000000000001.jpg", "Is there a dog in the image?", "yes"),
        (2, "COCO_val2014_000000000002.jpg", "Is there a person in the image?", "no"),
        (3, "COCO_val2014_000000000003.jpg", "Is there a chair in the image?", "yes"),
    ],
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny("llava", tmp_path_factory.mktemp("eval-llava"), seed=0)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval-data")
    images = root / "val2014"
    images.mkdir()
    colours = [(220, 40, 40), (40, 200, 60), (40, 60, 220)]
    for index, colour in enumerate(colours, 1):
        picture = Image.new("RGB", (48, 36), colour)
        picture.paste((250, 250, 250), (10, 8, 26, 24))
        picture.save(images / f"COCO_val2014_{index:012d}.jpg")
    questions = {}
    for split, rows in POPE_SPLITS.items():
        path = root / f"coco_pope_{split}.json"
        path.write_text("".join(
            json.dumps({"question_id": qid, "image": image, "text": text, "label": label}) + "\n"
            for qid, image, text, label in rows
        ))
        questions[split] = str(path)
    instances = {
        "images": [{"id": i, "file_name": f"COCO_val2014_{i:012d}.jpg"} for i in (1, 2, 3)],
        "annotations": [{"image_id": 1, "category_id": 18}, {"image_id": 2, "category_id": 1}],
        "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}],
    }
    (root / "instances_val2014.json").write_text(json.dumps(instances))
    captions = {"annotations": [{"image_id": 1, "caption": "A dog on a red sofa."},
                                {"image_id": 2, "caption": "A man in a green field."}]}
    (root / "captions_val2014.json").write_text(json.dumps(captions))
    mme = root / "MME"
    (mme / "existence").mkdir(parents=True)
    for index in (1, 2):
        Image.open(images / f"COCO_val2014_{index:012d}.jpg").save(mme / "existence" / f"{index}.jpg")
        (mme / "existence" / f"{index}.txt").write_text(
            "Is there a dog in this image? Please answer yes or no.\tYes\n"
            "Is there a cat in this image? Please answer yes or no.\tNo\n"
        )
    return {"root": root, "images": str(images), "questions": questions, "mme": str(mme),
            "instances": str(root / "instances_val2014.json"), "captions": str(root / "captions_val2014.json")}


def pope_args(model_dir, data, out, *extra):
    return ["pope", "--model", model_dir, "--questions", data["questions"]["random"], data["questions"]["popular"],
            "--images", data["images"], "--out", str(out), "--max-new-tokens", "4", "--no-progress", *extra]


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def shard_records(out):
    records = []
    for name in sorted(os.listdir(out)):
        if name.startswith("answers.shard-"):
            with open(out / name, encoding="utf-8") as f:
                for line in f:
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError:
                        pass
    return records


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert all(word in text for word in ("pope", "chair", "mme", "accelerate launch"))
    expected = {
        "pope": ["--questions", "--images", "--prompt-suffix", "one-word", "single-word-or-phrase"],
        "chair": ["--instances", "--captions", "--image-list", "--num-images", "--sample-seed", "--prompt",
                  "--synonyms", "--chair-variant", "lvlm", "original"],
        "mme": ["--root", "--subtasks", "--prompt-suffix"],
    }
    common = ["--model", "--out", "--method", "--controls", "--device", "--dtype", "--quantization", "--limit",
              "--max-new-tokens", "--do-sample", "--temperature", "--top-p", "--top-k", "--seed", "--no-progress"]
    for benchmark, options in expected.items():
        with pytest.raises(SystemExit):
            main([benchmark, "--help"])
        text = capsys.readouterr().out
        missing = [option for option in options + common if option not in text]
        assert not missing, f"{benchmark} --help lacks {missing}"


def test_rerun_decodes_only_what_is_missing(model_dir, data, tmp_path, capsys):
    out = tmp_path / "pope"
    args = pope_args(model_dir, data, out, "--method", "vcd")
    assert main(args + ["--limit", "2"]) == 0
    assert "decoded 3 requests now, 0 were already done, 3 in all" in capsys.readouterr().out
    assert len(shard_records(out)) == 3

    assert main(args + ["--limit", "2"]) == 0
    assert "decoded 0 requests now, 3 were already done, 3 in all" in capsys.readouterr().out
    assert len(shard_records(out)) == 3  # nothing new was decoded

    # A process killed mid-write leaves half a line: it is skipped, and the next answer starts on a line of its own.
    with open(out / "answers.shard-000.jsonl", "a", encoding="utf-8") as f:
        f.write('{"key": "0123456789abcdef", "answ')
    assert main(args + ["--limit", "3"]) == 0  # the third question of each split: 2 new requests
    assert "decoded 2 requests now, 3 were already done, 5 in all" in capsys.readouterr().out
    assert len(shard_records(out)) == 5
    assert len(read_jsonl(out / "answers.jsonl")) == 5

    # Other settings in the same folder would mix answers of two runs: refused, and the folder is left as it was.
    assert main(args + ["--limit", "3", "--seed", "1"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and str(out / "run.json") in error and "decoding" in error
    assert len(shard_records(out)) == 5


def test_wrong_input_exits_2_with_the_file_named(model_dir, data, tmp_path, capsys):
    missing = str(tmp_path / "coco_pope_random.json")
    assert main(["pope", "--model", model_dir, "--questions", missing, "--images", data["images"],
                 "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: POPE question file {missing!r} does not exist")
    assert "Traceback" not in error
    assert main(["mme", "--model", model_dir, "--root", str(tmp_path / "MME"), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith(f"error: MME folder {str(tmp_path / 'MME')!r} does not exist")
    assert main(["pope", "--model", str(tmp_path / "no-model"), "--questions", data["questions"]["random"],
                 "--images", data["images"], "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.startswith(f"error: --model: model folder {str(tmp_path / 'no-model')!r} does not")


def test_bad_method_parameters_are_input_errors(model_dir, data, tmp_path, capsys):
    for spec, message in (("ritual:alpha=3", "ritual has no parameter(s) ['alpha']"),
                          ("vcd:alpha=lots", "alpha must be a number"),
                          ("nucleus", "unknown method 'nucleus'")):
        assert main(pope_args(model_dir, data, tmp_path / "out", "--method", spec)) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_bad_decoding_options_are_input_errors(model_dir, data, tmp_path, capsys):
    for option, name in ((["--top-p", "0"], "top_p"), (["--temperature", "0"], "temperature"),
                         (["--top-k", "-1"], "top_k")):
        assert main(pope_args(model_dir, data, tmp_path / "out", "--do-sample", *option)) == 2
        error = capsys.readouterr().err
        assert error.startswith("error: decoding options: ") and name in error and "Traceback" not in error
    assert not (tmp_path / "out").exists()  # refused before the model was loaded or anything written
    # OPERA is beam search only: a sampled run with it is refused up front too
    assert main(pope_args(model_dir, data, tmp_path / "out", "--do-sample", "--method", "opera")) == 2
    assert "opera is decoded by beam search only" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


SHARDED_OPTIONS = ["--limit", "2", "--method", "vcd", "--method", "ritual:alpha_pos=2", "--do-sample", "--seed", "7"]


@pytest.fixture(scope="module")
def sharded_run(model_dir, data, tmp_path_factory):
    """`python -m eval pope` as two processes, with the environment a launcher gives them (torchrun / accelerate
    launch; ACCELERATE_USE_CPU is what `accelerate launch --cpu` sets), talking over gloo on this machine.
    Returns the output folder and each process's (stdout, stderr)."""
    out = tmp_path_factory.mktemp("sharded") / "pope"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    processes = []
    for rank in (0, 1):
        env = dict(os.environ, OMP_NUM_THREADS="1", RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                   LOCAL_WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=port, ACCELERATE_USE_CPU="1")
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "eval", *pope_args(model_dir, data, out, *SHARDED_OPTIONS)],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        ))
    outputs = [p.communicate(timeout=240) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    return out, outputs


@pytest.mark.slow
def test_pope_command_end_to_end(sharded_run):
    out, ((stdout, stderr), (other_stdout, _)) = sharded_run
    assert "Traceback" not in stderr
    # The main process prints the table; the other prints nothing.
    assert POPE_HEADER in stdout and other_stdout == ""
    assert "decoded 3 requests now, 0 were already done, 3 in all" in stdout
    assert {"run.json", "answers.jsonl", "metrics.json", "metrics.csv", "metrics.md"} <= set(os.listdir(out))

    # --limit 2 keeps 2 questions a split; the dog question is in both splits: 3 requests, each answered by all sides.
    answers = read_jsonl(out / "answers.jsonl")
    assert [a["prompt"] for a in answers] == ["Is there a dog in the image?", "Is there a cat in the image?",
                                              "Is there a person in the image?"]
    assert all(set(a["answers"]) == {"baseline", "vcd", "ritual"} for a in answers)
    assert all(0 < n <= 4 for a in answers for n in a["tokens"].values())

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["run"]["methods"] == [["vcd", {"alpha": 1.0, "beta": 0.1, "noise_step": 500}],
                                         ["ritual", {"alpha_pos": 2.0, "beta": 0.1}]]
    assert metrics["run"]["decoding"] == {"max_new_tokens": 4, "do_sample": True, "temperature": 1.0, "top_p": 1.0,
                                          "top_k": 0, "seed": 7}
    by_prompt = {a["prompt"]: a["answers"] for a in answers}
    for split, rows in POPE_SPLITS.items():
        labels = [label for _, _, _, label in rows[:2]]
        for side in ("baseline", "vcd", "ritual"):
            predictions = [parse_pope_answer(by_prompt[text][side]) for _, _, text, _ in rows[:2]]
            assert metrics["metrics"][split][side] == pope_metrics(labels, predictions)
    assert [(row["split"], row["method"], row["n"]) for row in metrics["table"]] == [
        (split, side, 2) for split in ("random", "popular") for side in ("baseline", "vcd", "ritual")
    ]
    markdown = (out / "metrics.md").read_text()
    assert markdown in stdout and POPE_HEADER in markdown
    assert "sampling (temperature 1, top-p 1, top-k off)" in markdown
    csv_lines = (out / "metrics.csv").read_text().splitlines()
    rates = ",".join(f"{r},{r}_low,{r}_high" for r in ("accuracy", "precision", "recall", "f1", "yes_ratio"))
    assert csv_lines[0] == f"split,method,{rates},n,first_token_accuracy,disagreement"
    assert len(csv_lines) == 1 + 6
    _check_pope_statistics(metrics, answers, by_prompt, markdown)


def _check_pope_statistics(metrics, answers, by_prompt, markdown):
    """Intervals hold their estimate; every method meets the baseline in one McNemar test per split, Holm-adjusted;
    the first-token readout is each answer's p("yes") against p("no")."""
    statistics = metrics["statistics"]
    assert statistics["bootstrap"]["resamples"] > 0
    for split, sides in statistics["intervals"].items():
        for side, found in sides.items():
            for rate, value in found.items():
                assert value["low"] <= metrics["metrics"][split][side][rate] <= value["high"]
                assert value["estimate"] == pytest.approx(metrics["metrics"][split][side][rate])
    tests = statistics["paired_tests"]
    assert [(t["group"], t["side"], t["reference"]) for t in tests] == [
        (split, side, "baseline") for split in ("random", "popular") for side in ("vcd", "ritual")]
    assert all(t["p_value"] <= t["p_holm"] <= 1 and t["test"].startswith("McNemar") for t in tests)
    assert "paired tests of accuracy" in markdown
    for a in answers:
        for probs in a["first_token"].values():
            assert 0 <= probs["yes"] + probs["no"] <= 1 + 1e-6
    for split, rows in POPE_SPLITS.items():
        for side in ("baseline", "vcd", "ritual"):
            first = [by_prompt_first(answers, text, side) for _, _, text, _ in rows[:2]]
            text_rule = [parse_pope_answer(by_prompt[text][side]) for _, _, text, _ in rows[:2]]
            disagree = sum(f != t for f, t in zip(first, text_rule)) / 2
            assert statistics["readouts"][split][side]["disagreement"] == disagree


def by_prompt_first(answers, prompt, side):
    probs = next(a for a in answers if a["prompt"] == prompt)["first_token"][side]
    return "yes" if probs["yes"] > probs["no"] else "no"


@pytest.mark.slow
def test_sharded_run_equals_single_process_run(model_dir, data, sharded_run, tmp_path, capsys):
    sharded, _ = sharded_run
    single = tmp_path / "single"
    assert main(pope_args(model_dir, data, single, *SHARDED_OPTIONS)) == 0
    capsys.readouterr()
    # Each process decoded its own share into its own shard; together they hold every request once.
    shard_keys = [{r["key"] for r in read_jsonl(sharded / f"answers.shard-{i:03d}.jsonl")} for i in (0, 1)]
    assert shard_keys[0] and shard_keys[1] and not shard_keys[0] & shard_keys[1]
    assert len(shard_keys[0] | shard_keys[1]) == 3
    # Merged, they are the single-process run: the same answers, byte for byte, and the same metrics.
    assert (sharded / "answers.jsonl").read_text() == (single / "answers.jsonl").read_text()
    assert json.loads((sharded / "metrics.json").read_text()) == json.loads((single / "metrics.json").read_text())
    assert (sharded / "metrics.md").read_text() == (single / "metrics.md").read_text()


def _hand_tagger(tokens):
    """In place of nltk.pos_tag, whose tagger data CI does not download: every token a noun."""
    return [(token, "NN") for token in tokens]


def chair_args(model_dir, data, out, *extra):
    return ["chair", "--model", model_dir, "--images", data["images"], "--instances", data["instances"],
            "--captions", data["captions"], "--num-images", "3", "--limit", "2", "--method", "icd",
            "--max-new-tokens", "6", "--out", str(out), "--no-progress", *extra]


def test_chair_command_end_to_end(model_dir, data, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("eval.chair_words.nltk_tagger", lambda: _hand_tagger)
    out = tmp_path / "chair"
    assert main(chair_args(model_dir, data, out)) == 0  # the default variant: lvlm
    printed = capsys.readouterr().out
    assert "### CHAIR, lvlm variant (the LVLM papers' chair.py: nltk part-of-speech tags, WordNet lemmas)" in printed
    assert "| Method | CHAIR_s | CHAIR_i | Recall | Len | CHAIR_i at matched length | Images |" in printed
    assert (out / "chair_frontier.png").stat().st_size > 0 and "CHAIR: paired tests" in printed
    answers = read_jsonl(out / "answers.jsonl")
    assert [a["image"] for a in answers] == ["COCO_val2014_000000000001.jpg", "COCO_val2014_000000000002.jpg"]
    assert all(a["prompt"] == "Please describe this image in detail." for a in answers)
    truth = {"COCO_val2014_000000000001.jpg": {"dog", "couch"}, "COCO_val2014_000000000002.jpg": {"person"}}
    for variant in ("lvlm", "original"):
        if variant == "original":  # the other variant rescores the stored answers: nothing is decoded again
            assert main(chair_args(model_dir, data, out, "--chair-variant", "original")) == 0
            printed = capsys.readouterr().out
            assert "CHAIR, original variant (Rohrbach et al.'s chair.py: pattern's singularize)" in printed
            assert "decoded 0 requests now, 2 were already done" in printed
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["settings"]["image_ids"] == [1, 2]
        assert metrics["settings"]["chair_variant"] == metrics["settings"]["chair_words"]["variant"] == variant
        vocabulary = coco_vocabulary(variant, _hand_tagger if variant == "lvlm" else None)
        for side in ("baseline", "icd"):
            reports = [caption_report(a["answers"][side], truth[a["image"]], vocabulary) for a in answers]
            assert metrics["metrics"][side]["n"] == 2
            assert metrics["metrics"][side]["truth_objects"] == 3
            assert metrics["metrics"][side]["mentions"] == sum(len(r["mentions"]) for r in reports)
            assert metrics["metrics"][side]["length"] == sum(r["words"] for r in reports) / 2
            found = metrics["statistics"]["intervals"][side]
            assert all(found[k]["low"] <= metrics["metrics"][side][k] <= found[k]["high"]
                       for k in ("chair_s", "chair_i", "recall", "length"))
        assert [(t["side"], t["reference"], t["metric"]) for t in metrics["statistics"]["paired_tests"]] == [
            ("icd", "baseline", figure) for figure in ("chair_s", "chair_i", "chair_i_matched", "recall")]


def test_chair_command_says_how_to_get_the_lvlm_variants_data(model_dir, data, tmp_path, capsys, monkeypatch):
    import nltk

    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])  # nltk finds no data of its own here
    nltk.tag._get_tagger.cache_clear()
    assert main(chair_args(model_dir, data, tmp_path / "chair")) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: CHAIR's lvlm variant needs nltk's part-of-speech tagger")
    assert "`python -m nltk.downloader averaged_perceptron_tagger_eng wordnet`" in error
    assert not (tmp_path / "chair").exists()  # refused before loading the model or decoding anything


def test_mme_command_end_to_end(model_dir, data, tmp_path, capsys):
    out = tmp_path / "mme"
    assert main(["mme", "--model", model_dir, "--root", data["mme"], "--subtasks", "existence", "--method", "vcd",
                 "--max-new-tokens", "4", "--out", str(out), "--no-progress"]) == 0
    assert "| Method | Existence | Total |" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    for side in ("baseline", "vcd"):
        existence = metrics["metrics"][side]["existence"]
        assert (existence["questions"], existence["images"]) == (4, 2)
        assert existence["score"] == pytest.approx(100 * existence["acc"] + 100 * existence["acc_plus"])
        assert metrics["metrics"][side]["total"] == pytest.approx(existence["score"])


def test_controls_join_every_table_with_their_defaults(model_dir, data, tmp_path, capsys):
    out = tmp_path / "pope-controls"
    args = pope_args(model_dir, data, out, "--method", "vcd", "--method", "apc_only:beta=0.1", "--controls")
    assert main(args + ["--limit", "1"]) == 0
    table = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    for split in metrics["metrics"].values():
        assert list(split) == ["baseline", "vcd", "apc_only", "pba", "olm"]
        assert all("yes_ratio" in side for side in split.values())
    assert all(f"| random | {name} |" in table for name in ("apc_only", "pba", "olm"))
    settings = json.loads((out / "run.json").read_text())
    assert ["apc_only", {"beta": 0.1}] in settings["fingerprint"]["methods"]  # given by hand: kept, not the default
