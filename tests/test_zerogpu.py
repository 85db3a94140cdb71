"""Hugging Face Spaces with ZeroGPU: the Space's front matter and torch range, the GPU function's declared duration,
models loading on cuda at start-up, and the app with the `spaces` package present and absent."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

from demo import space_card, zerogpu

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _requirement(name: str, path: Path) -> SpecifierSet:
    line = next(line for line in path.read_text().splitlines() if re.match(rf"{name}\s*[<>=!~]", line))
    return SpecifierSet(line[len(name):].split("#")[0].strip())


def test_the_front_matter_is_a_zero_gpu_space():
    front = space_card.front_matter(README)
    assert front["sdk"] == "gradio" and (ROOT / front["app_file"]).is_file()
    assert front["python_version"].strip('"') in {v.rsplit(".", 1)[0] for v in zerogpu.ZERO_GPU_PYTHON}
    assert front["sdk_version"] in _requirement("gradio", ROOT / "requirements.txt")


def test_requirements_admit_zero_gpus_torch_and_the_cpu_build():
    torch = _requirement("torch", ROOT / "requirements.txt")
    assert all(version in torch for version in zerogpu.ZERO_GPU_TORCH)  # ZeroGPU installs one of these itself
    cpu = re.search(r"^torch==(\S+)", (ROOT / "constraints-cpu.txt").read_text(), re.M).group(1)
    assert cpu in torch  # what a CPU user installs is unchanged


def test_preload_lists_the_hub_models_of_the_allow_list(tmp_path):
    models = ["llava-hf/llava-1.5-7b-hf", "assets/shapes-llava", "tiny-random-llava", "Qwen/Qwen2-VL-2B-Instruct",
              "llava-hf/llava-1.5-7b-hf"]
    assert space_card.hub_models(models) == ["llava-hf/llava-1.5-7b-hf", "Qwen/Qwen2-VL-2B-Instruct"]
    written = space_card.with_preload(README, models)
    assert written.endswith(README[README.index("\n---\n", 3) + 5:])  # the page itself is untouched
    assert "preload_from_hub:\n  - llava-hf/llava-1.5-7b-hf\n  - Qwen/Qwen2-VL-2B-Instruct\n---\n" in written
    assert space_card.front_matter(written) | {"preload_from_hub": ""} == space_card.front_matter(README) | {
        "preload_from_hub": ""}
    again = space_card.with_preload(written, ["Qwen/Qwen2-VL-2B-Instruct"])  # replaced, not appended
    assert again.count("preload_from_hub:") == 1 and "llava-1.5-7b" not in again.split("\n---\n")[0]
    assert "preload_from_hub" not in space_card.with_preload(written, ["assets/shapes-llava"]).split("\n---\n")[0]
    readme = tmp_path / "README.md"
    readme.write_text(README, encoding="utf-8")
    space_card.main(["--models", "llava-hf/llava-1.5-7b-hf", "--readme", str(readme)])
    assert "  - llava-hf/llava-1.5-7b-hf\n" in readme.read_text(encoding="utf-8")


def test_declared_seconds_grow_with_tokens_rows_and_pre_steps():
    short, long = zerogpu.gpu_seconds("vcd", 16), zerogpu.gpu_seconds("vcd", 512)
    assert zerogpu.MIN_SECONDS == short < long <= zerogpu.MAX_SECONDS
    assert zerogpu.gpu_seconds("code", 128) > zerogpu.gpu_seconds("vcd", 128)  # CODE describes the image first
    assert zerogpu.gpu_seconds("opera", 256) > zerogpu.gpu_seconds("vcd", 256)  # 30 rows a token
    assert zerogpu.gpu_seconds("vcd", 256, "apc_only") > zerogpu.gpu_seconds("vcd", 256)  # a third panel
    assert zerogpu.gpu_seconds("vcd", "not a number") == zerogpu.gpu_seconds("vcd", 512)  # the run refuses it
    assert zerogpu.gpu_seconds("vcd", 512, scale=100) == zerogpu.MAX_SECONDS  # never above the cap


def test_models_load_on_cuda_at_start_up_only_on_zero_gpu():
    assert zerogpu.load_device(None, {"SPACES_ZERO_GPU": "true"}) == "cuda"
    assert zerogpu.load_device("cpu", {"SPACES_ZERO_GPU": "1"}) == "cuda"
    assert zerogpu.load_device(None, {}) is None and zerogpu.load_device("cuda:1", {}) == "cuda:1"


def test_with_spaces_the_comparison_is_a_gpu_function_that_is_a_no_op_off_spaces(monkeypatch):
    pytest.importorskip("spaces")
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)

    def run(a, b=2):
        yield a + b

    wrapped = zerogpu.gpu(run, duration=lambda a, b=2: 30)
    assert wrapped is run and list(wrapped(1)) == [3]  # spaces.GPU returns the function itself off ZeroGPU


def test_without_spaces_the_app_builds_and_answers(monkeypatch):
    """The app with no `spaces` package: the module falls back to calling the function itself."""
    monkeypatch.setitem(sys.modules, "spaces", None)  # `import spaces` now raises ImportError
    fresh = importlib.reload(zerogpu)
    try:
        assert fresh.spaces is None

        def run(a):
            return a * 2

        assert fresh.gpu(run, duration=lambda a: 30) is run
        from demo.model_pool import ModelPool
        from demo.ui import build_ui

        assert build_ui(ModelPool(["tiny-random-llava"])) is not None
    finally:
        monkeypatch.undo()
        importlib.reload(zerogpu)


def test_a_space_names_cd_s_amateurs_by_variable_and_preloads_them(tmp_path, capsys):
    """$CD_AMATEURS (a Space variable) pairs allow-list models with their amateurs as --amateur does, which overrides
    it; the space card preloads the amateurs with the models."""
    from demo.allow_list import allowed_amateurs

    env = {"CD_AMATEURS": " llava-hf/llava-1.5-7b-hf=lmsys/vicuna-7b-v1.5 , Qwen/Qwen2-VL-2B-Instruct=Qwen/Qwen2-1.5B "}
    assert allowed_amateurs(None, env) == [("llava-hf/llava-1.5-7b-hf", "lmsys/vicuna-7b-v1.5"),
                                           ("Qwen/Qwen2-VL-2B-Instruct", "Qwen/Qwen2-1.5B")]
    assert allowed_amateurs([("a/b", "c/d")], env) == [("a/b", "c/d")] and allowed_amateurs(None, {}) == []
    with pytest.raises(ValueError, match="expected MODEL=AMATEUR, got 'lmsys/vicuna-7b-v1.5'"):
        allowed_amateurs(None, {"CD_AMATEURS": "lmsys/vicuna-7b-v1.5"})
    readme = tmp_path / "README.md"
    readme.write_text(README, encoding="utf-8")
    space_card.main(["--models", "llava-hf/llava-1.5-7b-hf", "--amateurs",
                     "llava-hf/llava-1.5-7b-hf=lmsys/vicuna-7b-v1.5", "--readme", str(readme)])
    assert "preload_from_hub:\n  - llava-hf/llava-1.5-7b-hf\n  - lmsys/vicuna-7b-v1.5\n---\n" in readme.read_text()
    assert "CD_AMATEURS=llava-hf/llava-1.5-7b-hf=lmsys/vicuna-7b-v1.5" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        space_card.main(["--models", "a/b", "--amateurs", "nonsense", "--readme", str(readme)])
