"""Is a difference real? Bootstrap intervals, paired tests and Holm's correction for every benchmark's metrics.

- ``interval``: a 95 % percentile-bootstrap interval of any metric over the items (and, for sampled runs, over the
  items and the seeds: both are drawn again, a two-level bootstrap). On one level it is exactly
  ``scipy.stats.bootstrap(..., paired=True, method="percentile")`` with the same generator (tests check it), written
  out here because scipy draws one level only and the lab needs the draws themselves (paired differences, sums).
- ``paired_bootstrap``: the same draws for two sides on the same items; the difference's percentile interval and a
  two-sided p-value from the draws' standard error (z = difference / SE, normal tails). Assumes the items (and seeds)
  are independent draws from the population the claim is about, and, for the p-value only, that the difference is
  near normal (a difference of means or ratios over hundreds of items is). Why not the share of draws beyond zero:
  with R resamples it cannot go below 2 / (R + 1), and Holm's correction over a run's 100-odd comparisons would
  then leave nothing significant whatever the data.
- ``mcnemar``: McNemar's exact test of two sides' correctness on the same items, ``scipy.stats.binomtest`` on the
  discordant pairs. Assumes the items are independent; only the pairs where the two sides disagree carry weight.
- ``holm``: Holm's step-down adjustment over one run's comparisons (controls the family-wise error at α with no
  assumption about how the tests depend on each other). scipy has no Holm (its ``false_discovery_control`` is
  Benjamini-Hochberg); the tests check this one against the step-down definition.

Every draw is seeded (``seed``) and the number of resamples recorded with the interval (``Interval.resamples``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

RESAMPLES = 2000
CONFIDENCE = 0.95
SEED = 0
ALPHA = 0.05


@dataclass(frozen=True)
class Interval:
    """A metric's value on the data, its percentile-bootstrap interval, and how that interval was drawn."""

    estimate: float
    low: float
    high: float
    resamples: int
    seed: int
    confidence: float = CONFIDENCE
    over: str = "items"  # "items" or "items x seeds"

    def to_dict(self) -> dict:
        return asdict(self)


def _as_matrix(array) -> np.ndarray:
    """(items,) -> (1, items); (seeds, items) as it is."""
    array = np.asarray(array, dtype=float)
    if array.ndim == 1:
        return array[None, :]
    if array.ndim != 2:
        raise ValueError(f"expected (items,) or (seeds, items) values, got shape {array.shape}")
    return array


def draws(statistic: Callable[..., np.ndarray], data: Sequence, resamples: int = RESAMPLES,
          seed: int = SEED) -> np.ndarray:
    """The statistic on ``resamples`` bootstrap draws of ``data``: arrays of one shape, (items,) or (seeds, items),
    resampled together (paired). ``statistic(*arrays)`` takes arrays of shape (draws, values) and returns (draws,).

    Items are drawn first, with ``numpy.random.default_rng(seed).integers(0, items, (resamples, items))`` (scipy's own
    draw, so one level matches ``scipy.stats.bootstrap``), then, where there are several seeds, the seeds; a draw
    pools every drawn item of every drawn seed."""
    matrices = [_as_matrix(a) for a in data]
    seeds, items = matrices[0].shape
    if any(m.shape != (seeds, items) for m in matrices):
        raise ValueError("every array must have the same shape")
    rng = np.random.default_rng(seed)
    item_index = rng.integers(0, items, (resamples, items))
    if seeds == 1:
        return np.asarray(statistic(*(m[0][item_index] for m in matrices)), dtype=float)
    seed_index = rng.integers(0, seeds, (resamples, seeds))
    picked = [m[seed_index[:, :, None], item_index[:, None, :]].reshape(resamples, seeds * items) for m in matrices]
    return np.asarray(statistic(*picked), dtype=float)


def percentile_interval(estimate: float, drawn: np.ndarray, resamples: int, seed: int, over: str,
                        confidence: float = CONFIDENCE) -> Interval:
    tail = 100 * (1 - confidence) / 2
    drawn = drawn[np.isfinite(drawn)]
    if not drawn.size:
        return Interval(float(estimate), float("nan"), float("nan"), resamples, seed, confidence, over)
    low, high = np.percentile(drawn, [tail, 100 - tail])
    return Interval(float(estimate), float(low), float(high), resamples, seed, confidence, over)


def _over(data: Sequence) -> str:
    return "items x seeds" if _as_matrix(data[0]).shape[0] > 1 else "items"


def interval(statistic: Callable[..., np.ndarray], data: Sequence, resamples: int = RESAMPLES,
             seed: int = SEED) -> Interval:
    """The statistic on ``data`` (every seed's items pooled) with its percentile-bootstrap interval (``draws``)."""
    pooled = [_as_matrix(a).reshape(1, -1) for a in data]
    estimate = float(np.asarray(statistic(*pooled)).reshape(-1)[0])
    return percentile_interval(estimate, draws(statistic, data, resamples, seed), resamples, seed, _over(data))


