"""Serve the contrastive decoding lab in a browser: `python app.py --help`."""

import logging

from demo.allow_list import allowed_amateurs, allowed_models
from demo.cli import parse_args


def main(argv=None):
    args = parse_args(argv)
    # Imported once the flags are read, so that --help (and a mistyped flag) answers at once, before gradio and torch
    # are loaded; zerogpu first, as it imports `spaces` (ZeroGPU), which must come before anything touches CUDA.
    from demo import zerogpu
    from demo.model_pool import LoadOptions, ModelPool
    from demo.ui import build_ui, launch
    from models import ModelLoadError

    logging.basicConfig(format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    logging.getLogger("demo").setLevel(logging.INFO)  # model fallbacks, failed and cancelled runs
    # On ZeroGPU the models load onto cuda here, at start-up, outside the GPU function (zerogpu.load_device).
    device = zerogpu.load_device(args.device)
    try:
        amateurs = tuple(allowed_amateurs(args.amateurs))
        options = LoadOptions(args.quantization, device, args.dtype, trust_remote_code=args.trust_remote_code,
                              amateurs=amateurs)
        pool = ModelPool(allowed_models(args.models), options)
    except ValueError as error:  # a malformed $CD_AMATEURS pair, an amateur for a model not on the allow-list
        raise SystemExit(f"app.py: {error}") from None
    try:
        # Load now: a model that cannot load is replaced by the embedded one at start, not at a visitor's first click.
        pool.start()  # a notice on the page (and in the log) says what failed
    except ModelLoadError as error:
        raise SystemExit(f"app.py: {error}") from None
    launch(
        build_ui(pool, max_pixels=args.max_pixels, max_file_size=args.max_file_size),
        host=args.host,
        port=args.port,
        share=args.share,
        queue_size=args.queue_size,
        max_file_size=args.max_file_size,
    )


if __name__ == "__main__":
    main()
