"""Training ECD's detector and DCD's projector copies on COCO (eval/coco_data.py, ``python -m eval.ecd_train`` and
``python -m eval.dcd_train`` with the --coco flags): the labels are CHAIR's (a swapped-in absent object 1, a present
one 0), the splits are disjoint by image id, bad files are refused with a message naming them, and both commands run
end to end on tiny models of real families with a COCO-format fixture written here, their outputs loading where the
decoder reads them and decoding with them."""

from __future__ import annotations

import json
import random

import pytest
from PIL import Image, ImageDraw

from decoding import compare
from decoding.dcd import projector_copies
from decoding.detector import detector_for
from eval import coco_data, dcd_train, ecd_train
from eval.errors import EvalInputError
from models import build_tiny, load_model

CATEGORIES = {1: "person", 3: "car", 6: "bus", 17: "cat", 18: "dog", 25: "giraffe"}
# image id -> (its instance categories, its captions)
IMAGES = {
    101: ({18}, ["Two dogs play on the grass.", "A dog runs after a ball."]),
    102: ({17, 3}, ["A cat sleeps on a red car.", "The cat is on the hood of the car."]),
    103: ({1, 6}, ["A man waits for the bus.", "People stand next to a bus."]),
    104: ({25}, ["A giraffe eats leaves from a tree."]),
    105: ({1, 18}, ["A woman walks her dog.", "A person with a dog on a leash."]),
    106: ({3}, ["A blue car parked on the street."]),
}
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange"]


def write_coco(folder) -> dict[str, str]:
    """Six small pictures (a coloured shape each) and their instances and captions files, in COCO's format."""
    images = folder / "images"
    images.mkdir(parents=True)
    entries, annotations, captions = [], [], []
    for k, (image_id, (categories, texts)) in enumerate(IMAGES.items()):
        name = f"COCO_val2014_{image_id:012d}.jpg"
        picture = Image.new("RGB", (64, 48), "white")
        ImageDraw.Draw(picture).ellipse((8 + 4 * k, 8, 40 + 2 * k, 40), fill=COLOURS[k])
        picture.save(images / name)
        entries.append({"id": image_id, "file_name": name, "width": 64, "height": 48})
        annotations += [{"id": len(annotations) + 1, "image_id": image_id, "category_id": c}
                        for c in sorted(categories)]
        captions += [{"id": len(captions) + 1, "image_id": image_id, "caption": text} for text in texts]
    paths = {"images": str(images), "instances": str(folder / "instances.json"),
             "captions": str(folder / "captions.json")}
    with open(paths["instances"], "w") as f:
        json.dump({"images": entries, "annotations": annotations,
                   "categories": [{"id": i, "name": n} for i, n in CATEGORIES.items()]}, f)
    with open(paths["captions"], "w") as f:
        json.dump({"images": entries, "annotations": captions}, f)
    return paths


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    return write_coco(tmp_path_factory.mktemp("coco"))


@pytest.fixture(scope="module")
def coco(fixture):
    return coco_data.read_coco(fixture["images"], fixture["instances"], fixture["captions"])


def coco_flags(paths) -> list[str]:
    return ["--coco-images", paths["images"], "--coco-instances", paths["instances"],
            "--coco-captions", paths["captions"]]


def train_tiny(command, family: str, fixture, tmp_path, options: list[str]) -> tuple[str, list[str]]:
    """A tiny model of ``family`` trained by ``command`` on the fixture (status 0); its folder and the argv."""
    path = build_tiny(family, tmp_path / family, seed=1)
    argv = ["--model", path, "--work", str(tmp_path / "work"), *options, *coco_flags(fixture)]
    assert command.main(argv) == 0
    return path, argv


def _pieces(text: str, split_word: str) -> list[str]:
    """``text`` as a tokenizer might cut it: words with their leading space, ``split_word`` in two pieces."""
    pieces = []
    for k, word in enumerate(text.split(" ")):
        word = word if k == 0 else " " + word
        if word.strip(" .").lower() == split_word:
            cut = len(word) // 2
            pieces += [word[:cut], word[cut:]]
        else:
            pieces.append(word)
    return pieces


