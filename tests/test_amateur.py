"""CD and LCD: the amateur model as a row group of its own, its vocabulary check, its prompt, the released LCD's
no-cache recompute, the spec's test vectors, batched == alone on every tiny family, and the amateur's training."""

from __future__ import annotations

import pytest
import torch

from decoding import compare, prepare_comparison, rules
from decoding import use_amateur
from decoding.amateur import AmateurMissing, amateur_for, text_prompt_ids
from decoding.engine import Engine
from models import TINY_FAMILIES, build_tiny, load_model
from models.amateur import AmateurAdapter, bind_amateur, shared_vocabulary
from models.shapes_world import world

QUESTION = "is there a square in the image ?"


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory):
    """A tiny LLaVA folder with no amateur, built once; a test that adds files to it works on a copy."""
    return build_tiny("llava", tmp_path_factory.mktemp("tiny-llava"), seed=0)


def copied(folder, tmp_path) -> str:
    import shutil

    return str(shutil.copytree(folder, tmp_path / "llava"))


@pytest.fixture(scope="module")
def scene_image():
    return world.render(world.sample_scene(1_000_000_007))


def test_the_spec_s_test_vectors():
    l_e, l_a = torch.tensor([[3.0, 2.5, 0.0, -2.0]]), torch.tensor([[3.0, 1.0, 0.0, 0.0]])
    f = torch.log_softmax(l_e, -1)
    torch.testing.assert_close(f, torch.tensor([[-0.508657, -1.008657, -3.508657, -5.508657]]), atol=1e-6, rtol=0)
    out = rules.cd(l_e, l_a, alpha=1.0, amateur_temperature=0.5, beta=0.1)
    torch.testing.assert_close(out[:, :2], torch.tensor([[-0.485650, 3.014350]]), atol=1e-5, rtol=0)
    assert torch.isneginf(out[:, 2:]).all() and int(out.argmax()) == 1 and int(l_e.argmax()) == 0
    greedy_as_released = rules.cd(l_e, l_a, beta=0.0)  # no V_head: every token keeps a finite score
    assert torch.isfinite(greedy_as_released).all()
    weight, entropy = rules.lcd_weight(l_a, alpha=2.0)
    torch.testing.assert_close(entropy, torch.tensor([0.672078]), atol=1e-6, rtol=0)
    torch.testing.assert_close(weight, torch.tensor([2.975843]), atol=1e-5, rtol=0)
    out = rules.lcd(l_e, l_a, alpha=2.0, beta=0.1)
    torch.testing.assert_close(out[:, :2], torch.tensor([[-3.982579, -0.018813]]), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.exp()[:, :2], torch.tensor([[0.018638, 0.981362]]), atol=1e-6, rtol=0)
    assert torch.isneginf(out[:, 2:]).all()


def test_lcd_s_weight_is_unbounded_as_released_and_capped_on_request():
    certain = torch.tensor([[20.0, 0.0, 0.0, 0.0]])
    weight, entropy = rules.lcd_weight(certain)
    assert float(entropy) < 1e-5 and float(weight) > 1e5
    assert float(rules.lcd_weight(certain, alpha_cap=5.0)[0]) == 5.0
    assert torch.isfinite(rules.lcd(torch.tensor([[1.0, 0.5, 0.0, 0.0]]), certain)[:, :2]).all()


def test_ids_the_amateur_lacks_get_log_prob_zero_as_lcd_pads_them():
    amateur = torch.tensor([[1.0, 2.0, float("-inf")]])
    expected = torch.cat([torch.log_softmax(amateur[:, :2], -1), torch.zeros(1, 1)], dim=-1)
    torch.testing.assert_close(rules.amateur_log_probs(amateur), expected)


@pytest.fixture(scope="module")
def embedded():
    from demo.allow_list import EMBEDDED_MODEL_DIR

    return load_model(str(EMBEDDED_MODEL_DIR))


