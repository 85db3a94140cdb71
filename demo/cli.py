"""The command line of `python app.py`: light to import (no gradio, no torch), so that --help answers at once."""

from __future__ import annotations

import argparse

from .allow_list import AMATEURS_ENV, EMBEDDED_MODEL_DIR, MODELS_ENV, TINY_MODEL, parse_amateur
from .checks import DEFAULT_MAX_FILE_SIZE, DEFAULT_MAX_PIXELS, DEFAULT_QUEUE_SIZE, parse_file_size

EPILOG = f"""\
Models: visitors pick only from the allow-list the operator sets, by --model (repeatable) or, without it,
${MODELS_ENV} (comma-separated Hub ids or local folders). With neither, the app serves the embedded shapes-world model
({EMBEDDED_MODEL_DIR.name} in assets/) when it is there, else {TINY_MODEL!r}: a tiny model with random weights built on
the spot (no download; its answers are gibberish). The first model is loaded at start; the others when picked, one in
memory at a time. A model that fails to load (a wrong id, no network) is replaced by the default one, or by the
embedded one, with a notice saying why.

Examples:
  python app.py
  python app.py --model llava-hf/llava-1.5-7b-hf --model Qwen/Qwen2-VL-2B-Instruct --quantization 4bit
  CD_MODELS=llava-hf/llava-1.5-7b-hf python app.py --host 0.0.0.0 --port 7860
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="app.py",
        description="Web app: compare a vision-language model's plain answer with its answer under a contrastive "
        "decoding method, token by token.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model", dest="models", action="append", metavar="ID_OR_FOLDER",
        help=f"a model visitors may pick (repeat for several; the first is the default). Overrides ${MODELS_ENV}.",
    )
    parser.add_argument(
        "--amateur", dest="amateurs", action="append", default=[], type=_amateur_pair, metavar="MODEL=AMATEUR",
        help="CD's and LCD's amateur for a model of the allow-list: a causal language model with its tokenizer (Hub id "
        "or local folder), e.g. llava-hf/llava-1.5-7b-hf=lmsys/vicuna-7b-v1.5 (repeatable; a model's amateur/ folder "
        f"is used without it). Overrides ${AMATEURS_ENV} (comma-separated MODEL=AMATEUR pairs)",
    )
    parser.add_argument(
        "--quantization", choices=["none", "4bit", "8bit"], default="none",
        help="load the models in 4-bit or 8-bit with bitsandbytes (CUDA only; default: none)",
    )
    parser.add_argument(
        "--trust-remote-code", action="store_true",
        help="let checkpoints run their own Python code (transformers' trust_remote_code); off by default: only for "
        "models on the allow-list whose code you have read",
    )
    parser.add_argument("--device", help="torch device for the models (default: cuda if available, else cpu)")
    parser.add_argument("--dtype", help="bf16, fp16 or fp32 (default: bf16/fp16 on CUDA, fp32 on CPU)")
    parser.add_argument(
        "--host", default=None,
        help="address to listen on (default: $GRADIO_SERVER_NAME or 127.0.0.1; 0.0.0.0 for every interface)",
    )
    parser.add_argument("--port", type=int, default=None, help="port (default: $GRADIO_SERVER_PORT or 7860)")
    parser.add_argument("--share", action="store_true", help="also serve through a temporary public gradio.live link")
    parser.add_argument(
        "--queue-size", type=_positive_int, default=DEFAULT_QUEUE_SIZE,
        help=f"most requests waiting in the queue; more are turned away (default: {DEFAULT_QUEUE_SIZE})",
    )
    parser.add_argument(
        "--max-file-size", default=parse_file_size(DEFAULT_MAX_FILE_SIZE), type=parse_file_size,
        help=f"largest upload, e.g. 10mb (default: {DEFAULT_MAX_FILE_SIZE})",
    )
    parser.add_argument(
        "--max-pixels", type=_positive_int, default=DEFAULT_MAX_PIXELS,
        help=f"largest image in pixels (width x height) accepted (default: {DEFAULT_MAX_PIXELS})",
    )
    return parser


def _amateur_pair(text: str) -> tuple[str, str]:
    try:
        return parse_amateur(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    args.quantization = None if args.quantization == "none" else args.quantization
    return args
