"""Speed benchmark: what contrast costs, batched against the papers' separate forwards.

    python -m decoding.bench                                   # tiny LLaVA on this machine
    python -m decoding.bench --model assets/shapes-llava       # any load_model() source
    python -m decoding.bench --model random:llava-1.5-7b       # LLaVA-1.5-7B architecture, random fp16 weights (GPU)

For each workload — plain decoding alone, each method alone, baseline + method side by side — it times our batched
engine (all rows in one forward per token) and the reference mode that runs every row as its own forward with its
own cache, the way the papers' code does. Figures are medians over ``--repeats`` runs after ``--warmup`` runs, with
EOS ignored so every run does the same work. The bandwidth floor is the bytes of language-model weights read per
token divided by the device's measured copy bandwidth: no decoder can beat it at batch 1.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time

import numpy as np
import torch
from PIL import Image

from models import build_tiny, load_model, random_llava_1_5_7b

from .amateur import check_amateurs, use_amateur
from .comparison import prepare_comparison
from .engine import Engine, Side
from .methods import METHODS, get_method
from .sampling import SamplingConfig

QUESTION = "Describe the image in detail."


def bench_image(size: int = 336, seed: int = 0) -> Image.Image:
    """A non-trivial picture (noise plus blocks), so no kernel sees all-zero data."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    pixels[size // 4 : size // 2, size // 4 : size // 2] = (200, 40, 40)
    return Image.fromarray(pixels)


def load_bench_model(source: str, device: str | None, dtype: str | None, quantization: str | None):
    if source.startswith("tiny:"):
        import tempfile

        return load_model(build_tiny(source.split(":", 1)[1], tempfile.mkdtemp(prefix="bench-")), device=device)
    if source == "random:llava-1.5-7b":
        if quantization is not None:
            raise SystemExit("random:llava-1.5-7b is built in memory; quantization needs a saved checkpoint")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        return random_llava_1_5_7b(device=device, dtype=torch.float16 if device != "cpu" else torch.float32)
    return load_model(source, device=device, dtype=dtype, quantization=quantization)


def workloads(model, image, methods, max_new_tokens):
    """(name, rows, run) for plain decoding, each method alone, and baseline + each method side by side; ``run``
    (batched) starts the run. A beam method (OPERA) runs alone only (beside a baseline it runs after it): its rows
    are its beams and, per beam, its candidates' look-ahead rows."""
    plain_row = model.build_row(QUESTION, image)
    yield "plain", 1, _engine_run(model, [plain_row], [Side("baseline", "baseline", {"original": 0})], max_new_tokens)
    options = dict(attention_layers=None, visual_dependence=False, ignore_eos=True, max_new_tokens=max_new_tokens)
    for method in methods:
        alone = prepare_comparison(model, image, QUESTION, method, baseline=False, **options)
        if alone.beam is not None:
            beams = alone.beam.num_beams
            yield f"{method} alone", beams * (1 + alone.beam.opera.num_candidates), _beam_run(alone.beam)
            continue
        yield f"{method} alone", len(alone.rows), _engine_run(model, alone.rows, alone.sides, max_new_tokens)
        both = prepare_comparison(model, image, QUESTION, method, baseline=True, **options)
        yield f"baseline + {method}", len(both.rows), _engine_run(model, both.rows, both.sides, max_new_tokens)


def _engine_run(model, rows, sides, max_new_tokens):
    def run(batched):
        return Engine(model).run(
            rows, sides, max_new_tokens=max_new_tokens, sampling=SamplingConfig(), batched=batched, ignore_eos=True
        )

    return run


def _beam_run(search):
    """The beam search, its candidates looked ahead in one batched forward, or one forward each (``separate``: the
    release's way, one candidate at a time for every beam)."""
    def run(batched):
        search.batched = batched
        return search.run()

    return run


def time_run(model, start_run, batched) -> dict:
    """One run: seconds to the first token (prefill + first step) and each later token."""
    cuda = model.device.type == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    stamps = []
    start = time.perf_counter()
    run = start_run(batched)
    for _ in run:  # each step ends in a host sync (the chosen token is read), so wall time is honest
        stamps.append(time.perf_counter())
    peak = torch.cuda.max_memory_allocated() if cuda else None
    gaps = np.diff([start, *stamps])
    return {"prefill_s": float(gaps[0]), "per_token_s": float(np.median(gaps[1:])), "peak_bytes": peak}