def test_the_embedded_model_finds_its_shipped_amateur_with_its_tokenizer(embedded):
    amateur = amateur_for(embedded, "LCD")
    assert isinstance(amateur, AmateurAdapter) and amateur.model.config.model_type == "llama"
    assert amateur.shared == amateur.width == 57  # the same 57-word tokenizer, nothing padded
    assert not hasattr(amateur.model, "vision_tower") and amateur.model.num_parameters() < 200_000


def test_the_amateur_reads_the_expert_s_prompt_without_its_image(embedded, scene_image):
    original = embedded.build_row(QUESTION, scene_image)
    ids = text_prompt_ids(original)[0].tolist()
    tokens = embedded.tokenizer.convert_ids_to_tokens(ids)
    assert tokens == ["<s>", "USER:", *QUESTION.split(), "ASSISTANT:"]  # the expert's template, image tokens out
    assert original.length == len(ids) + len(original.image_token_positions)
    prepared = prepare_comparison(embedded, scene_image, QUESTION, "cd", amateur_prompt=0)
    row = prepared.rows[prepared.sides[1].roles["amateur"]]
    assert row.input_ids[0].tolist() == ids[-1:]  # --ignore_prefix yes: the prompt's last token only
    prepared = prepare_comparison(embedded, scene_image, QUESTION, "cd", amateur_prompt=1)
    assert prepared.rows[prepared.sides[1].roles["amateur"]].input_ids[0].tolist() == ids


def released_lcd_step(expert_ids: list[int], image_id: int, amateur, scores: torch.Tensor, alpha=2.0, beta=0.1):
    """LCD's ``CDProcessorWithLM.__call__`` as released (avshalomman/lcd@30f8bbf lcd.py L46–93), written out for one
    row: the image ids dropped from the whole sequence, the language model run on all of it with no cache, its
    log-probs padded with zeros to the expert's vocabulary, the entropy weight and the cut."""
    text_ids = torch.tensor([[t for t in expert_ids if t != image_id]])
    with torch.inference_mode():
        llm = amateur.model(input_ids=text_ids).logits[:, -1, :].float()
    s = torch.log_softmax(scores, dim=-1)
    u = torch.log_softmax(llm, dim=-1)
    entropy = -(u.exp() * u).sum(-1, keepdim=True)
    weight = alpha / entropy
    if u.shape[-1] < s.shape[-1]:
        u = torch.cat([u, torch.zeros(1, s.shape[-1] - u.shape[-1])], dim=-1)
    keep = s >= s.max(-1, keepdim=True).values + torch.log(torch.tensor(beta))
    return torch.log_softmax(((1 + weight) * s - weight * u).masked_fill(~keep, float("-inf")), dim=-1)


def test_lcd_equals_the_release_s_no_cache_recompute(embedded, scene_image):
    """The amateur's cached row, fed the chosen tokens, gives at every step the logits of the release's recompute
    from scratch; the decoded answer is the release's greedy answer."""
    amateur = amateur_for(embedded, "LCD")
    prepared = prepare_comparison(embedded, scene_image, "describe the image .", "lcd", baseline=False,
                                  visual_dependence=False, attention_layers=None)
    side = prepared.sides[0]
    events = list(Engine(embedded).run(prepared.rows, prepared.sides, max_new_tokens=12, ignore_eos=True,
                                       record_logits=True))
    expert_ids = prepared.rows[side.roles["original"]].input_ids[0].tolist()
    image_id = embedded.model.config.image_token_id
    for event in events:
        scores = event.row_logits[side.roles["original"]][None]
        released = released_lcd_step(expert_ids, image_id, amateur, scores)
        ours = side.combine({role: event.row_logits[row][None] for role, row in side.roles.items()}, event.step)
        torch.testing.assert_close(ours.logits, released, atol=1e-4, rtol=0)
        token = event.tokens[side.name].token_id
        assert token == int(released.argmax())
        expert_ids.append(token)


def test_different_tokenizers_are_refused_by_name(embedded, tiny_llava):
    llava = load_model(tiny_llava)
    with pytest.raises(ValueError, match="amateur's tokenizer differs from the model's"):
        bind_amateur(embedded, llava.model.get_decoder(), llava.tokenizer, "tiny-llava")
    with pytest.raises(ValueError, match="amateur's tokenizer differs"):
        use_amateur(llava, str(amateur_for(embedded, "CD").model.name_or_path))


