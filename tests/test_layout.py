"""Imports flow one way (README, "Layout"): ``models`` knows no decoding, UI or evaluation; ``decoding`` runs models
but knows no UI and no evaluation; ``eval`` runs decoding but knows no UI. Inside ``decoding`` the modules read
bottom-up (``DECODING_LAYERS``): the pure parts, attention, the rows and the registry, the engine, then what runs it.

Every ``.py`` file of the three packages is parsed with ``ast`` and every import in it is read: at the top, inside
functions, classes and ``if``/``try`` blocks, relative ones resolved to the package they name, and
``importlib.import_module("...")`` / ``__import__("...")`` with a literal name. Nothing is imported to check it.
"""

from __future__ import annotations

import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# package -> top-level modules it must never import
FORBIDDEN = {
    "models": ("decoding", "demo", "eval"),
    "decoding": ("gradio", "demo", "eval"),
    "eval": ("gradio", "demo"),
}


# decoding's modules from the bottom up: each imports only modules of the layers before its own. The registry
# (methods) and the rows it builds (branch_rows) stand below the engine: the model's pre-steps are handed in.
DECODING_LAYERS = (
    ("rules", "branches", "combination", "sampling", "trace", "detector", "agla"),  # pure math, transforms, values
    ("image_heads",),  # a model's ranked attention heads (DeCoRe's, MaskCD's), found beside it as its detector is
    ("amateur",),  # CD's and LCD's amateur model and its rows, found beside the model as its detector is
    ("steering",),  # edits of the decoder layers' MLP outputs (forward hooks), read from the forward's control
    ("attention",),  # attention functions and edits on the model's own layers
    ("dcd", "branch_rows"),  # DCD's projector copies; a request's rows and the model's pre-steps
    ("vti",),  # VTI's directions, its steered vision encoder (through DCD's image-embedding replacement)
    ("methods",),  # the registry
    ("engine",),  # one batched run of rows and sides
    ("beam",),  # beam search (OPERA) on the engine's row groups
    ("comparison",),  # the library's entry points
    ("bench",),
)


def module_name(path: str) -> str:
    """"models/shapes_world/world.py" -> "models.shapes_world.world"; a package's __init__.py names the package."""
    parts = path[: -len(".py")].replace(os.sep, "/").split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(node: ast.ImportFrom, path: str) -> str:
    """The absolute module a ``from ... import`` names. Relative levels count from the file's package, the repository
    root standing above the top-level packages (so ``from ..decoding import y`` in models/x.py names ``decoding``:
    Python refuses it, but it is what the line means to do)."""
    if not node.level:
        return node.module or ""
    package = module_name(path).split(".")
    if not path.endswith("__init__.py"):
        package = package[:-1]
    base = package[: max(0, len(package) - (node.level - 1))]
    return ".".join(base + ([node.module] if node.module else []))


