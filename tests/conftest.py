"""Shared test settings."""

import atexit
import os
import shutil
import tempfile

# Each test process (pytest-xdist runs two) gets a gradio file cache of its own, set before gradio is imported: gradio
# names a cached picture by its content, so two served apps drawing the same picture share one path, and the first to
# close deletes it (delete_cache) under the other, whose client then gets HTTP 403 for it.
os.environ["GRADIO_TEMP_DIR"] = tempfile.mkdtemp(prefix="cd-lab-gradio-")
atexit.register(shutil.rmtree, os.environ["GRADIO_TEMP_DIR"], ignore_errors=True)

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and on a shared 2-core machine OpenMP's barriers make them up to 50x
    slower whenever another process holds a core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def wordnet():
    """WordNet 3.0 for CHAIR's lvlm variant, from nltk's data or Debian's wordnet-base; a test needing it fails (never
    skips) without it."""
    from eval.wordnet import WordNetMissing, find_wordnet

    try:
        return find_wordnet()
    except WordNetMissing as e:
        pytest.fail(f"{e}: install Debian's wordnet-base (as .ci/run does) or `python -m nltk.downloader wordnet`")


def add_untrained_parts(adapter):
    """``adapter`` with a random ECD detector, random DCD projector copies (none for a family without a separate
    projector) and a random head list (DeCoRe's and MaskCD's) saved in its model's folder: ECD, DCD, DeCoRe and MaskCD
    refuse a model without their parts (test_ecd.py, test_dcd.py, test_image_heads.py), and tiny models have none.
    Returns ``adapter``."""
    from decoding.amateur import untrained_amateur
    from decoding.dcd import untrained_projectors
    from decoding.detector import model_source, untrained_detector
    from decoding.image_heads import untrained_head_list
    from decoding.vti import untrained_directions

    untrained_detector(adapter)
    untrained_projectors(adapter)
    untrained_amateur(adapter)  # CD's and LCD's amateur language model (test_amateur.py)
    untrained_head_list(adapter.model, model_source(adapter))
    untrained_directions(adapter)  # VTI's (test_vti.py)
    return adapter


@pytest.fixture(scope="session")
def untrained_parts():
    """``add_untrained_parts``, for a test that loads a tiny model its own way (the app's pool)."""
    return add_untrained_parts


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """``tiny_model(family)``: the tiny ``family`` model (seed 0) with its untrained ECD and DCD parts, built and
    loaded once for the session, or the embedded model for "shapes-llava" (its trained parts ship with it)."""
    from demo.allow_list import EMBEDDED_MODEL_DIR
    from models import build_tiny, load_model

    loaded = {}

    def get(family: str):
        if family not in loaded:
            if family == "shapes-llava":
                loaded[family] = load_model(str(EMBEDDED_MODEL_DIR))
            else:
                path = build_tiny(family, tmp_path_factory.mktemp(family), seed=0)
                loaded[family] = add_untrained_parts(load_model(path))
        return loaded[family]

    return get


@pytest.fixture(scope="session")
def embedded_model(tiny_model):
    """The embedded shapes-world model (assets/shapes-llava), loaded once for the session."""
    return tiny_model("shapes-llava")


@pytest.fixture(scope="session")
def image():
    """The engine tests' picture: a red square on seeded noise (never modified in place: it is shared)."""
    from pictures import red_square_on_noise

    return red_square_on_noise(0)