def test_a_smaller_amateur_vocabulary_is_padded_and_its_missing_ids_fed_as_unknown(embedded, scene_image):
    """An amateur sharing only the first 50 ids: its logits on the expert's 57 ids end in -inf (log-prob 0 in the
    rules), and a token it lacks reaches it as its unknown token."""
    own = amateur_for(embedded, "CD")
    small = AmateurAdapter(own.model, own.tokenizer, "small", width=57, shared=50)
    ids = torch.tensor([[1, 55, 9]])
    out = small.forward(input_ids=ids.clone())
    assert out.logits.shape[-1] == 57 and torch.isneginf(out.logits[..., 50:]).all()
    unknown = own.model(input_ids=torch.tensor([[1, own.tokenizer.unk_token_id, 9]])).logits
    torch.testing.assert_close(out.logits[..., :50], unknown[..., :50])
    assert shared_vocabulary(embedded.model, embedded.tokenizer, own.model, own.tokenizer) == 57


def test_a_model_without_an_amateur_is_refused_with_what_to_do(tiny_llava, tmp_path, scene_image):
    bare = load_model(copied(tiny_llava, tmp_path))
    for method in ("cd", "lcd"):
        with pytest.raises(AmateurMissing, match="needs an amateur language model") as refused:
            compare(bare, scene_image, QUESTION, method, max_new_tokens=2)
        assert str(tmp_path) not in str(refused.value)  # no server path
    assert compare(bare, scene_image, QUESTION, "lcd", amateur=1, max_new_tokens=2).branches["amateur"] == "self"


def test_cd_s_cut_as_released_is_for_sampling_only(embedded, scene_image):
    greedy = compare(embedded, scene_image, QUESTION, "cd", max_new_tokens=2)
    assert greedy.branches["head_cut"] == 0.0
    assert greedy.method_side.tokens[0].plausible_set_size == 57  # no V_head: every token stays a candidate
    always = compare(embedded, scene_image, QUESTION, "cd", cut=1, max_new_tokens=2)
    assert always.branches["head_cut"] == 0.1 and always.method_side.tokens[0].plausible_set_size < 57
    sampled = compare(embedded, scene_image, QUESTION, "cd", do_sample=True, seed=1, max_new_tokens=2)
    assert sampled.branches["head_cut"] == 0.1


@pytest.mark.parametrize("family", TINY_FAMILIES)
@pytest.mark.parametrize("method", ["cd", "lcd"])
def test_batched_equals_alone_on_every_tiny_family(tiny_model, image, family, method):
    """The amateur's rows as their own group in the batched run, against every row alone, 30 steps; LCD's default
    on InstructBLIP and Gemma 3 is the model's own text-only row, in the expert's group."""
    model = tiny_model(family)
    prepared = prepare_comparison(model, image, "Is there a cat in the picture?", method, seed=3,
                                  attention_layers=None)
    logits = {}
    for batched in (True, False):
        events = list(Engine(model).run(prepared.rows, prepared.sides, max_new_tokens=30, batched=batched,
                                        ignore_eos=True, record_logits=True))
        logits[batched] = torch.stack([e.row_logits for e in events])
    amateur_row = prepared.sides[1].roles["amateur"]
    runs_apart = hasattr(prepared.rows[amateur_row], "runner")
    assert runs_apart == (method == "cd" or family not in ("gemma3", "instructblip"))
    finite = torch.isfinite(logits[True])
    assert torch.equal(finite, torch.isfinite(logits[False]))
    torch.testing.assert_close(logits[True][finite], logits[False][finite], atol=1e-4, rtol=0)
    assert not torch.allclose(logits[True][:, amateur_row], logits[True][:, prepared.sides[1].roles["original"]])


