"""Contrastive decoding for vision-language models: the per-step rules, the method registry, the branch builders and
one batched engine.

Nothing here imports gradio. Entry points (imported lazily, so `import decoding.sampling` stays light):
`compare`, `stream_compare`, `Comparison`, `answer_all` (several methods in one run), `answer_many` (several
requests in one run), `METHODS` / `REGISTRY` / `get_method` (the methods), `SamplingConfig` (the decoding options),
`use_amateur` (CD's and LCD's amateur model).
"""

_LAZY = {
    "compare": "comparison",
    "stream_compare": "comparison",
    "Comparison": "comparison",
    "prepare_comparison": "comparison",
    "answer_all": "comparison",
    "answer_many": "comparison",
    "METHODS": "methods",
    "REGISTRY": "methods",
    "get_method": "methods",
    "Engine": "engine",
    "Side": "engine",
    "SamplingConfig": "sampling",
    "use_amateur": "amateur",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'decoding' has no attribute {name!r}")


__all__ = list(_LAZY)
