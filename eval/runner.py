"""Decode a benchmark's requests under the baseline and every method, resumably, on one or many processes; score.

Every request is answered by the baseline and all methods in one batched engine run; ``RunConfig.batch_size``
requests share that run (``decoding.answer_many``: every row of all of them in one forward per token, a finished
side's rows leaving the batch). Its seed is derived from the run's seed and the request's key alone, and it keeps that
seed in a shared batch, so an answer does not depend on the order, on which process decoded it, on how many processes
there were, or on the batch size.

Files in the output folder:
    run.json                  what defines the answers (model, load options, methods, decoding); a rerun must match
    answers.shard-NNN.jsonl   one line per decoded request, appended by process NNN as it goes (the resume state)
    answers.jsonl             all answers of this benchmark, merged, in benchmark order (written by the main process)
    metrics.json / .csv / .md the scores; the Markdown table is also printed

Under ``accelerate launch`` each process decodes its share of the requests that no shard holds yet (accelerate's
``PartialState.split_between_processes``), then the main process merges the shards once all are done
(``wait_for_everyone``). A run that is stopped keeps every finished batch; rerunning the command decodes the rest.
"""

from __future__ import annotations

import datetime
import glob
import json
import os
import sys
import time
import zlib
from dataclasses import dataclass, field
from typing import Any

from decoding.sampling import SamplingConfig

from .benchmarks import Benchmark, Request
from .errors import EvalInputError
from .pope import answer_token_ids, first_token_probs
from .report import write_json, write_tables

SCHEMA_VERSION = 1
SHARD_PATTERN = "answers.shard-*.jsonl"


@dataclass
class RunConfig:
    """What defines the answers: the model and how it is loaded, the methods with their parameters, the decoding
    (``sampling``: greedy or sampled, and the run's seed, from which each request's seed is derived).
    ``batch_size`` (requests decoded together) is not among them: the answers do not depend on it, so a run may be
    resumed with another."""

    model: str
    methods: list[tuple[str, dict[str, Any]]]
    max_new_tokens: int
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    device: str | None = None
    dtype: str | None = None
    quantization: str | None = None
    batch_size: int = 1
    amateur: str | None = None  # CD's and LCD's amateur model (decoding.use_amateur); None: the one shipped, if any

    def fingerprint(self) -> dict[str, Any]:
        # The device is left out: moving a run between GPUs is fine.
        return {
            "model": self.model,
            "dtype": self.dtype,
            "quantization": self.quantization,
            "methods": [[name, params] for name, params in self.methods],
            "decoding": self.decoding(),
            **({"amateur": self.amateur} if self.amateur else {}),  # absent when unset: older run.json still match
        }

    def decoding(self) -> dict[str, Any]:
        # Written out, in this order, so that run.json and metrics.json keep their exact content.
        s = self.sampling
        return {"max_new_tokens": self.max_new_tokens, "do_sample": s.do_sample, "temperature": s.temperature,
                "top_p": s.top_p, "top_k": s.top_k, "seed": s.seed}

    def decoding_label(self) -> str:
        s = self.sampling
        if s.do_sample:
            mode = f"sampling (temperature {s.temperature:g}, top-p {s.top_p:g}, top-k {s.top_k or 'off'})"
        else:
            mode = "greedy"
        return f"{mode}, at most {self.max_new_tokens} new tokens, seed {s.seed}"


@dataclass
class RunSummary:
    """What a run did. decoded / already_done / total count requests (all processes together); on processes other
    than the main one, table and metrics are None."""

    total: int
    already_done: int
    decoded: int
    out_dir: str
    table: str | None = None
    metrics: dict[str, Any] | None = None
    files: list[str] = field(default_factory=list)


def request_seed(seed: int, key: str) -> int:
    """The seed of one request: a function of the run's seed and the request alone."""
    return zlib.crc32(f"{seed}/{key}".encode("utf-8")) & 0x7FFFFFFF


# ---- shards ----------------------------------------------------------------------------------------------------------

def read_shards(out_dir: str) -> dict[str, dict[str, Any]]:
    """Every answer record in the folder's shard files, by request key (first one wins). A line cut short by a
    killed process is skipped: its request is simply decoded again."""
    records: dict[str, dict[str, Any]] = {}
    for path in sorted(glob.glob(os.path.join(out_dir, SHARD_PATTERN))):
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict) and "key" in record and "answers" in record:
                    records.setdefault(record["key"], record)
    return records


def _open_shard(out_dir: str, index: int):
    path = os.path.join(out_dir, f"answers.shard-{index:03d}.jsonl")
    cut_short = False
    if os.path.exists(path) and os.path.getsize(path) > 0:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            cut_short = f.read(1) != b"\n"
    f = open(path, "a", encoding="utf-8")
    if cut_short:
        f.write("\n")  # the last line was cut short (a killed process): start ours on a line of its own
    return f