def test_the_amateur_s_training_is_seeded_and_resumes_where_it_stopped(tmp_path):
    """Stopped at step 2 of a 4-step schedule and resumed, the amateur is the uninterrupted run's, to the bit."""
    from safetensors.torch import load_file

    from eval import amateur_train

    def run(work: str, out: str, *extra: str) -> dict:
        sizes = ["--steps", "4", "--batch", "4", "--hidden", "16", "--layers", "1", "--heads", "2",
                 "--intermediate", "32", "--held-out", "20", "--warmup", "2"]
        amateur_train.train(amateur_train.parse_args([*sizes, "--work", str(tmp_path / work),
                                                      "--out", str(tmp_path / out), *extra]))
        return load_file(str(tmp_path / out / "model.safetensors"))

    whole = run("a", "whole")
    half = run("b", "half", "--stop-at", "2")
    resumed = run("b", "resumed")
    assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole)
    assert any(not torch.equal(whole[k], half[k]) for k in whole)


def test_eval_takes_the_amateur_by_name_and_refuses_one_that_does_not_fit(tiny_llava, tmp_path, capsys):
    """``--amateur`` names the checkpoint (recorded in run.json); a model without one, or an amateur with another
    tokenizer, is an input error (exit 2) saying so."""
    import json
    import shutil

    from PIL import Image

    from decoding.amateur import untrained_amateur
    from eval.cli import main

    model_dir = copied(tiny_llava, tmp_path)
    shipped = untrained_amateur(load_model(model_dir))
    elsewhere = shutil.move(shipped, tmp_path / "vicuna-like")
    (tmp_path / "val2014").mkdir()
    Image.new("RGB", (48, 36), (220, 40, 40)).save(tmp_path / "val2014" / "COCO_val2014_000000000001.jpg")
    questions = tmp_path / "coco_pope_random.json"
    questions.write_text(json.dumps({"question_id": 1, "image": "COCO_val2014_000000000001.jpg",
                                     "text": "Is there a dog in the image?", "label": "yes"}) + "\n")

    def run(out, *extra):
        return main(["pope", "--model", model_dir, "--questions", str(questions), "--images",
                     str(tmp_path / "val2014"), "--out", str(tmp_path / out), "--max-new-tokens", "3", "--no-progress",
                     "--method", "lcd", *extra])

    assert run("with", "--amateur", str(elsewhere)) == 0
    assert json.loads((tmp_path / "with" / "run.json").read_text())["fingerprint"]["amateur"] == str(elsewhere)
    capsys.readouterr()
    assert run("without") == 2
    assert "needs an amateur language model" in capsys.readouterr().err
    other = str(tmp_path / "shapes-amateur")
    from demo.allow_list import EMBEDDED_MODEL_DIR

    shutil.copytree(EMBEDDED_MODEL_DIR / "amateur", other)
    assert run("other", "--amateur", other) == 2
    assert "--amateur: the amateur's tokenizer differs from the model's" in capsys.readouterr().err


@pytest.mark.parametrize("method", ["cd", "lcd"])
def test_the_app_runs_them_on_the_embedded_model_with_its_shipped_amateur_naming_no_server_path(tmp_path, method):
    """The amateur ships in the model's folder; the app names it by the model's display name, and a model without
    one (the untrained tiny model) is refused in words, the app still serving."""
    import json
    import shutil
    from pathlib import Path

    from demo.allow_list import EMBEDDED_MODEL_DIR, TINY_MODEL
    from demo.examples import EXAMPLES_DIR, shapes_examples
    from demo.model_pool import ModelPool
    from demo.run import SLIDERS, RunControl, RunError, RunRequest, Runner

    name, question = shapes_examples()[0]
    shutil.copy(EXAMPLES_DIR / name, tmp_path / "scene.png")
    pool = ModelPool([str(EMBEDDED_MODEL_DIR), TINY_MODEL])
    runner = Runner(pool, tmp_path, max_pixels=1_000_000)

    def run(model_name):
        request = RunRequest(image={"path": str(tmp_path / "scene.png")}, question=question, model_name=model_name,
                             method=method, max_new_tokens=2, sliders=tuple(param.default for _, param in SLIDERS))
        return list(runner.run(RunControl(), request))[-1]

    text = Path(run(pool.names[0]).details.download).read_text()
    record = json.loads(text)
    assert record["method"] == method and record["branches"]["amateur"] == "shapes-llava/amateur"
    assert str(EMBEDDED_MODEL_DIR) not in text and str(Path.home()) not in text
    with pytest.raises(RunError) as refused:
        run(pool.names[1])
    assert "needs an amateur language model" in refused.value.message and "/tmp" not in refused.value.message