@dataclass(frozen=True)
class PairedTest:
    """side vs reference on one metric: the difference side − reference, its interval, the test's p-value, and
    (after ``holm``) the adjusted p-value and whether it is significant."""

    metric: str
    side: str
    reference: str
    difference: Interval
    p_value: float
    test: str
    group: str = ""  # the split, subtask ... the comparison belongs to
    p_holm: float | None = None
    significant: bool | None = None

    def to_dict(self) -> dict:
        out = asdict(self)
        out["difference"] = self.difference.to_dict()
        return out


def bootstrap_p_value(estimate: float, drawn: np.ndarray) -> float:
    """Two-sided p-value of "no difference" for a difference ``estimate`` whose bootstrap draws are ``drawn``:
    2·Φ(−|estimate| / SE), SE the draws' standard deviation. A difference that never varies is 1 when it is 0 (the
    sides agree on every item) and 0 otherwise."""
    from scipy.stats import norm

    drawn = drawn[np.isfinite(drawn)]
    spread = float(np.std(drawn, ddof=1)) if drawn.size > 1 else 0.0
    if spread == 0.0:
        return 1.0 if estimate == 0 else 0.0
    return float(2 * norm.sf(abs(estimate) / spread))


def paired_bootstrap(statistic: Callable[..., np.ndarray], side: Sequence, reference: Sequence, metric: str,
                     names: tuple[str, str], group: str = "", resamples: int = RESAMPLES,
                     seed: int = SEED) -> PairedTest:
    """``statistic(*side) − statistic(*reference)`` on the same draws of the same items (and seeds)."""
    k = len(side)

    def difference(*arrays):
        return np.asarray(statistic(*arrays[:k])) - np.asarray(statistic(*arrays[k:]))

    both = list(side) + list(reference)
    drawn = draws(difference, both, resamples, seed)
    pooled = [_as_matrix(a).reshape(1, -1) for a in both]
    estimate = float(np.asarray(difference(*pooled)).reshape(-1)[0])
    return PairedTest(metric, names[0], names[1],
                      percentile_interval(estimate, drawn, resamples, seed, _over(both)),
                      bootstrap_p_value(estimate, drawn), "paired bootstrap", group)


def mcnemar_exact(side_right: int, reference_right: int) -> float:
    """McNemar's exact p-value (two-sided) from the discordant pairs: items only ``side`` got right, items only
    ``reference`` got right. Under "no difference" each discordant pair goes either way with probability 1/2."""
    from scipy.stats import binomtest

    n = side_right + reference_right
    if n == 0:
        return 1.0
    return float(binomtest(side_right, n, 0.5, alternative="two-sided").pvalue)


def mcnemar(side_correct, reference_correct, names: tuple[str, str], group: str = "", resamples: int = RESAMPLES,
            seed: int = SEED) -> PairedTest:
    """McNemar's exact test of two sides' correctness (bools, one per item) on the same items, with the accuracy
    difference's bootstrap interval beside it."""
    side_correct, reference_correct = np.asarray(side_correct, bool), np.asarray(reference_correct, bool)
    if side_correct.shape != reference_correct.shape or side_correct.ndim != 1:
        raise ValueError("McNemar's test needs one correctness value per item for each side, on the same items")
    only_side = int(np.sum(side_correct & ~reference_correct))
    only_reference = int(np.sum(~side_correct & reference_correct))
    test = paired_bootstrap(mean, [side_correct], [reference_correct], "accuracy", names, group, resamples, seed)
    return PairedTest("accuracy", names[0], names[1], test.difference, mcnemar_exact(only_side, only_reference),
                      f"McNemar exact ({only_side} vs {only_reference} discordant)", group)


def holm(tests: list[PairedTest], alpha: float = ALPHA) -> list[PairedTest]:
    """The tests with Holm's adjusted p-values (step-down: the k-th smallest of m is multiplied by m − k + 1, and an
    adjusted value is never below the one before it) and ``significant`` = adjusted p < α. Order kept."""
    m = len(tests)
    order = sorted(range(m), key=lambda i: tests[i].p_value)
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * tests[i].p_value))
        adjusted[i] = running
    return [replace(t, p_holm=adjusted[i], significant=adjusted[i] < alpha) for i, t in enumerate(tests)]


# ---- statistics in the form ``draws`` wants: arrays (draws, values) -> (draws,) -----------------------------------

def mean(values: np.ndarray) -> np.ndarray:
    return np.mean(values, axis=-1)


def ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Σ numerator / Σ denominator (0 where the denominator sums to 0): CHAIR_i, recall."""
    top, bottom = np.sum(numerator, axis=-1), np.sum(denominator, axis=-1)
    return np.divide(top, bottom, out=np.zeros_like(top, dtype=float), where=bottom != 0)

