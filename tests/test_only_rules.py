"""ONLY's pure rules (the record and its one-layer side path are not built yet): the head edit and the fusion,
against the spec's vectors and against the release's own code written out for a small prompt layout."""

from __future__ import annotations

import math

import pytest
import torch

from decoding import rules

TEXT = torch.tensor([[0, 1, 0, 0, 0, 0, 1]]).bool()  # key 0: BOS, in neither part, as the release leaves it
IMAGE = torch.tensor([[0, 0, 1, 1, 1, 1, 0]]).bool()


def test_the_head_edit_on_the_spec_vector():
    w = torch.tensor([[[.4, .1, .1, .1, .1, .1, .1], [.4, .25, .02, .02, .02, .04, .25]]])
    edited, removed, ratio = rules.only_head_weights(w, TEXT, IMAGE)
    h_text = -2 * 0.5 * math.log(0.5 + 1e-6)
    h_img = (-4 * 0.25 * math.log(0.25 + 1e-6), -3 * (1 / 3) * math.log(1 / 3 + 1e-6))
    assert h_text == pytest.approx(0.693145, abs=1e-6) and h_img == pytest.approx((1.386290, 1.098609), abs=1e-6)
    torch.testing.assert_close(ratio, torch.tensor([[h_text / h_img[0], h_text / h_img[1]]]))
    assert removed.tolist() == [[True, False]] and bool((edited[0, 0] == 0).all())
    # The kept head keeps its weights with the outlier zeroed, not renormalised, BOS included.
    torch.testing.assert_close(edited[0, 1], torch.tensor([.4, .25, .02, .02, .02, 0.0, .25]))


def _release_edit(w: torch.Tensor, start: int, end: int) -> torch.Tensor:
    """The release's lines (modeling_llama.py L486-520) for one query row, image keys start..end, text 1..start and
    end.., with its own index arithmetic: (1, heads, 1, keys) -> the edited weights."""
    cd = w.clone()
    text = torch.cat([cd[:, :, :, 1:start], cd[:, :, :, end:]], dim=-1)
    text = torch.where(text > text.mean(-1, keepdim=True) + text.std(-1, keepdim=True), torch.tensor(0.0), text)
    cd[:, :, :, 1:start] = text[:, :, :, :start - 1]
    cd[:, :, :, end:] = text[:, :, :, start - 1:]
    text_norm = (text / text.sum(-1, keepdim=True))[:, :, -1, :].unsqueeze(-2)
    img = cd[:, :, :, start:end]
    img = torch.where(img > img.mean(-1, keepdim=True) + img.std(-1, keepdim=True), torch.tensor(0.0), img)
    cd[:, :, :, start:end] = img
    img_norm = (img / img.sum(-1, keepdim=True))[:, :, -1, :].unsqueeze(-2)
    h_text = torch.nan_to_num(-torch.sum(text_norm * torch.log(text_norm + 1e-6), dim=-1), nan=0.0)
    h_img = torch.nan_to_num(-torch.sum(img_norm * torch.log(img_norm + 1e-6), dim=-1), nan=float("inf"))
    ratio = (h_text.sum(-1) / h_img.sum(-1)).squeeze()
    cd[:, torch.where(ratio < ratio.mean())[0], :, :] = 0
    return cd


def test_the_head_edit_is_the_release_s_on_random_weights_row_by_row():
    start, end, keys, heads = 4, 13, 17, 8
    text = torch.zeros(keys, dtype=torch.bool)
    text[1:start], text[end:] = True, True
    image = torch.zeros(keys, dtype=torch.bool)
    image[start:end] = True
    rows = [torch.softmax(torch.randn(heads, keys, generator=torch.Generator().manual_seed(s)) * 3, -1)
            for s in range(3)]
    edited, removed, _ = rules.only_head_weights(torch.stack(rows), text.expand(3, -1), image.expand(3, -1))
    for b, w in enumerate(rows):
        expected = _release_edit(w[None, :, None, :], start, end)[0, :, 0, :]
        torch.testing.assert_close(edited[b], expected)
        assert 0 < int(removed[b].sum()) < heads


def test_the_head_edit_refuses_overlapping_parts():
    with pytest.raises(ValueError, match="both text and image"):
        rules.only_head_weights(torch.ones(1, 2, 7) / 7, TEXT | IMAGE, IMAGE)


def test_the_fusion_on_the_spec_vectors():
    l = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    out, d = rules.only(l, l + torch.tensor([0.0, 0.05, 0.0, 0.0]), gamma=0.2)
    assert float(d[0]) == pytest.approx(0.018314, abs=1e-6)
    torch.testing.assert_close(out, torch.tensor([[8.0, 4.15, 0.0, float("-inf")]]))
    out, d = rules.only(l, torch.tensor([[1.0, 2.0, 0.0, -1.0]]), gamma=0.6)
    assert float(d[0]) == pytest.approx(0.814063, abs=1e-6)
    torch.testing.assert_close(out, torch.tensor([[3.0, 0.0, 0.0, float("-inf")]]))
    enhanced = torch.cat([l + 0.01 * l, l.flip(-1)])
    both, d = rules.only(torch.cat([l, l]), enhanced)  # each row takes its own branch
    assert float(d[0]) < 0.1 < float(d[1])
    for r in range(2):
        assert torch.equal(both[r:r + 1], rules.only(l, enhanced[r:r + 1])[0])
    torch.testing.assert_close(both[1, :3], (2 * l - l.flip(-1))[0, :3])
