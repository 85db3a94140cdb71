"""Many requests in one engine run (``decoding.answer_many``, ``python -m eval --batch-size``): the answers do not
depend on the batch size. On the embedded model and every tiny family, greedy and sampled, each request decoded in a
batch with the others gives the tokens it gets alone, with the same probabilities (to 1e-5); and the batch really is
one forward per token. Through the command: the same answers and metrics at --batch-size 1 and 3, and a run resumed
with another batch size."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import replace

import pytest
from decoding import answer_all, answer_many
from decoding.methods import REGISTRY
from decoding.sampling import SamplingConfig
from eval.cli import main
from eval.throughput import same_answers, write_pope_like
from models import TINY_FAMILIES
from pictures import red_square_on_noise

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EMBEDDED = os.path.join(REPO, "assets", "shapes-llava")
# Parameters under which SID's edit acts on a tiny model (test_engine.py: 2 layers, 12-16 image tokens).
ACTING_ON_TINY_MODELS = {"sid": {"keep": 4, "layer": 1}}
MAX_NEW_TOKENS = 6


@pytest.fixture(params=["shapes-llava", *TINY_FAMILIES])
def model(request, tiny_model):
    """The embedded model (its trained ECD and DCD parts ship with it), each tiny family (untrained ones: conftest)."""
    return tiny_model(request.param)


def requests():
    """Three requests: pictures of different sizes and aspect ratios (different tile and patch counts), questions of
    different lengths (different padding), each with its own seed."""
    pictures = [red_square_on_noise(0), red_square_on_noise(1).resize((40, 72)),
                red_square_on_noise(2).resize((96, 48))]
    questions = ["Is there a red square?", "What colour is the big square in the middle of the picture?",
                 "Describe the picture."]
    return [(picture, question, 11 + i) for i, (picture, question) in enumerate(zip(pictures, questions, strict=True))]


# Sampled runs add the dice to what greedy runs check with every method: methods whose rows or rules use the request's
# seed (VCD's noise, RITUAL's transform, Self-augmented VCD's sampled choice), ones of other row lengths, an attention
# edit and a detector reading attention.
SAMPLED = ("vcd", "ritual", "savcd", "m3id", "pai", "ecd")


def takes(adapter, name: str) -> bool:
    """Whether the family can run the method at all (the others are refused by name; test_path_equivalence.py checks
    that every path refuses alike): DCD needs a separate image projector (not Qwen-VL's), ONLY a LLaMA-shaped last
    decoder layer (not Gemma 3's), AGLA-like image tokens laid over the picture (not InstructBLIP's queries)."""
    if name == "dcd":
        return adapter.image_projector() is not None
    if name == "agla":
        return adapter.build_row("Is there a red square?", red_square_on_noise(0)).image_grid is not None
    if name == "only":
        try:
            adapter.check_one_layer_enhancement(0)
        except ValueError:
            return False
    return True


def methods(adapter, do_sample: bool) -> list[tuple[str, dict]]:
    """Greedy: every method and control the model takes (``takes``); on tiny models SID with parameters that act
    there, and no CODE: its pre-step writes a whole description per request, seconds on some tiny families, and its
    row (the question after that description, no image) is a text row like ICD's and M3ID's; the embedded model runs
    it. Sampled: ``SAMPLED`` (OPERA, beam search, refuses sampling)."""
    tiny = adapter.model_id != "shapes-llava"
    chosen = []
    for name in SAMPLED if do_sample else REGISTRY:
        if not takes(adapter, name) or (tiny and name == "code"):
            continue
        chosen.append((name, ACTING_ON_TINY_MODELS.get(name, {}) if tiny else {}))
    return chosen


def assert_same_answers(alone, together):
    """Tokens identical; every probability the trace holds (the distribution decoded from, each branch's, and their
    top candidates) equal to 1e-5; the methods' per-step scalars equal to 1e-5 or, for large ones, to 1e-5 of their
    size (LCD's weight α/H is in the tens where the amateur is sure)."""
    assert len(alone) == len(together)
    for (sides_a, infos_a), (sides_b, infos_b) in zip(alone, together, strict=True):
        assert list(sides_a) == list(sides_b)
        assert json.dumps(infos_a, sort_keys=True, default=str) == json.dumps(infos_b, sort_keys=True, default=str)
        for name, side_a in sides_a.items():
            side_b = sides_b[name]
            assert [t.token_id for t in side_a.tokens] == [t.token_id for t in side_b.tokens], name
            assert (side_a.text, side_a.stop_reason) == (side_b.text, side_b.stop_reason), name
            for a, b in zip(side_a.tokens, side_b.tokens, strict=True):
                assert set(a.branches) == set(b.branches)
                for view_a, view_b in [(a.final, b.final), *((a.branches[r], b.branches[r]) for r in a.branches)]:
                    assert view_a.prob == pytest.approx(view_b.prob, abs=1e-5), name
                    assert [c.token_id for c in view_a.top] == [c.token_id for c in view_b.top] or all(
                        # candidates tied in probability may come in either order
                        x.prob == pytest.approx(y.prob, abs=1e-5) for x, y in zip(view_a.top, view_b.top, strict=True)
                    ), name
                assert a.scalars.keys() == b.scalars.keys()
                for key in a.scalars:
                    assert a.scalars[key] == pytest.approx(b.scalars[key], rel=1e-5, abs=1e-5, nan_ok=True), (name, key)


@pytest.mark.parametrize("do_sample", [False, True], ids=["greedy", "sampled"])
def test_answers_do_not_depend_on_the_batch(model, do_sample):
    """Alone: ``answer_all`` with the request's seed as the run's seed (what evaluation did one request at a time);
    together: one ``answer_many`` run whose run seed is none of the requests' seeds."""
    chosen = methods(model, do_sample)
    sampling = SamplingConfig(do_sample=do_sample, seed=5)
    batch = requests()
    alone = [
        answer_all(model, image, question, chosen, sampling=replace(sampling, seed=seed), max_new_tokens=MAX_NEW_TOKENS)
        for image, question, seed in batch
    ]
    together = answer_many(model, batch, chosen, sampling=sampling, max_new_tokens=MAX_NEW_TOKENS)
    assert_same_answers(alone, together)


@pytest.fixture
def embedded(embedded_model):
    return embedded_model


def test_a_batch_is_one_forward_per_token(embedded):
    """All the requests' rows go through each forward together: as many forwards as one request alone, each step's
    batch holding every request's rows."""
    batch_sizes = []

    def count(module, args, kwargs, output):
        batch_sizes.append(kwargs["input_ids"].shape[0])

    handle = embedded.model.register_forward_hook(count, with_kwargs=True)
    try:
        answer_many(embedded, requests(), ["vcd"], max_new_tokens=4, ignore_eos=True)
        together = list(batch_sizes)
        batch_sizes.clear()
        answer_many(embedded, requests()[:1], ["vcd"], max_new_tokens=4, ignore_eos=True)
        alone = list(batch_sizes)
    finally:
        handle.remove()
    assert len(together) == len(alone) == 4  # the prefill, then one forward for each later token
    assert together[1:] == [3 * alone[1]] * 3


@pytest.fixture(scope="module")
def pope_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("batching-pope")
    return write_pope_like(str(folder), 4), str(folder / "images")


def pope_command(pope_files, out, *extra):
    questions, images = pope_files
    return ["pope", "--model", EMBEDDED, "--questions", questions, "--images", images, "--prompt-suffix", "none",
            "--method", "vcd", "--method", "m3id", "--do-sample", "--seed", "3", "--max-new-tokens", "4",
            "--no-progress", "--out", str(out), *extra]


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def assert_close(a, b, path="."):
    """JSON values equal, numbers to 1e-5 (a p("yes") may differ in its last bits between batch sizes)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for key in a:
            assert_close(a[key], b[key], f"{path}/{key}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_close(x, y, f"{path}/{i}")
    elif isinstance(a, float) and not isinstance(a, bool):
        assert b == pytest.approx(a, abs=1e-5, nan_ok=True), path
    else:
        assert a == b, path


@pytest.fixture(scope="module")
def batch_one(pope_files, tmp_path_factory):
    """The command's output folder at --batch-size 1."""
    out = tmp_path_factory.mktemp("batch-1") / "pope"
    assert main(pope_command(pope_files, out, "--batch-size", "1")) == 0
    return out


def test_the_command_gives_the_same_answers_at_any_batch_size(pope_files, batch_one, tmp_path, capsys):
    one, many = batch_one, tmp_path / "batch-3"
    # A run started at one batch size resumes at another: the batch size is not part of what defines the answers.
    assert main(pope_command(pope_files, many, "--batch-size", "2", "--limit", "3")) == 0
    assert main(pope_command(pope_files, many, "--batch-size", "3")) == 0
    out = capsys.readouterr().out
    assert "decoded 5 requests now, 3 were already done, 8 in all" in out
    answers_one, answers_many = read_jsonl(one / "answers.jsonl"), read_jsonl(many / "answers.jsonl")
    assert len(answers_one) == 8 and {a["answers"]["baseline"] for a in answers_one} <= {"yes", "no"}
    assert_close(answers_one, answers_many)
    assert (one / "run.json").read_text() == (many / "run.json").read_text()
    assert_close(json.loads((one / "metrics.json").read_text()), json.loads((many / "metrics.json").read_text()))
    shard = read_jsonl(many / "answers.shard-000.jsonl")
    assert [set(r) for r in shard] == [set(r) for r in read_jsonl(one / "answers.shard-000.jsonl")]


def test_the_help_says_what_does_not_share_a_batch(capsys):
    with pytest.raises(SystemExit):
        main(["pope", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--batch-size N" in text
    assert all(word in text for word in ("do not depend on it", "pre-steps", "OPERA's beam search"))


def test_the_throughput_script_tells_different_answers_apart():
    """``eval.throughput`` prints "same answers" from this comparison: equal records pass, a p("yes") within 1e-5
    passes, a different answer, token count or a p("yes") further off does not."""
    record = {"key": "k", "answers": {"baseline": "yes"}, "tokens": {"baseline": 2}, "stop": {"baseline": "eos"},
              "p_yes": {"baseline": 0.75}}

    def changed(field, value):
        return [{**record, field: {"baseline": value}}]

    assert same_answers([record], [dict(record)])
    assert same_answers([record], changed("p_yes", 0.75 + 5e-6))
    assert not same_answers([record], changed("p_yes", 0.75 + 5e-5))
    assert not same_answers([record], changed("answers", "no"))
    assert not same_answers([record], changed("tokens", 3))
    assert not same_answers([record], changed("p_yes", None))
    assert not same_answers([record], [])


@pytest.mark.slow
def test_a_sharded_run_in_batches_equals_the_single_process_run(pope_files, batch_one, tmp_path):
    """Two processes, as a launcher starts them (torchrun / accelerate launch; ACCELERATE_USE_CPU is what
    `accelerate launch --cpu` sets), each decoding its share in batches of 3: the merged answers are batch 1's."""
    out = tmp_path / "sharded"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "eval", *pope_command(pope_files, out, "--batch-size", "3")], cwd=REPO,
            env=dict(os.environ, OMP_NUM_THREADS="1", RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                     LOCAL_WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=port, ACCELERATE_USE_CPU="1"),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [p.communicate(timeout=240) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    shards = [read_jsonl(out / f"answers.shard-{i:03d}.jsonl") for i in (0, 1)]
    assert [len(shard) for shard in shards] == [4, 4]  # each process decoded its half
    assert_close(read_jsonl(batch_one / "answers.jsonl"), read_jsonl(out / "answers.jsonl"))


def test_a_malformed_request_is_refused_clearly(embedded):
    """Before any model work: no forward, not even the pre-steps of the well-formed requests before it (VACoDe's)."""
    picture = red_square_on_noise(0)
    forwards = []
    handle = embedded.model.register_forward_hook(lambda *_: forwards.append(1))
    try:
        for bad in [(picture,), [picture, "Is there a square?", 1, 2], "Is there a square?"]:
            with pytest.raises(ValueError, match=r"each request must be \(image, question\) or \(image, question, "):
                answer_many(embedded, [(picture, "Is there a square?"), bad], ["vacode"], max_new_tokens=1)
    finally:
        handle.remove()
    assert not forwards
    with pytest.raises(ValueError, match="seed must be an integer"):
        answer_many(embedded, [(picture, "Is there a square?", "seven")], ["vcd"], max_new_tokens=1)
    assert answer_many(embedded, [], ["vcd"]) == []
