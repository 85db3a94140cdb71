"""The Space's configuration: README.md's front matter, with `preload_from_hub` for the models the Space serves.

    python -m demo.space_card --models llava-hf/llava-1.5-7b-hf,Qwen/Qwen2-VL-2B-Instruct [--readme README.md]

rewrites the front matter's ``preload_from_hub`` list to the Hub models of that allow-list (local folders and the
built-in tiny model need no download), so that the Space downloads them once, when it is built, and a cold start
downloads nothing (hub-docs ``spaces-config-reference.md``: ``preload_from_hub`` fetches into the default Hugging Face
cache at build time; it ignores a changed ``HF_HOME``). Set the same list as the Space's ``CD_MODELS`` variable.
Plain Python: no gradio, no torch.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from .allow_list import AMATEURS_ENV, TINY_MODEL, allowed_amateurs

_FRONT = re.compile(r"\A---\n(.*?\n)---\n", re.S)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def hub_models(models: list[str]) -> list[str]:
    """The entries of an allow-list that are Hub ids (owner/name), in order, each once."""
    return list(dict.fromkeys(m for m in models if m != TINY_MODEL and _HUB_ID.match(m) and not Path(m).exists()))


def front_matter(readme: str) -> dict[str, str]:
    """The front matter's top-level ``key: value`` lines (a list's items are not read)."""
    found = _FRONT.match(readme)
    if found is None:
        raise ValueError("README.md has no front matter (--- ... --- at the top)")
    return dict(re.findall(r"^(\w+):[ \t]*(.*)$", found.group(1), re.M))


def with_preload(readme: str, models: list[str]) -> str:
    """``readme`` with its ``preload_from_hub`` list replaced by the Hub models of ``models`` (none: no list)."""
    found = _FRONT.match(readme)
    if found is None:
        raise ValueError("README.md has no front matter (--- ... --- at the top)")
    body = re.sub(r"^preload_from_hub:\n(?:[ \t]+-.*\n)*", "", found.group(1), flags=re.M)
    preload = "".join(f"  - {model}\n" for model in hub_models(models))  # the whole repository: its weights and files
    if preload:
        body += "preload_from_hub:\n" + preload
    return f"---\n{body}---\n" + readme[found.end():]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", required=True, help="the Space's allow-list, comma-separated (as CD_MODELS)")
    parser.add_argument("--amateurs", default="",
                        help="CD's and LCD's amateurs, comma-separated MODEL=AMATEUR pairs (as CD_AMATEURS): the "
                        "amateurs are preloaded too")
    parser.add_argument("--readme", default="README.md", type=Path)
    args = parser.parse_args(argv)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    try:
        amateurs = allowed_amateurs(env={AMATEURS_ENV: args.amateurs})
    except ValueError as error:
        parser.error(str(error))
    preloaded = models + [amateur for _, amateur in amateurs]
    args.readme.write_text(with_preload(args.readme.read_text(encoding="utf-8"), preloaded), encoding="utf-8")
    chosen = hub_models(preloaded)
    variables = f"CD_MODELS={','.join(models)}" + (f" and CD_AMATEURS={args.amateurs}" if amateurs else "")
    print(f"{args.readme}: preload_from_hub = {chosen or 'none'}; set the Space variables {variables}")


if __name__ == "__main__":
    main()
