"""The command line: ``python -m eval {pope,chair,mme} --model M --out DIR [--method NAME[:k=v,...]]... [options]``.

Wrong or missing inputs print one line, "error: ...", naming the file and what was expected, and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
import textwrap

from decoding.sampling import SamplingConfig

from . import mme, pope
from .benchmarks import CHAIR_PROMPT, DEFAULT_MAX_NEW_TOKENS, chair_benchmark, mme_benchmark, pope_benchmark
from .chair_words import CHAIR_VARIANTS, DEFAULT_CHAIR_VARIANT, NLTK_DOWNLOAD
from .errors import EvalInputError

_DESCRIPTION = """\
Score decoding methods against hallucination on POPE, CHAIR or MME, stored locally, the way the papers do.

Every item is answered by the baseline (plain decoding) and by every --method, all in one batched run, and the
command prints the papers' table (also written to OUT/metrics.md, .csv and .json, with every answer in
OUT/answers.jsonl). Runs resume: finished items are kept as they come and skipped when the command is run again.
Under `accelerate launch` the same command shards the items over the processes and merges the results.
"""

_EPILOG = """\
examples:
  python -m eval pope --model llava-hf/llava-1.5-7b-hf --questions coco_pope_random.json coco_pope_popular.json \\
      coco_pope_adversarial.json --images val2014/ --prompt-suffix one-word --method vcd --method ritual:alpha_pos=3 \\
      --do-sample --out runs/pope-llava
  python -m eval chair --model llava-hf/llava-1.5-7b-hf --images val2014/ \\
      --instances annotations/instances_val2014.json --captions annotations/captions_val2014.json --method vcd \\
      --out runs/chair-llava
  python -m eval mme --model llava-hf/llava-1.5-7b-hf --root MME_Benchmark_release_version --method vcd \\
      --out runs/mme-llava
  accelerate launch --multi_gpu --num_processes 8 -m eval pope ...    (same options; one shard per GPU)
