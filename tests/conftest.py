"""Shared test settings."""

import pytest
import torch


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