def test_a_swapped_in_absent_object_is_labelled_1_and_a_present_one_0(coco):
    assert coco.truth[102] == {"cat", "car"} and "giraffe" in coco.categories
    assert coco_data.object_spans(coco.vocabulary, "Two dogs play.") == [(4, 8, "dog")]
    swapped = None
    for seed in range(20):  # a swap of "dogs" keeps the plural and is read by CHAIR as the new category
        swapped = coco_data.swapped_caption(coco, 101, "Two dogs play on the grass.", random.Random(seed))
        assert swapped is not None and swapped.startswith("Two ") and swapped.endswith(" play on the grass.")
        new = swapped.split(" ")[1]
        (span,) = coco_data.object_spans(coco.vocabulary, swapped)
        assert span[2] not in coco.truth[101] and new.endswith("s") and span[:2] == (4, 4 + len(new))
    # a caption naming a present object (car) and the swapped-in absent one, the latter cut in two pieces
    text = f"A {new.rstrip('s')} and a car."
    pieces = _pieces(text, new.rstrip("s"))
    labels = coco_data.coco_labeller(coco.vocabulary, coco.truth[101] | {"car"})(pieces)
    by_piece = dict(zip(pieces, labels, strict=True))
    absent_pieces = [p for p in pieces if p.strip() and p.strip(" .") in new.rstrip("s")
                     and p.strip() not in ("A", "and", "a")]
    assert len(absent_pieces) == 2 and all(by_piece[p] == (1, coco_data.GROUP_IDS["object"]) for p in absent_pieces)
    assert by_piece[" car."] == (0, coco_data.GROUP_IDS["object"])
    assert by_piece[" and"] == (0, coco_data.GROUP_IDS["other"])
    # a caption with nothing to swap, and the existence answers
    assert coco_data.swapped_caption(coco, 106, "A view of the sky.", random.Random(0)) is None
    label = coco_data.answer_labeller("no")
    assert label(["Yes", ""]) == [(1, coco_data.GROUP_IDS["answer"]), (0, coco_data.GROUP_IDS["other"])]
    assert label([" No", "."])[0] == (0, coco_data.GROUP_IDS["answer"])


def test_dcd_pairs_are_a_caption_against_its_swap_and_right_against_wrong_answers(coco):
    pairs = coco_data.preference_pairs(coco, 102, seed=0)
    assert pairs == coco_data.preference_pairs(coco, 102, seed=0)
    captions = [p for p in pairs if p[0] == coco_data.DESCRIBE_PROMPT]
    assert [c for _, c, _ in captions] == coco.captions[102]
    for _, chosen, rejected in captions:
        wrong = {obj for *_, obj in coco_data.object_spans(coco.vocabulary, rejected)} - coco.truth[102]
        assert chosen != rejected and len(wrong) == 1
    answers = [(q, c, r) for q, c, r in pairs if q != coco_data.DESCRIBE_PROMPT]
    assert sorted(c for _, c, _ in answers) == ["No", "Yes"] and all({c, r} == {"Yes", "No"} for _, c, r in answers)


def test_splits_are_disjoint_by_image_id_and_seeded():
    ids = list(range(1000, 1050))
    split = coco_data.split_images(ids, seed=3)
    assert not set(split["train"]) & set(split["test"]) and sorted(split["train"] + split["test"]) == ids
    assert len(split["test"]) == 10 and split == coco_data.split_images(list(reversed(ids)), seed=3)
    assert split["test"] != coco_data.split_images(ids, seed=4)["test"]
    assert coco_data.split_images([7, 8], seed=0)["test"] in ([7], [8])
    with pytest.raises(EvalInputError, match="at least 2"):
        coco_data.split_images([7], seed=0)


