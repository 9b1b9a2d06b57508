"""Scoring an answer (paper §5.2): substring matching on the raw and the think-stripped text,
Wilson intervals for every accuracy, and case-bootstrap intervals for differences of two rates.

An answer is correct when it contains, ignoring case, the expected value or any alias of it (for
composition, any accepted one-hop answer). Reasoning spans often name the new value even when the
final answer does not, so the headline metric scores the text with `<think>` spans removed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from rwkv_jax.chat import strip_think

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def contains_any(text: str, answers: Sequence[str]) -> bool:
    """Whether `text` contains any of `answers`, ignoring case."""
    if isinstance(answers, str):
        raise TypeError("answers must be a sequence of strings, not one string")
    if not answers or not all(answers):
        raise ValueError(f"answers must be non-empty strings, got {list(answers)!r}")
    folded = text.casefold()
    return any(answer.casefold() in folded for answer in answers)


@dataclasses.dataclass(frozen=True)
class Score:
    """How one generated answer scores.

    Attributes:
      stripped: the answer with think spans removed.
      correct_raw / correct_stripped: contains an expected answer (raw / stripped text).
      old_stripped: the stripped answer still contains the old value.
      new_stripped: the stripped answer contains the new value (for a probe: the edit bled into it).
      others_stripped: the stripped answer contains another value the passage states (someone
        else's, or an overwritten one): where an erased binding's answer goes.
    """

    stripped: str
    correct_raw: bool
    correct_stripped: bool
    old_stripped: bool
    new_stripped: bool
    others_stripped: bool


def score(answer: str, expected: Sequence[str], old: Sequence[str], new: Sequence[str],
          others: Sequence[str] = ()) -> Score:
    """`others` may be empty: a question whose property the passage gives no one else."""
    stripped = strip_think(answer)
    return Score(stripped=stripped, correct_raw=contains_any(answer, expected),
                 correct_stripped=contains_any(stripped, expected), old_stripped=contains_any(stripped, old),
                 new_stripped=contains_any(stripped, new),
                 others_stripped=bool(others) and contains_any(stripped, others))


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval for a proportion: sound at 0/n and n/n, unlike the normal one."""
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # the interval holds p; clamping keeps rounding from putting p a hair outside it
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))


BOOTSTRAP_DRAWS = 4000
BOOTSTRAP_SEED = 0


def bootstrap_difference(a: np.ndarray, b: np.ndarray, *, draws: int = BOOTSTRAP_DRAWS,
                         seed: int = BOOTSTRAP_SEED) -> tuple[float, float, float]:
    """(rate A - rate B, and its 95% percentile interval) resampling cases, not rows.

    `a`, `b`: `[C, 2]` (successes, rows) per case, row i of both the same case. The rows of one
    case are correlated (paraphrases of one question), and A and B share the cases, so cases are
    the unit that is resampled; each rate is pooled over the rows of the drawn cases.
    """
    a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
    if a.shape != b.shape or a.ndim != 2 or a.shape[1] != 2:
        raise ValueError(f"need two [cases, 2] count arrays of one shape, got {a.shape} and {b.shape}")
    if not a[:, 1].sum() or not b[:, 1].sum():
        return math.nan, math.nan, math.nan
    cases = len(a)
    # [draws, C]: how often each case is drawn
    weights = np.random.default_rng(seed).multinomial(cases, np.full(cases, 1 / cases), size=draws)
    with np.errstate(invalid="ignore", divide="ignore"):  # a draw without rows of A or B is dropped
        diffs = (weights @ a[:, 0]) / (weights @ a[:, 1]) - (weights @ b[:, 0]) / (weights @ b[:, 1])
    lo, hi = np.nanpercentile(diffs, [2.5, 97.5])
    return float(a[:, 0].sum() / a[:, 1].sum() - b[:, 0].sum() / b[:, 1].sum()), float(lo), float(hi)