def test_the_app_s_operator_pairs_an_allow_listed_model_with_its_amateur(tiny_llava, tmp_path):
    """``app.py --amateur MODEL=AMATEUR``: only for a model on the allow-list; the pool attaches it when the model
    loads, and CD runs with it, the trace naming it by its folder's name."""
    import json
    import shutil
    from pathlib import Path

    from decoding.amateur import untrained_amateur
    from demo.allow_list import TINY_MODEL
    from demo.cli import parse_args
    from demo.examples import EXAMPLES_DIR
    from demo.model_pool import LoadOptions, ModelPool
    from demo.run import SLIDERS, RunControl, RunRequest, Runner

    assert parse_args(["--amateur", "llava-hf/llava-1.5-7b-hf=lmsys/vicuna-7b-v1.5"]).amateurs == [
        ("llava-hf/llava-1.5-7b-hf", "lmsys/vicuna-7b-v1.5")]
    with pytest.raises(SystemExit):
        parse_args(["--amateur", "lmsys/vicuna-7b-v1.5"])
    amateur = str(shutil.move(untrained_amateur(load_model(copied(tiny_llava, tmp_path))),
                              tmp_path / "vicuna-like"))
    with pytest.raises(ValueError, match="not on the allow-list: other/model"):
        ModelPool([TINY_MODEL], LoadOptions(amateurs=(("other/model", amateur),)))
    pool = ModelPool([TINY_MODEL], LoadOptions(amateurs=((TINY_MODEL, amateur),)))
    shutil.copy(EXAMPLES_DIR / "cat.jpg", tmp_path / "cat.jpg")
    request = RunRequest(image={"path": str(tmp_path / "cat.jpg")}, question="What is this?",
                         model_name=pool.default, method="cd", max_new_tokens=2,
                         sliders=tuple(param.default for _, param in SLIDERS))
    runner = Runner(pool, tmp_path, max_pixels=1_000_000)  # kept: its downloads live as long as it does
    final = list(runner.run(RunControl(), request))[-1]
    assert json.loads(Path(final.details.download).read_text())["branches"]["amateur"] == "vicuna-like"


def test_the_bench_times_them_with_the_shipped_amateur_and_refuses_a_model_without_one(capsys):
    from decoding import bench
    from demo.allow_list import EMBEDDED_MODEL_DIR

    assert bench.main(["--model", str(EMBEDDED_MODEL_DIR), "--methods", "cd,lcd", "--tokens", "2", "--repeats", "1",
                       "--warmup", "0", "--no-reference"]) == 0
    table = capsys.readouterr().out
    assert "| baseline + cd | batched | 3 |" in table and "| lcd alone | batched | 2 |" in table  # the amateur: a row
    with pytest.raises(SystemExit, match="bench: CD needs an amateur language model"):
        bench.main(["--model", "tiny:llava", "--methods", "cd", "--tokens", "2", "--repeats", "1"])


def test_a_broken_shipped_amateur_is_refused_naming_no_server_path(tiny_llava, tmp_path, scene_image):
    model_dir = copied(tiny_llava, tmp_path)
    (tmp_path / "llava" / "amateur").mkdir()
    (tmp_path / "llava" / "amateur" / "config.json").write_text("{not json")
    model = load_model(model_dir)
    with pytest.raises(AmateurMissing, match="the amateur in llava/amateur cannot serve CD") as refused:
        compare(model, scene_image, QUESTION, "cd", max_new_tokens=1)
    assert str(tmp_path) not in str(refused.value)