def test_bad_or_missing_files_are_refused_with_a_message_naming_them(fixture, tmp_path, capsys):
    with pytest.raises(EvalInputError, match="image folder .*nowhere.* does not exist"):
        coco_data.read_coco(str(tmp_path / "nowhere"), fixture["instances"], fixture["captions"])
    broken = tmp_path / "broken.json"
    broken.write_text("{ not json")
    with pytest.raises(EvalInputError, match="broken.json.* is not valid JSON"):
        coco_data.read_coco(fixture["images"], str(broken), fixture["captions"])
    empty = tmp_path / "images"
    empty.mkdir()
    with pytest.raises(EvalInputError, match="6 of the 6 images are not in .*COCO_val2014_000000000101.jpg"):
        coco_data.read_coco(str(empty), fixture["instances"], fixture["captions"])
    (empty / "COCO_val2014_000000000101.jpg").write_bytes(b"not a picture")
    for name in list(IMAGES)[1:]:
        (empty / f"COCO_val2014_{name:012d}.jpg").write_bytes(b"")
    unreadable = coco_data.read_coco(str(empty), fixture["instances"], fixture["captions"])
    with pytest.raises(EvalInputError, match="COCO_val2014_000000000101.jpg.* could not be read"):
        unreadable.image(101)
    # the commands: a message and status 2, no traceback; a half-given set of flags is a usage error
    argv = ["--model", "unused", "--work", str(tmp_path / "w"), "--coco-images", fixture["images"],
            "--coco-instances", str(tmp_path / "missing.json"), "--coco-captions", fixture["captions"]]
    with pytest.raises(SystemExit) as usage:
        ecd_train.main(argv[:6])
    assert usage.value.code == 2 and "missing --coco-instances, --coco-captions" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        dcd_train.main(argv + ["--sweep", "0,1"])
    assert "run it without the --coco flags" in capsys.readouterr().err


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "instructblip"])
def test_ecd_trains_on_coco_and_the_detector_decodes(family, fixture, tmp_path, capfd):
    options = ["--epochs", "2", "--batch", "64", "--rank", "4", "--description-tokens", "6", "--rows", "4"]
    path, argv = train_tiny(ecd_train, family, fixture, tmp_path, options)
    assert "| all | object |" in capfd.readouterr().out
    adapter = load_model(path)
    bound = detector_for(adapter.model, adapter.model_id)  # where ECD's decoding reads it
    data = bound.detector.config["data"]
    assert data["source"] == "coco" and data["images"] == {"train": 5, "test": 1}
    assert data["wrong"]["train"] >= 5  # each training image's swapped caption has a hallucinated word
    assert bound.detector.config["evaluation"]["all/object"]["tokens"] > 0
    result = compare(adapter, Image.open(f"{fixture['images']}/COCO_val2014_000000000104.jpg"),
                     "Is there a giraffe in the image?", "ecd", max_new_tokens=3, ignore_eos=True)
    assert len(result.method_side.tokens) == 3 and result.branches["detector"].endswith("ecd")
    # a missing captions file: a message naming it, status 2
    bad = [*argv[:-2], "--coco-captions", str(tmp_path / "none.json")]
    assert ecd_train.main(bad) == 2 and "none.json' does not exist" in capfd.readouterr().err


@pytest.mark.parametrize("family", ["llava", "idefics3", "instructblip"])
def test_dcd_trains_on_coco_and_its_copies_decode(family, fixture, tmp_path, capfd):
    options = ["--steps", "3", "--batch", "4", "--held-out", "6", "--log-every", "1", "--save-every", "1"]
    path, argv = train_tiny(dcd_train, family, fixture, tmp_path, options)
    figures = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
    assert set(figures) == {"original", "positive", "negative"}
    adapter = load_model(path)
    report = json.load(open(f"{path}/dcd/dcd.json"))
    assert report["data"].startswith("COCO (5 training, 1 test images)")
    assert report["settings"]["coco_count"] == 2000 and report["settings"]["steps"] == 3
    copies = projector_copies(adapter)  # where DCD's decoding reads them, fitting this model's projector
    own = adapter.image_projector().state_dict()
    assert all(copies[side].state_dict().keys() == own.keys() for side in copies)
    assert any(not (copies["negative"].state_dict()[k] == own[k]).all() for k in own)  # it was trained
    result = compare(adapter, Image.open(f"{fixture['images']}/COCO_val2014_000000000101.jpg"),
                     coco_data.DESCRIBE_PROMPT, "dcd", max_new_tokens=3, ignore_eos=True)
    assert len(result.method_side.tokens) == 3 and result.branches["replaced_image_tokens"] > 0
    assert dcd_train.main(argv) == 0  # resumed at its end: the same copies
    assert "resuming positive from step 3" in capfd.readouterr().err
