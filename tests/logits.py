"""Helpers of the rule tests: small logits by hand, and comparing rule outputs with their -inf entries."""

import torch

NEG_INF = float("-inf")


def T(*rows):
    return torch.tensor(rows, dtype=torch.float32)


def assert_logits(out, expected, tol=1e-5):
    """Equal finite entries (within tol) and -inf at the same places; float32."""
    expected = torch.as_tensor(expected, dtype=torch.float32)
    assert out.dtype == torch.float32
    assert out.shape == expected.shape
    assert torch.equal(torch.isneginf(out), torch.isneginf(expected)), (out, expected)
    fin = torch.isfinite(expected)
    torch.testing.assert_close(out[fin], expected[fin], atol=tol, rtol=tol)


class FlippedDetector:
    """A stand-in for ECD's trained detector (``decoding.detector.BoundDetector``) in the rule tests: its logits are
    the original row's, reversed (the real one is tested in test_ecd.py)."""

    def logits(self, L):
        return L["original"].flip(-1)