def _check_manifest(out_dir: str, benchmark: Benchmark, config: RunConfig) -> None:
    path = os.path.join(out_dir, "run.json")
    if not os.path.exists(path):
        return
    try:
        with open(path, encoding="utf-8") as f:
            previous = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise EvalInputError(f"{path} is not a readable run manifest ({e}); delete it or use another --out") from None
    if previous.get("benchmark") != benchmark.name:
        raise EvalInputError(f"{path}: this folder holds a {previous.get('benchmark')!r} run, not {benchmark.name!r}; "
                             "use another --out")
    before, now = previous.get("fingerprint", {}), json.loads(json.dumps(config.fingerprint()))
    differing = [key for key in sorted(set(before) | set(now)) if before.get(key) != now.get(key)]
    if differing:
        details = "; ".join(f"{key}: was {before.get(key)!r}, now {now.get(key)!r}" for key in differing)
        raise EvalInputError(f"{path}: the answers in this folder come from a different run ({details}); use another "
                             "--out to keep both, or delete the folder to start over")


# ---- the run ---------------------------------------------------------------------------------------------------------

def _partial_state(config: RunConfig):
    import torch
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    # PartialState only forms a multi-process group on CPU when told it runs on CPU (`accelerate launch --cpu` sets
    # ACCELERATE_USE_CPU); without CUDA there is nothing else it could run on.
    cpu = (parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available()
           or (config.device or "").startswith("cpu"))
    # A process that finishes its share early waits at the final barrier for the slowest one: far longer than the
    # default collective timeout (10 minutes for NCCL) on a long CHAIR run. A failed process still ends the others,
    # through the launcher.
    return PartialState(cpu=cpu, timeout=datetime.timedelta(hours=12))


def _load(config: RunConfig, state):
    from models import ModelLoadError, load_model

    device = config.device
    if device is None and state.num_processes > 1 and state.device.type != "cpu":
        device = state.device  # one GPU per process
    try:
        adapter = load_model(config.model, device=device, dtype=config.dtype, quantization=config.quantization)
    except ModelLoadError as e:
        raise EvalInputError(f"--model: {e}") from None
    from decoding.amateur import check_amateurs, use_amateur

    if config.amateur:
        try:
            use_amateur(adapter, config.amateur)
        except (ModelLoadError, ValueError) as e:
            raise EvalInputError(f"--amateur: {e}") from None
    try:
        check_amateurs(adapter, config.methods)  # CD's and LCD's amateur: refused before the first answer
    except ValueError as e:
        raise EvalInputError(str(e)) from None
    return adapter


def _open_image(root: str, request: Request):
    from PIL import Image, UnidentifiedImageError

    path = os.path.join(root, request.image)
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, UnidentifiedImageError) as e:
        raise EvalInputError(f"image {path!r} could not be read as an image: {e}") from None


