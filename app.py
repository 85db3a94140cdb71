"""Serve the contrastive decoding lab in a browser: `python app.py --help`."""

from demo.cli import parse_args
from demo.model_pool import LoadOptions, ModelPool, allowed_models
from demo.ui import build_ui, launch
from models import ModelLoadError


def main(argv=None):
    args = parse_args(argv)
    pool = ModelPool(allowed_models(args.models), LoadOptions(args.quantization, args.device, args.dtype))
    try:
        pool.get(pool.default)  # load now: a broken allow-list fails at start, not at a visitor's first click
    except ModelLoadError as error:
        raise SystemExit(f"app.py: {error}") from None
    launch(
        build_ui(pool, max_pixels=args.max_pixels),
        host=args.host,
        port=args.port,
        share=args.share,
        queue_size=args.queue_size,
        max_file_size=args.max_file_size,
    )


if __name__ == "__main__":
    main()
