"""Which models a visitor may pick (the operator's allow-list) and loading them on demand.

Visitors choose by display name from the allow-list; a name that is not on it is refused, so nothing a visitor sends
is ever used as a path or a Hub id.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from models import FamilyAdapter, build_tiny, load_model

# The allow-list entry for a tiny model with random weights, built in-process: the app runs with nothing to download.
TINY_MODEL = "tiny-random-llava"
TINY_LABEL = "tiny-random-llava (untrained: answers are gibberish)"
EMBEDDED_MODEL_DIR = Path(__file__).resolve().parent.parent / "assets" / "shapes-llava"
MODELS_ENV = "CD_MODELS"


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


def display_name(source: str) -> str:
    """What visitors see for an allow-list entry: a Hub id as it is, a local folder by its name only (the server's
    paths are none of their business)."""
    if source == TINY_MODEL:
        return TINY_LABEL
    path = Path(os.path.expanduser(source))
    if path.is_absolute() or source.startswith((".", "~")) or path.is_dir():
        return path.resolve().name
    return source


@dataclass(frozen=True)
class LoadOptions:
    quantization: str | None = None  # None, "4bit", "8bit"; never applied to the tiny model, which exists for CPU
    device: str | None = None
    dtype: str | None = None


class ModelPool:
    """The allow-list, and the loaded model. One model is kept in memory at a time: picking another unloads it."""

    def __init__(self, sources: Sequence[str], options: LoadOptions = LoadOptions()):
        if not sources:
            raise ValueError("the model allow-list is empty")
        self.options = options
        self.sources: dict[str, str] = {}
        for source in sources:
            name = display_name(source)
            while name in self.sources:  # two folders with the same name: keep both choosable
                name += "'"
            self.sources[name] = source
        self._loaded: tuple[str, FamilyAdapter] | None = None
        self._lock = threading.Lock()

    @property
    def names(self) -> list[str]:
        return list(self.sources)

    @property
    def default(self) -> str:
        return self.names[0]

    def is_untrained(self, name: str) -> bool:
        return self.sources.get(name) == TINY_MODEL

    def get(self, name: str) -> FamilyAdapter:
        """The loaded model for an allow-list name; ValueError for any other name, ModelLoadError if loading fails."""
        if not isinstance(name, str) or name not in self.sources:
            raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(self.names)}")
        with self._lock:
            if self._loaded is not None and self._loaded[0] == name:
                return self._loaded[1]
            self._loaded = None  # drop the previous model before loading the next: two may not fit in memory
            adapter = self._load(self.sources[name])
            self._loaded = (name, adapter)
            return adapter

    def _load(self, source: str) -> FamilyAdapter:
        if source == TINY_MODEL:
            with tempfile.TemporaryDirectory(prefix="cd-lab-tiny-") as folder:
                adapter = load_model(build_tiny("llava", folder, seed=0), device=self.options.device)
            # Name it by how to rebuild it, not by the temporary folder it was loaded from (the trace records it).
            adapter.model_id = TINY_MODEL
            return adapter
        return load_model(
            source, quantization=self.options.quantization, device=self.options.device, dtype=self.options.dtype
        )