def _jsonable(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def decode_requests(model, benchmark: Benchmark, requests: list[Request], config: RunConfig) -> list[dict[str, Any]]:
    """The requests' answers from every side, all in one batched ``answer_many`` run; one record per request."""
    from decoding import answer_many

    seeds = [request_seed(config.sampling.seed, request.key) for request in requests]
    answered = answer_many(
        model,
        [(_open_image(benchmark.image_root, r), r.prompt, seed) for r, seed in zip(requests, seeds, strict=True)],
        config.methods,
        sampling=config.sampling,
        baseline=True,
        max_new_tokens=config.max_new_tokens,
    )
    yes_no = answer_token_ids(model.tokenizer)
    return [_record(request, seed, sides, branches, yes_no)
            for request, seed, (sides, branches) in zip(requests, seeds, answered, strict=True)]


def _record(request: Request, seed: int, sides, branches, yes_no) -> dict[str, Any]:
    return {
        "key": request.key,
        "image": request.image,
        "prompt": request.prompt,
        "seed": seed,
        "answers": {name: side.text for name, side in sides.items()},
        "tokens": {name: len(side.tokens) for name, side in sides.items()},
        "stop": {name: side.stop_reason for name, side in sides.items()},
        "p_yes": {name: first_token_yes(side) for name, side in sides.items()},
        # POPE's first-token readout: p("yes") and p("no") over this tokenizer's own yes / no tokens
        "first_token": {name: first_token_probs(side, yes_no) for name, side in sides.items()},
        "branches": branches,
    }


def first_token_yes(side) -> float | None:
    """p("yes") at a side's first answer token, in the distribution it decoded from (after its rule and mask): the
    summed probability of its top candidates that read "yes" in any case or spacing; 0 when none of them does, None
    for an empty answer. What the lab's p(answer) histograms and confidence figures are made of."""
    if not side.tokens:
        return None
    return sum(c.prob for c in side.tokens[0].final.top if c.piece.strip().lstrip("\u2581\u0120").lower() == "yes")


def run_benchmark(benchmark: Benchmark, config: RunConfig, out_dir: str, *, progress: bool = True) -> RunSummary:
    """Decode what is not decoded yet (this process's share of it), then, on the main process, merge and score."""
    from tqdm.auto import tqdm

    state = _partial_state(config)
    os.makedirs(out_dir, exist_ok=True)
    done = read_shards(out_dir)
    if done:  # answers to protect: they must come from this same run
        _check_manifest(out_dir, benchmark, config)
    already_done = sum(1 for r in benchmark.requests if r.key in done)
    remaining = [r for r in benchmark.requests if r.key not in done]
    # Every process must have read the shards before any process appends to them.
    state.wait_for_everyone()
    if state.is_main_process:
        write_json(os.path.join(out_dir, "run.json"), {
            "schema_version": SCHEMA_VERSION, "benchmark": benchmark.name, "fingerprint": config.fingerprint(),
        })

    with state.split_between_processes(remaining) as share:
        if share:
            model = _load(config, state)
            where = f" [process {state.process_index + 1}/{state.num_processes}]" if state.num_processes > 1 else ""
            with _open_shard(out_dir, state.process_index) as shard:
                bar = tqdm(total=len(share), desc=f"{benchmark.name}{where}", unit="item", disable=not progress,
                           position=state.process_index, file=sys.stderr, dynamic_ncols=True)
                for start in range(0, len(share), config.batch_size):
                    _decode_batch(model, benchmark, share[start:start + config.batch_size], config, shard,
                                  state.process_index)
                    bar.update(min(config.batch_size, len(share) - start))
                bar.close()
    state.wait_for_everyone()

    summary = RunSummary(total=len(benchmark.requests), already_done=already_done, decoded=len(remaining),
                         out_dir=out_dir)
    if state.is_main_process:
        _merge_and_score(benchmark, config, out_dir, summary)
    return summary


def _decode_batch(model, benchmark: Benchmark, batch: list[Request], config: RunConfig, shard, process: int) -> None:
    """Decode one batch of requests and append their records to the process's shard."""
    started = time.perf_counter()
    records = decode_requests(model, benchmark, batch, config)
    seconds = round((time.perf_counter() - started) / len(batch), 3)  # each request's share of its batch's time
    for record in records:
        record["seconds"] = seconds
        record["process"] = process
        shard.write(json.dumps(record, default=_jsonable) + "\n")
    shard.flush()  # a stopped run keeps every finished batch


def _merge_and_score(benchmark: Benchmark, config: RunConfig, out_dir: str, summary: RunSummary) -> None:
    records = read_shards(out_dir)
    missing = [r.key for r in benchmark.requests if r.key not in records]
    if missing:
        raise RuntimeError(f"{len(missing)} requests have no answer after the run (first: {missing[0]}); a process "
                           "must have failed: rerun the command to decode them")
    sides = ["baseline"] + [name for name, _ in config.methods]
    answers_path = os.path.join(out_dir, "answers.jsonl")
    with open(answers_path, "w", encoding="utf-8") as f:
        for request in benchmark.requests:
            # Timing and process number vary between runs; the merged file holds only what the answers are.
            record = {k: v for k, v in records[request.key].items() if k not in ("seconds", "process")}
            f.write(json.dumps(record, default=_jsonable) + "\n")
    answers = {r.key: records[r.key]["answers"] for r in benchmark.requests}
    scored = benchmark.score(answers, sides, {r.key: records[r.key] for r in benchmark.requests})
    table = scored.table
    table.title = f"{table.title} — {config.model}, {config.decoding_label()}"
    params = [f"`{name}`: " + ", ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v:g}" for k, v in p.items())
              for name, p in config.methods]  # a text parameter (ICD's instruction) quoted
    table.notes = table.notes + ([f"Method parameters: {'; '.join(params)}."] if params else [])
    metrics = {
        "schema_version": SCHEMA_VERSION,
        "benchmark": benchmark.name,
        "run": config.fingerprint(),
        "settings": benchmark.settings,
        "requests": len(benchmark.requests),
        "metrics": scored.details,
        "statistics": scored.statistics,
        "table": table.rows,
    }
    write_json(os.path.join(out_dir, "metrics.json"), metrics)
    markdown, written = write_tables(out_dir, [table, *scored.tables])
    plots = scored.plot(out_dir) if scored.plot else []
    summary.table = markdown
    summary.metrics = metrics
    summary.files = [answers_path, os.path.join(out_dir, "metrics.json"), *written, *plots]
