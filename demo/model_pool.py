"""Loading the models of the operator's allow-list (`demo.allow_list`) on demand, one in memory at a time.

Visitors choose by display name from the allow-list; a name that is not on it is refused, so nothing a visitor sends
is ever used as a path or a Hub id. A model that fails to load (a wrong id, no network, a broken folder) does not take
the app down: the pool goes back to the default model, or to the embedded one, and says why.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from models import FamilyAdapter, ModelLoadError, build_tiny, load_model

from .allow_list import EMBEDDED_MODEL_DIR, TINY_MODEL, default_model, display_name
from .checks import MAX_NEW_TOKENS_LIMIT, shown

# Tokens of a model's context kept for the question when the new-token limit is worked out (a shapes-world question
# is about 10, a photo question a few dozen; a longer one is refused by the library's own length check).
QUESTION_ROOM = 24

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadOptions:
    quantization: str | None = None  # None, "4bit", "8bit"; never applied to the tiny model, which exists for CPU
    device: str | None = None
    dtype: str | None = None
    trust_remote_code: bool = False  # run a checkpoint's own Python code: only when the operator says so
    # (model source, amateur source) pairs: CD's and LCD's amateur for an allow-listed model, the operator's choice
    # (app.py --amateur); a visitor never names one
    amateurs: tuple[tuple[str, str], ...] = ()


class ModelPool:
    """The allow-list, and the loaded model. One model is kept in memory at a time: picking another unloads it.

    fallback: the model served when the allow-list's models fail to load (default: the embedded shapes-world model,
    else the tiny one, which need no network); ``notice`` then says what failed.
    """

    def __init__(self, sources: Sequence[str], options: LoadOptions = LoadOptions(), fallback: str | None = None):
        if not sources:
            raise ValueError("the model allow-list is empty")
        self.options = options
        self.fallback = fallback if fallback is not None else default_model()
        self.sources: dict[str, str] = {}
        for source in sources:
            self._add(source)
        unlisted = [model for model, _ in options.amateurs if model not in self.sources.values()]
        if unlisted:
            raise ValueError(f"--amateur names a model that is not on the allow-list: {', '.join(unlisted)}")
        self.notice: str | None = None
        self._token_limits: dict[str, int] = {}  # of the models loaded so far, by name
        self._loaded: tuple[str, FamilyAdapter] | None = None
        self._lock = threading.Lock()

    def _add(self, source: str) -> str:
        name = display_name(source)
        while name in self.sources:  # two folders with the same name: keep both choosable
            name += "'"
        self.sources[name] = source
        return name

    @property
    def names(self) -> list[str]:
        return list(self.sources)

    @property
    def default(self) -> str:
        return self.names[0]

    @property
    def loaded(self) -> str | None:
        """The name of the model in memory, if any."""
        loaded = self._loaded
        return loaded[0] if loaded is not None else None

    def is_untrained(self, name: str) -> bool:
        return self.sources.get(name) == TINY_MODEL

    def is_embedded(self, name: str, embedded: Path = EMBEDDED_MODEL_DIR) -> bool:
        """Whether ``name`` is the embedded shapes-world model (which only knows its synthetic world)."""
        source = self.sources.get(name)
        if source is None or source == TINY_MODEL:
            return False
        return Path(os.path.expanduser(source)).resolve() == embedded.resolve()

    def get(self, name: str) -> FamilyAdapter:
        """The loaded model for an allow-list name; ValueError for any other name, ModelLoadError if loading fails."""
        if not isinstance(name, str) or name not in self.sources:
            raise ValueError(f"unknown model {shown(name)}; choose one of: {', '.join(self.names)}")
        with self._lock:
            if self._loaded is not None and self._loaded[0] == name:
                return self._loaded[1]
            self._loaded = None  # drop the previous model before loading the next: two may not fit in memory
            adapter = self._load(self.sources[name])
            self._token_limits.setdefault(name, new_token_limit(adapter))
            self._loaded = (name, adapter)
            return adapter

    def new_token_limit(self, name: str) -> int:
        """The most new tokens a run of ``name`` may ask for (``new_token_limit``); the app's limit for a model not
        loaded yet."""
        return self._token_limits.get(name, MAX_NEW_TOKENS_LIMIT) if isinstance(name, str) else MAX_NEW_TOKENS_LIMIT

    def start(self) -> str | None:
        """Load the default model at start. If it fails, serve the fallback instead (it becomes the default) and
        return the notice saying so; ModelLoadError only when the fallback fails too."""
        try:
            self.get(self.default)
            return None
        except ModelLoadError as error:
            failed = self.default
            if self.sources[failed] == self.fallback:
                raise
            fallback = self._fallback_name()
            self.sources = {fallback: self.fallback, **self.sources}  # the fallback is now the default
            self.get(fallback)
            self.notice = self._notice(failed, error, fallback)
            return self.notice

    def load(self, name: str) -> tuple[str, FamilyAdapter, str | None]:
        """The model a visitor picked or, when it fails to load, the default model (else the fallback):
        (name of the model served, the model, None or the message saying what failed). ValueError for a name not
        on the allow-list; ModelLoadError only when no model at all can be loaded."""
        try:
            return name, self.get(name), None
        except ModelLoadError as error:
            failure = error
        tried = {name}
        for candidate in (self.default, None):  # None: the fallback, added to the list only when it is needed
            candidate = candidate or self._fallback_name()
            if candidate in tried:
                continue
            tried.add(candidate)
            try:
                adapter = self.get(candidate)
            except ModelLoadError as error:
                log.warning("the fallback model %r could not be loaded either: %s", candidate, error)
                continue
            return candidate, adapter, self._notice(name, failure, candidate)
        raise failure

    def _fallback_name(self) -> str:
        existing = [name for name, source in self.sources.items() if source == self.fallback]
        return existing[0] if existing else self._add(self.fallback)

    def _notice(self, failed: str, error: Exception, serving: str) -> str:
        """What a visitor reads: by display names, never the server's paths (which the error may contain)."""
        reason = str(error)
        for name, source in self.sources.items():
            if source != name and os.sep in source:
                reason = reason.replace(source, name)
        notice = f"The model {failed!r} could not be loaded ({reason}). Serving {serving!r} instead."
        log.warning("%s", notice)
        return notice

    def _load(self, source: str) -> FamilyAdapter:
        if source == TINY_MODEL:
            with tempfile.TemporaryDirectory(prefix="cd-lab-tiny-") as folder:
                adapter = load_model(build_tiny("llava", folder, seed=0), device=self.options.device)
            # Name it by how to rebuild it, not by the temporary folder it was loaded from (the trace records it).
            adapter.model_id = TINY_MODEL
            self._attach_amateur(adapter, source)
            return adapter
        adapter = load_model(
            source,
            quantization=self.options.quantization,
            device=self.options.device,
            dtype=self.options.dtype,
            trust_remote_code=self.options.trust_remote_code,
        )
        # A local folder goes into traces by its name, as visitors see it, not by the server's path.
        adapter.model_id = display_name(source)
        self._attach_amateur(adapter, source)
        return adapter

    def _attach_amateur(self, adapter: FamilyAdapter, source: str) -> None:
        """The operator's amateur for this model (CD, LCD), if any; one that fails to load is logged and CD then
        refuses the model as it refuses one without an amateur (the model itself serves on)."""
        amateur = dict(self.options.amateurs).get(source)
        if amateur is None:
            return
        from decoding.amateur import use_amateur

        try:
            use_amateur(adapter, amateur)
        except (ModelLoadError, ValueError) as error:
            log.warning("the amateur %s of %s did not load: %s", amateur, display_name(source), error)



def new_token_limit(adapter: FamilyAdapter) -> int:
    """The most new tokens that fit in ``adapter``'s context after a prompt of one picture (of the model's base view
    size) and ``QUESTION_ROOM`` tokens of question, at most the app's ``MAX_NEW_TOKENS_LIMIT`` (the embedded
    shapes-world model's context is 256 tokens, its prompt alone about 40)."""
    context = adapter.max_length
    if context is None:
        return MAX_NEW_TOKENS_LIMIT
    height, width = adapter.image_size
    prompt = adapter.build_row("", Image.new("RGB", (width, height), (255, 255, 255))).length
    return max(1, min(MAX_NEW_TOKENS_LIMIT, context - prompt - QUESTION_ROOM))