def measure(model, rows, start_run, max_new_tokens, batched, repeats, warmup) -> dict:
    for _ in range(warmup):
        time_run(model, start_run, batched)
    runs = [time_run(model, start_run, batched) for _ in range(repeats)]
    per_token = statistics.median(r["per_token_s"] for r in runs)
    peaks = [r["peak_bytes"] for r in runs if r["peak_bytes"] is not None]
    return {
        "prefill_s": statistics.median(r["prefill_s"] for r in runs),
        "per_token_s": per_token,
        "tokens_per_s": 1.0 / per_token,
        "total_s": statistics.median(r["prefill_s"] + r["per_token_s"] * (max_new_tokens - 1) for r in runs),
        "peak_gib": max(peaks) / 2**30 if peaks else None,
        "rows": rows,
    }


def copy_bandwidth(device: torch.device, nbytes: int) -> float:
    """Bytes per second moved by a device-to-device copy (read + write counted), median of 5 after warm-up."""
    src = torch.randn(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    times = []
    for i in range(6):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        dst.copy_(src)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - start)
    return 2 * src.numel() * 4 / statistics.median(times)


def language_model_bytes(model) -> int:
    """Bytes of weights a decode step reads: everything but the vision tower (run once, at prefill)."""
    vision = {id(p) for name, p in model.model.named_parameters() if "vision_tower" in name or "visual" in name}
    return sum(p.numel() * p.element_size() for p in model.model.parameters() if id(p) not in vision)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny:llava", help="tiny:FAMILY, random:llava-1.5-7b, a folder or Hub id")
    parser.add_argument("--methods", default="vcd", help=f"comma-separated, from {', '.join(METHODS)}")
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per run (EOS ignored)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--quantization", default=None, choices=["4bit", "8bit"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--no-reference", action="store_true", help="skip the separate-forwards reference mode")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument("--amateur", default=None,
                        help="CD's and LCD's amateur: a causal LM with the model's tokenizer, Hub id or folder "
                             "(default: the model folder's amateur/, as the embedded model ships)")
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    if args.threads:
        torch.set_num_threads(args.threads)

    model = load_bench_model(args.model, args.device, args.dtype, args.quantization)
    try:  # CD's and LCD's amateur, refused up front when a method needs one the model lacks
        if args.amateur:
            use_amateur(model, args.amateur)
        check_amateurs(model, [(m, get_method(m).defaults) for m in methods])
    except ValueError as error:
        raise SystemExit(f"bench: {error}") from None
    device = model.device
    image = bench_image()
    weights = language_model_bytes(model)
    bandwidth = copy_bandwidth(device, 1 << 30 if device.type == "cuda" else 1 << 27)
    floor = weights / (bandwidth / 2)  # a decode step reads the weights once: half of a copy's traffic
    rows = []
    modes = [("batched", True)] + ([] if args.no_reference else [("separate", False)])
    for name, run_rows, start_run in workloads(model, image, methods, args.tokens):
        for mode, batched in modes:
            if name == "plain" and not batched:
                continue  # one row: both modes are the same thing
            figures = measure(model, run_rows, start_run, args.tokens, batched, args.repeats, args.warmup)
            rows.append({"workload": name, "mode": mode, **figures})
            print(f"  {name:<22} {mode:<9} {figures['per_token_s'] * 1e3:8.2f} ms/token", file=sys.stderr)

    plain = next(r for r in rows if r["workload"] == "plain")
    cpu_name = f"CPU, {torch.get_num_threads()} threads"
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name
    print(f"\nmodel {model.model_id} on {device_name}, {model.model.dtype}, {args.tokens} new tokens, "
          f"median of {args.repeats} after {args.warmup} warm-up")
    print(f"language-model weights {weights / 2**20:.1f} MiB; copy bandwidth {bandwidth / 1e9:.1f} GB/s; "
          f"bandwidth floor {floor * 1e3:.3f} ms/token (plain is {plain['per_token_s'] / floor:.1f}x the floor)\n")
    print("| workload | mode | rows | prefill ms | ms/token | tokens/s | total s | peak GiB | x plain | x separate |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        separate = next(
            (s for s in rows if s["workload"] == r["workload"] and s["mode"] == "separate"), None
        )
        vs_separate = f"{r['per_token_s'] / separate['per_token_s']:.2f}" if separate and r["mode"] == "batched" else ""
        peak = f"{r['peak_gib']:.2f}" if r["peak_gib"] is not None else ""
        print(
            f"| {r['workload']} | {r['mode']} | {r['rows']} | {r['prefill_s'] * 1e3:.1f} "
            f"| {r['per_token_s'] * 1e3:.2f} | {r['tokens_per_s']:.1f} | {r['total_s']:.3f} | {peak} "
            f"| {r['per_token_s'] / plain['per_token_s']:.2f} | {vs_separate} |"
        )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"\nprocess peak RSS {rss:.2f} GiB")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": model.model_id, "device": device_name, "floor_s": floor, "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
