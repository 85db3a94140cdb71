"""Which models a visitor may pick: the operator's allow-list, and the names visitors see for it.

Plain Python (no torch), so that `python app.py --help` can name the defaults without loading any model code.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

# The allow-list entry for a tiny model with random weights, built in-process: the app runs with nothing to download.
TINY_MODEL = "tiny-random-llava"
TINY_LABEL = "tiny-random-llava (untrained: answers are gibberish)"
EMBEDDED_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "shapes-llava"
MODELS_ENV = "CD_MODELS"
AMATEURS_ENV = "CD_AMATEURS"


def default_model(embedded: Path = EMBEDDED_MODEL_DIR) -> str:
    """The model served when the operator names none: the embedded shapes-world model once its folder exists, else
    the untrained tiny one."""
    return str(embedded) if (embedded / "config.json").is_file() else TINY_MODEL


def allowed_models(
    cli_models: Sequence[str] | None = None, env: Mapping[str, str] = os.environ, embedded: Path = EMBEDDED_MODEL_DIR
) -> list[str]:
    """The operator's allow-list: the --model flags if any, else $CD_MODELS (comma-separated), else the default."""
    names = list(cli_models or []) or env.get(MODELS_ENV, "").split(",")
    names = [name.strip() for name in names if name.strip()]
    return list(dict.fromkeys(names)) or [default_model(embedded)]


def parse_amateur(text: str) -> tuple[str, str]:
    """``MODEL=AMATEUR`` (an allow-list entry and its CD/LCD amateur) as a pair; ValueError for anything else."""
    model, sep, amateur = text.partition("=")
    if not sep or not model.strip() or not amateur.strip():
        raise ValueError(f"expected MODEL=AMATEUR, got {text!r}")
    return model.strip(), amateur.strip()


def allowed_amateurs(
    cli_pairs: Sequence[tuple[str, str]] | None = None, env: Mapping[str, str] = os.environ
) -> list[tuple[str, str]]:
    """The operator's CD/LCD amateurs: the --amateur flags if any, else $CD_AMATEURS (comma-separated MODEL=AMATEUR
    pairs, as a Space variable sets them); ValueError naming a malformed pair."""
    if cli_pairs:
        return list(cli_pairs)
    return [parse_amateur(pair) for pair in env.get(AMATEURS_ENV, "").split(",") if pair.strip()]


def display_name(source: str) -> str:
    """What visitors see for an allow-list entry: a Hub id as it is, a local folder by its name only (the server's
    paths are none of their business)."""
    if source == TINY_MODEL:
        return TINY_LABEL
    path = Path(os.path.expanduser(source))
    if path.is_absolute() or source.startswith((".", "~")) or path.is_dir():
        return path.resolve().name
    return source