def imported_modules(source: str, path: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source``, as if it were the file at ``path`` (relative to the
    repository root). ``from a import b`` yields ``a.b`` (b may be a module or a name in ``a``)."""
    found = []
    for node in ast.walk(ast.parse(source, filename=path)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node, path)
            found += [(node.lineno, base if a.name == "*" else ".".join(filter(None, (base, a.name))))
                      for a in node.names]
        elif isinstance(node, ast.Call) and _is_dynamic_import(node.func) and node.args:
            name = node.args[0]
            if isinstance(name, ast.Constant) and isinstance(name.value, str):
                found.append((node.lineno, name.value))
    return found


def _is_dynamic_import(func: ast.expr) -> bool:
    if isinstance(func, ast.Name):
        return func.id in ("__import__", "import_module")
    return isinstance(func, ast.Attribute) and func.attr == "import_module"


def violations(source: str, path: str) -> list[str]:
    """"path:line imports module" for every import of ``source`` that the package of ``path`` must not make."""
    forbidden = FORBIDDEN.get(path.replace(os.sep, "/").split("/")[0], ())
    return sorted({f"{path}:{line} imports {name}" for line, name in imported_modules(source, path)
                   if name.split(".")[0] in forbidden})


def package_files(package: str) -> list[str]:
    """Every .py file under the package, relative to the repository root."""
    out = []
    for folder, dirs, files in os.walk(os.path.join(REPO, package)):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        out += [os.path.relpath(os.path.join(folder, f), REPO) for f in sorted(files) if f.endswith(".py")]
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_flow_one_way(package):
    files = package_files(package)
    assert files, f"no Python files under {package}/"
    found = []
    for path in files:
        with open(os.path.join(REPO, path), encoding="utf-8") as f:
            found += violations(f.read(), path)
    assert not found, f"{package} must not import {', '.join(FORBIDDEN[package])}:\n" + "\n".join(found)


@pytest.mark.parametrize("path, source, expected", [
    ("models/loader.py", "from decoding import x", ["decoding.x"]),
    ("models/loader.py", "import decoding.engine as engine", ["decoding.engine"]),
    ("models/loader.py", "def load():\n    if True:\n        from eval.runner import RunConfig\n",
     ["eval.runner.RunConfig"]),
    ("models/loader.py", "class A:\n    def f(self):\n        import demo.ui\n", ["demo.ui"]),
    ("models/loader.py", "from ..decoding import y", ["decoding.y"]),
    ("models/loader.py", "from .. import demo", ["demo"]),
    ("models/shapes_world/world.py", "from ...decoding import y", ["decoding.y"]),
    ("models/__init__.py", "from ..eval import z", ["eval.z"]),
    ("models/loader.py", "import importlib\nimportlib.import_module('decoding.engine')", ["decoding.engine"]),
    ("decoding/engine.py", "try:\n    import gradio as gr\nexcept ImportError:\n    gr = None\n", ["gradio"]),
    ("decoding/engine.py", "from eval import read_pope", ["eval.read_pope"]),
    ("eval/runner.py", "from demo.render import render", ["demo.render.render"]),
    ("eval/shapes_world/evaluate.py", "def f():\n    import gradio\n", ["gradio"]),
])
def test_checker_finds_a_forbidden_import(path, source, expected):
    assert [v.split(" imports ")[1] for v in violations(source, path)] == expected


@pytest.mark.parametrize("path, source", [
    ("models/shapes_world/world.py", "from ..decoding import y"),  # models.decoding: not the decoding package
    ("models/shapes_world/world.py", "from . import build\nfrom .. import tiny"),
    ("models/loader.py", "import decodings\nimport evaluate\nfrom demolition import x"),  # names, not prefixes
    ("eval/runner.py", "from decoding import answer_all\nfrom models import load_model"),
    ("eval/shapes_world/benchmark.py", "from . import evaluate\nfrom .. import pope"),
    ("decoding/engine.py", "import torch\nfrom models.adapters.base import FamilyAdapter"),
    ("demo/ui.py", "import gradio\nfrom eval import read_pope"),  # demo is not constrained here
])
def test_checker_allows_the_one_way_flow(path, source):
    assert violations(source, path) == []


def test_relative_imports_resolve_to_their_package():
    names = [name for _, name in imported_modules("from . import evaluate\nfrom ..pope import read_pope",
                                                  "eval/shapes_world/benchmark.py")]
    assert names == ["eval.shapes_world.evaluate", "eval.pope.read_pope"]
    assert [n for _, n in imported_modules("from .world import *", "models/shapes_world/__init__.py")] == [
        "models.shapes_world.world"]


def layer_violations(source: str, path: str) -> list[str]:
    """"path:line imports decoding.x" for every import of a decoding module not in a layer below that of ``path``."""
    layer = {module: i for i, modules in enumerate(DECODING_LAYERS) for module in modules}
    own = layer[module_name(path).split(".")[1]]
    found = set()
    for line, name in imported_modules(source, path):
        parts = name.split(".")
        if parts[0] == "decoding" and len(parts) > 1 and parts[1] in layer and layer[parts[1]] >= own:
            found.add(f"{path}:{line} imports {'.'.join(parts[:2])}")
    return sorted(found)


def test_decoding_reads_bottom_up():
    files = [p for p in package_files("decoding") if not p.endswith("__init__.py")]  # the package's lazy facade
    modules = sorted(module_name(p).split(".")[1] for p in files)
    placed = sorted(module for modules_of_layer in DECODING_LAYERS for module in modules_of_layer)
    assert modules == placed, "every decoding module is in exactly one of DECODING_LAYERS"
    found = []
    for path in files:
        with open(os.path.join(REPO, path), encoding="utf-8") as f:
            found += layer_violations(f.read(), path)
    assert not found, "decoding imports upward (DECODING_LAYERS):\n" + "\n".join(found)


@pytest.mark.parametrize("path, source, expected", [
    ("decoding/branch_rows.py", "from .engine import Engine, Side", ["decoding.engine"]),  # what branch_rows once did
    ("decoding/methods.py", "def f():\n    from . import comparison\n", ["decoding.comparison"]),
    ("decoding/rules.py", "from .combination import Combination", ["decoding.combination"]),  # the same layer
    ("decoding/methods.py", "from .attention import Edit\nfrom .engine import Engine", ["decoding.engine"]),
])
def test_layer_checker_finds_an_upward_import(path, source, expected):
    assert [v.split(" imports ")[1] for v in layer_violations(source, path)] == expected
