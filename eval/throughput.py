"""Requests per minute of ``python -m eval`` at several ``--batch-size``s, the answers checked equal, and peak memory.

    python -m eval.throughput                                      # embedded model, POPE-like, batch 1, 4, 8, 16
    python -m eval.throughput --workload chair --requests 32       # descriptions (64 new tokens)
    python -m eval.throughput --model random:llava-1.5-7b --workload chair --max-new-tokens 128   # a GPU

The requests are shapes-world pictures (held-out scenes) with, for ``pope``, POPE's question on a kind the picture
holds or lacks (read back through ``eval.benchmarks.pope_benchmark``, as the command reads POPE), or, for ``chair``,
the world's description prompt. Each batch size runs in a process of its own, so that its peak memory is its own (the
high-water mark of resident memory on CPU; torch's peak allocation on CUDA): it loads the model, decodes one batch
untimed (warm-up), then decodes every request through the command's own path (``eval.runner.decode_requests``, N
requests per engine run) ``--repeats`` times and keeps the median wall time and the median CPU time of the process
(on a shared machine the CPU time is the steadier measure of the work; on a GPU only the wall time means much). The
parent then checks that every batch size gave batch 1's answers: texts, token counts and stop reasons equal, p("yes")
to 1e-5.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from decoding.sampling import SamplingConfig

from .benchmarks import Benchmark, Request, pope_benchmark, request_key
from .runner import RunConfig, decode_requests

WORKLOADS = {"pope": 4, "chair": 64}  # default new tokens: a yes/no answer; a shapes-world description (~24 words)
SCENE_SEED = 7_000_000  # held out: far above the training scenes' seeds


def write_pope_like(folder: str, n_scenes: int) -> str:
    """Pictures of ``n_scenes`` held-out scenes and a POPE question file over them: for each scene a kind it holds
    ("yes") and one it lacks ("no"). Returns the question file; the pictures are in ``folder/images``."""
    from models.shapes_world import world

    images = os.path.join(folder, "images")
    os.makedirs(images, exist_ok=True)
    path = os.path.join(folder, "shapes_pope_random.json")
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n_scenes):
            scene = world.sample_scene(SCENE_SEED + i)
            name = f"scene_{i:05d}.png"
            world.render(scene).save(os.path.join(images, name))
            present = sorted(scene.kinds)[0]
            absent = next(k for k in world.KINDS if k not in scene.kinds)
            for j, kind in enumerate((present, absent)):
                question = world.existence_question(scene, kind)
                record = {"question_id": 2 * i + j + 1, "image": name, "text": question.text, "label": question.answer}
                f.write(json.dumps(record) + "\n")
    return path


def workload(folder: str, name: str, n_requests: int) -> Benchmark:
    """The ``n_requests`` requests of a workload, written under ``folder`` on first use."""
    from models.shapes_world import world

    questions = os.path.join(folder, "shapes_pope_random.json")
    if not os.path.exists(questions):
        write_pope_like(folder, n_requests)  # POPE takes the first n questions (two a scene), a description each scene
    images = os.path.join(folder, "images")
    if name == "pope":
        return pope_benchmark([questions], images, "none", limit=n_requests)
    names = sorted(os.listdir(images))[:n_requests]
    requests = [Request(request_key(image, world.DESCRIBE_PROMPT), image, world.DESCRIBE_PROMPT) for image in names]
    return Benchmark("chair", images, requests, score=None)


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(args) -> dict:
    """In the child: load, warm up, time every request at ``args.batch_size``; the records and the figures."""
    import torch

    from decoding.bench import load_bench_model

    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_bench_model(args.model, args.device, args.dtype, None)
    cuda = model.device.type == "cuda"
    bench = workload(args.data, args.workload, args.requests)
    config = RunConfig(model=args.model, methods=args.methods, max_new_tokens=args.max_new_tokens,
                       sampling=SamplingConfig(do_sample=args.do_sample), batch_size=args.batch_size)
    batches = [bench.requests[i:i + args.batch_size] for i in range(0, len(bench.requests), args.batch_size)]
    loaded = torch.cuda.memory_allocated() if cuda else _resident_bytes()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    decode_requests(model, bench, batches[0], config)  # warm-up
    times, cpu_times, records = [], [], None
    for _ in range(args.repeats):
        if cuda:
            torch.cuda.synchronize()
        start, cpu_start = time.perf_counter(), time.process_time()
        done = [record for batch in batches for record in decode_requests(model, bench, batch, config)]
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
        records = records or done
    peak = torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    seconds, cpu_seconds = statistics.median(times), statistics.median(cpu_times)
    return {
        "batch_size": args.batch_size, "requests": len(bench.requests), "seconds": seconds,
        "requests_per_minute": 60 * len(bench.requests) / seconds,
        "requests_per_cpu_minute": 60 * len(bench.requests) / cpu_seconds, "peak_gib": peak / 2**30,
        "peak_over_loaded_gib": (peak - loaded) / 2**30, "memory": "CUDA allocated" if cuda else "resident",
        "device": str(model.device), "records": records,
    }


def same_answers(a: list[dict], b: list[dict]) -> bool:
    """Texts, token counts and stop reasons equal; p("yes") to 1e-5."""
    def p_yes_close(x, y):
        return x.keys() == y.keys() and all(
            (x[k] is None) == (y[k] is None) and (x[k] is None or abs(x[k] - y[k]) <= 1e-5) for k in x
        )

    return len(a) == len(b) and all(
        (r["key"], r["answers"], r["tokens"], r["stop"]) == (s["key"], s["answers"], s["tokens"], s["stop"])
        and p_yes_close(r["p_yes"], s["p_yes"])
        for r, s in zip(a, b, strict=True)
    )


def _child(args, batch_size: int) -> dict:
    """Run ``measure`` for one batch size in a fresh process; its figures."""
    command = [sys.executable, "-m", "eval.throughput", "--one-batch-size", str(batch_size), "--data", args.data,
               *_forwarded(args)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"batch size {batch_size} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _forwarded(args) -> list[str]:
    options = ["--model", args.model, "--workload", args.workload, "--requests", str(args.requests),
               "--max-new-tokens", str(args.max_new_tokens), "--repeats", str(args.repeats)]
    options += [item for spec in args.method or ["vcd"] for item in ("--method", spec)]  # with its parameters
    for flag, value in (("--device", args.device), ("--dtype", args.dtype), ("--threads", args.threads)):
        if value is not None:
            options += [flag, str(value)]
    return options + (["--do-sample"] if args.do_sample else [])


def report(results: list[dict]) -> str:
    """The figures as a Markdown table, each batch size's answers compared with the first one's."""
    first = results[0]
    lines = ["| batch size | requests | seconds | requests / min | x batch " f"{first['batch_size']} | "
             f"requests / CPU-min | x batch {first['batch_size']} | peak {first['memory']} GiB | "
             "over the loaded model GiB | same answers |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in results:
        same = "yes" if same_answers(first["records"], r["records"]) else "NO"
        lines.append(f"| {r['batch_size']} | {r['requests']} | {r['seconds']:.2f} | {r['requests_per_minute']:.0f} | "
                     f"{r['requests_per_minute'] / first['requests_per_minute']:.2f} | "
                     f"{r['requests_per_cpu_minute']:.0f} | "
                     f"{r['requests_per_cpu_minute'] / first['requests_per_cpu_minute']:.2f} | {r['peak_gib']:.3f} | "
                     f"{r['peak_over_loaded_gib']:.3f} | {same} |")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    from .cli import _positive_int

    parser = argparse.ArgumentParser(prog="python -m eval.throughput", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="assets/shapes-llava",
                        help="a load_model() source, tiny:FAMILY, or random:llava-1.5-7b (random fp16 weights, GPU)")
    parser.add_argument("--workload", default="pope", choices=list(WORKLOADS))
    parser.add_argument("--batch-sizes", default="1,4,8,16", help="comma-separated (default 1,4,8,16)")
    parser.add_argument("--requests", type=_positive_int, default=32, help="requests decoded at each batch size")
    parser.add_argument("--method", action="append", default=None, metavar="NAME[:k=v,...]",
                        help="as for python -m eval, repeatable (default: vcd)")
    parser.add_argument("--max-new-tokens", type=_positive_int, default=None,
                        help=f"default: {WORKLOADS['pope']} for pope, {WORKLOADS['chair']} for chair")
    parser.add_argument("--do-sample", action="store_true", help="sample (seeded per request); default greedy")
    parser.add_argument("--repeats", type=_positive_int, default=3, help="timed passes; the median is kept")
    parser.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--json", default=None, help="also write the figures (answers left out) to this file")
    parser.add_argument("--data", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--one-batch-size", type=int, default=None, help=argparse.SUPPRESS)
    return parser


def main(argv=None) -> int:
    from .cli import parse_method

    args = _parser().parse_args(argv)
    args.methods = [parse_method(spec) for spec in args.method or ["vcd"]]
    args.max_new_tokens = args.max_new_tokens or WORKLOADS[args.workload]
    if args.one_batch_size is not None:
        args.batch_size = args.one_batch_size
        print(json.dumps(measure(args)))
        return 0
    sizes = [int(size) for size in args.batch_sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="throughput-") as folder:
        args.data = folder
        workload(folder, args.workload, args.requests)  # written once, read by every child
        results = []
        for size in sizes:
            results.append(_child(args, size))
            print(f"batch {size}: {results[-1]['requests_per_minute']:.0f} requests/min", file=sys.stderr, flush=True)
    methods = ", ".join(name for name, _ in args.methods)
    print(f"{args.workload}-like, {args.model} on {results[0]['device']}, baseline + {methods}, "
          f"at most {args.max_new_tokens} new tokens, {'sampled' if args.do_sample else 'greedy'}:")
    print(report(results))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump([{k: v for k, v in r.items() if k != "records"} for r in results], f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