"""


def parse_method(spec: str, instruction: str | None = None) -> tuple[str, dict[str, float | int | str]]:
    """"ritual:alpha_pos=2,beta=0.1" -> ("ritual", {"alpha_pos": 2, "beta": 0.1}); checked against the method's
    parameters (unknown names and bad values raise EvalInputError). A text parameter is taken as written (no comma
    in it: ICD's instruction comes whole from ``instruction``, --icd-instruction)."""
    from decoding.methods import get_method

    name, _, rest = spec.partition(":")
    name = name.strip()
    params: dict[str, float | int | str] = {}
    try:
        record = get_method(name)
        texts = {param.name for param in record.params if param.kind == "text"}
    except ValueError as e:
        raise EvalInputError(f"--method {spec!r}: {e}") from None
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        if not eq or not key.strip():
            raise EvalInputError(f"--method {spec!r}: expected NAME or NAME:param=value,param=value, got {part!r}")
        key, value = key.strip(), value.strip()
        try:
            params[key] = value if key in texts else int(value) if value.lstrip("+-").isdigit() else float(value)
        except ValueError:
            raise EvalInputError(f"--method {spec!r}: {key} must be a number, got {value!r}") from None
    if instruction is not None and name == "icd":  # --icd-instruction is ICD's alone (ID has an instruction too)
        params["instruction"] = instruction
    try:
        return name, record.resolve(params)
    except ValueError as e:
        raise EvalInputError(f"--method {spec!r}: {e}") from None


def control_methods() -> list[tuple[str, dict]]:
    """Every control of the registry with its defaults, in the registry's order."""
    from decoding.methods import REGISTRY

    return [(name, record.defaults) for name, record in REGISTRY.items() if record.kind == "control"]


def check_search(methods: list[tuple[str, dict]], sampling: SamplingConfig) -> None:
    """Refuse, before anything loads, a beam-search method (OPERA) in a sampled run: it is decoded by beam search
    only, as its release is."""
    from decoding.methods import get_method

    beams = [name for name, _ in methods if get_method(name).search == "beam"]
    if beams and sampling.do_sample:
        raise EvalInputError(f"{', '.join(beams)} is decoded by beam search only: drop --do-sample, or run it in a "
                             "greedy run of its own")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, but never breaking a line inside a hyphenated name (single-word-or-phrase)."""

    def _split_lines(self, text, width):
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def sampling_config(args: argparse.Namespace) -> SamplingConfig:
    """The decoding options of the command line as one SamplingConfig; a bad value raises EvalInputError."""
    try:
        return SamplingConfig(do_sample=args.do_sample, temperature=args.temperature, top_p=args.top_p,
                              top_k=args.top_k, seed=args.seed)
    except ValueError as e:
        raise EvalInputError(f"decoding options: {e}") from None


def build_parser() -> argparse.ArgumentParser:
    common = _common_options()
    parser = argparse.ArgumentParser(prog="python -m eval", description=_DESCRIPTION, epilog=_EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    benchmarks = parser.add_subparsers(dest="benchmark", required=True, metavar="{pope,chair,mme}")
    _add_pope(benchmarks, common)
    _add_chair(benchmarks, common)
    _add_mme(benchmarks, common)
    return parser


def _common_options() -> argparse.ArgumentParser:
    """The options every benchmark takes: the model and the run, and the decoding."""
    from decoding.methods import METHODS  # the library's names (this imports torch)

    common = argparse.ArgumentParser(add_help=False)
    run = common.add_argument_group("model and run")
    run.add_argument("--model", required=True, help="Hugging Face Hub id or local model folder (models.load_model)")
    run.add_argument("--out", required=True, metavar="DIR",
                     help="output folder: answers, metrics, and the state that lets a rerun resume")
    run.add_argument("--method", action="append", default=[], metavar="NAME[:k=v,...]",
                     help=f"a decoding method to compare with the baseline, repeatable; one of {', '.join(METHODS)}"
                          "; parameters after a colon, e.g. ritual:alpha_pos=2,beta=0.1 (defaults: the papers')")
    run.add_argument("--icd-instruction", default=None, metavar="TEXT",
                     help="ICD's disturbance system instruction (default: our own wording). The authors' are listed "
                          "in p1k0pan/ICD@2fa44c5 experiments/gen_scripts/icd_llava_pope.py L117-122; pass one to "
                          "reproduce the release")
    run.add_argument("--amateur", default=None, metavar="MODEL",
                     help="CD's and LCD's amateur: a causal language model (Hub id or local folder) with the model's "
                          "tokenizer, e.g. lmsys/vicuna-7b-v1.5 for LLaVA-1.5 (default: the one shipped in the "
                          "model folder's amateur/, as the embedded shapes-world model has; LCD on InstructBLIP and "
                          "Gemma 3 uses the model's own text-only row)")
    run.add_argument("--controls", action="store_true",
                     help="also decode every control beside the methods (APC-only, PBA, OLM: the plausibility cut "
                          "alone, a push toward 'yes' by the prompt, and at the output), with their defaults, so "
                          "each table shows what a method's truncation or a yes-bias alone would give")
    run.add_argument("--device", default=None, help="cuda, cuda:1, cpu ... (default: cuda if available, else cpu; "
                                                    "under accelerate launch, each process's own GPU)")
    run.add_argument("--dtype", default=None,
                     help="bf16, fp16, fp32 or auto (default: bf16/fp16 on CUDA, fp32 on CPU)")
    run.add_argument("--quantization", default=None, choices=["none", "4bit", "8bit"],
                     help="load in 4 or 8 bits through bitsandbytes (CUDA only)")
    run.add_argument("--limit", type=_positive_int, default=None, metavar="N",
                     help="a quick look: only the first N questions of each POPE split, the first N CHAIR images, "
                          "the first N images of each MME subtask")
    run.add_argument("--batch-size", type=_positive_int, default=1, metavar="N",
                     help="decode N items together: every row of their baselines and methods in one forward per "
                          "token, a finished answer's rows leaving the batch (default 1). The answers do not depend "
                          "on it (each item keeps its own seed; up to rounding in half precision on a GPU), so a run "
                          "may resume with another. Not shared: a "
                          "method's pre-steps (CODE's description, Self-augmented VCD's and VACoDe's choice, "
                          "AvisC's attention pass) run item by item before the batch, and OPERA's beam search item "
                          "by item after it")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    decoding = common.add_argument_group("decoding (the same for the baseline and every method)")
    decoding.add_argument("--max-new-tokens", type=_positive_int, default=None, metavar="N",
                          help=f"default: {DEFAULT_MAX_NEW_TOKENS['pope']} for POPE and MME, "
                               f"{DEFAULT_MAX_NEW_TOKENS['chair']} for CHAIR")
    decoding.add_argument("--do-sample", action="store_true",
                          help="sample (the papers' setting: temperature 1, top-p 1, no top-k); default greedy")
    decoding.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1)")
    decoding.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling threshold (default 1: off)")
    decoding.add_argument("--top-k", type=int, default=0, help="top-k sampling (default 0: off)")
    decoding.add_argument("--seed", type=int, default=0,
                          help="run seed; each item's seed is derived from it and the item (default 0)")
    return common


def _add_pope(benchmarks, common: argparse.ArgumentParser) -> None:
    p = benchmarks.add_parser(
        "pope", parents=[common], formatter_class=_HelpFormatter,
        help="POPE: yes/no object questions; accuracy, precision, recall, F1, yes-ratio",
        description="POPE (Li et al. 2023) per split: accuracy, precision, recall, F1 and yes-ratio, answers parsed "
                    "by POPE's own rule (first sentence; 'No'/'not'/'no' as a word -> no, else yes).")
    p.add_argument("--questions", nargs="+", required=True, metavar="FILE",
                   help="POPE question files, one JSON object a line (question_id, image, text, label), e.g. "
                        "coco_pope_random.json coco_pope_popular.json coco_pope_adversarial.json; the split is "
                        "named from the file name")
    p.add_argument("--images", required=True, metavar="DIR",
                   help="folder of the images the questions name (COCO val2014)")
    p.add_argument("--prompt-suffix", default="none", metavar="SUFFIX",
                   help="appended to every question: " + "; ".join(
                       f"{name} = {text.strip()!r}" if text else f"{name} = nothing"
                       for name, text in pope.PROMPT_SUFFIXES.items())
                        + " (one-word after a space, single-word-or-phrase on a new line); any other text is appended "
                          "after a space (default: none)")


def _add_chair(benchmarks, common: argparse.ArgumentParser) -> None:
    c = benchmarks.add_parser(
        "chair", parents=[common], formatter_class=_HelpFormatter,
        help="CHAIR: object hallucination in image descriptions",
        description="CHAIR (Rohrbach et al. 2018) on COCO images: CHAIR_s, CHAIR_i, recall and mean length in tokens, "
                    "computed exactly as the chosen reference chair.py computes them (--chair-variant).")
    c.add_argument("--images", required=True, metavar="DIR", help="folder of the COCO images (val2014)")
    c.add_argument("--instances", required=True, metavar="FILE", help="COCO instances file (instances_val2014.json)")
    c.add_argument("--captions", default=None, metavar="FILE",
                   help="COCO captions file (captions_val2014.json): the objects its human captions name count as "
                        "present, as in CHAIR; strongly advised")
    c.add_argument("--image-list", default=None, metavar="FILE",
                   help="the images to describe: one COCO image id or file name a line (default: --num-images drawn "
                        "at random)")
    c.add_argument("--num-images", type=_positive_int, default=500, metavar="N",
                   help="images drawn from the instances file when there is no --image-list (default 500)")
    c.add_argument("--sample-seed", type=int, default=0, help="seed of that draw (default 0)")
    c.add_argument("--prompt", default=CHAIR_PROMPT, help=f"the instruction (default {CHAIR_PROMPT!r})")
    c.add_argument("--synonyms", default=None, metavar="FILE",
                   help="another object synonym table, one object a line: 'name, synonym, ...' (default: CHAIR's "
                        "COCO table, eval/data/coco_synonyms.txt)")
    c.add_argument("--chair-variant", default=DEFAULT_CHAIR_VARIANT, choices=list(CHAIR_VARIANTS),
                   help="which reference chair.py to reproduce: "
                        + "; ".join(f"{name} = {text}" for name, text in CHAIR_VARIANTS.items())
                        + f" (default: {DEFAULT_CHAIR_VARIANT}, the numbers the LVLM papers print; it needs nltk's "
                          f"tagger and WordNet, fetched once with `{NLTK_DOWNLOAD}`). Scoring only: rerun with the "
                          "other variant and the same --out to rescore the stored answers without decoding")


def _add_mme(benchmarks, common: argparse.ArgumentParser) -> None:
    m = benchmarks.add_parser(
        "mme", parents=[common], formatter_class=_HelpFormatter,
        help="MME: perception scores of the hallucination subtasks",
        description="MME (Fu et al. 2023): per subtask 100*acc + 100*acc+ (both questions of an image right), and the "
                    "total. Subtask folders in either layout: <subtask>/<image>.txt beside the images, or "
                    "<subtask>/images/ and <subtask>/questions_answer_YES_NO/.")
    m.add_argument("--root", required=True, metavar="DIR", help="the MME folder (MME_Benchmark_release_version)")
    m.add_argument("--subtasks", default=",".join(mme.HALLUCINATION_SUBTASKS), metavar="A,B,...",
                   help=f"subtask folders to score (default: {','.join(mme.HALLUCINATION_SUBTASKS)})")
    m.add_argument("--prompt-suffix", default="none", metavar="SUFFIX",
                   help="appended to every question, as for pope (default: none; MME's questions already end in "
                        "'Please answer yes or no.')")


def build_benchmark(args: argparse.Namespace):
    if args.benchmark == "pope":
        return pope_benchmark(args.questions, args.images, args.prompt_suffix, args.limit)
    if args.benchmark == "chair":
        return chair_benchmark(args.images, args.instances, args.captions, args.image_list, args.num_images,
                               args.sample_seed, args.prompt, args.synonyms, args.limit, args.chair_variant)
    subtasks = [s.strip() for s in args.subtasks.split(",") if s.strip()]
    return mme_benchmark(args.root, subtasks, args.prompt_suffix, args.limit)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        sampling = sampling_config(args)
        benchmark = build_benchmark(args)
        methods = [parse_method(spec, args.icd_instruction) for spec in args.method]
        if args.icd_instruction is not None and "icd" not in [name for name, _ in methods]:
            raise EvalInputError("--icd-instruction is ICD's: add --method icd")
        names = [name for name, _ in methods]
        if len(set(names)) != len(names):
            raise EvalInputError(f"each method may be given once, got {names}; compare settings in separate runs")
        if args.amateur is not None and not {"cd", "lcd"} & set(names):
            raise EvalInputError("--amateur is CD's and LCD's: add --method cd or --method lcd")
        if args.controls:
            methods += [(name, params) for name, params in control_methods() if name not in names]
        check_search(methods, sampling)
        from .runner import RunConfig, run_benchmark

        config = RunConfig(
            model=args.model, methods=methods,
            max_new_tokens=args.max_new_tokens or DEFAULT_MAX_NEW_TOKENS[benchmark.name],
            sampling=sampling, device=args.device, dtype=args.dtype,
            quantization=None if args.quantization == "none" else args.quantization, batch_size=args.batch_size,
            amateur=args.amateur,
        )
        summary = run_benchmark(benchmark, config, args.out, progress=not args.no_progress)
    except EvalInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if summary.table is not None:
        print(summary.table)
        print(f"decoded {summary.decoded} requests now, {summary.already_done} were already done, {summary.total} in "
              "all (a request is one image with one prompt; questions that share both are decoded once)")
        print("wrote " + ", ".join(summary.files))
    return 0
