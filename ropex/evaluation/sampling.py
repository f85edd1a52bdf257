"""Sampling error of evaluation numbers: what one evaluation's rows can tell, with how much
certainty (see docs/statistics.md).

Units. Tokens of one row (one document, one generated example) are correlated, so every
standard error here is taken over independent *units*, never over tokens: a document
(``--text_mode documents``), a row (``stream``) or a generated example (synthetic data,
retrieval, tasks, RULER).

- Loss at a length: the ratio ``R = sum_i y_i / sum_i w_i`` over units ``i`` (``y_i`` the
  unit's weighted sum of token losses, ``w_i`` its scored tokens), i.e. the token-weighted mean
  the tables report. Its standard error is the ratio-estimator (delta-method, linearised)
  one, ``SE(R)^2 = n / (n - 1) * sum_i (y_i - R w_i)^2 / (sum_i w_i)^2``; intervals are
  ``R ± t(0.975, n - 1) SE``. With equal ``w_i`` it is the usual ``s / sqrt(n)`` of the
  per-unit means.
- Paired difference: two evaluations scored on the same units (same token rows, so the same
  ``w_i``) differ by ``D = sum_i (y_a,i - y_b,i) / sum_i w_i`` — the same ratio estimator on the
  per-unit differences. Two identical evaluations give exactly ``0 ± 0``.
- Proportions (accuracy, recall): the Wilson score interval, which stays inside [0, 1]. A
  proportion that is a mean of per-example fractions in [0, 1] (token accuracy, recall), or a
  mean over cells whose examples share their random draws (depths), has a variance at most
  ``p (1 - p) / n`` with ``n`` the examples of one cell, so Wilson with that ``n`` is
  conservative there; see :func:`proportion`.
- Sizing: ``n`` units at standard error ``SE`` reach a target ``T`` with about
  ``n (SE / T)^2`` units (:func:`units_for`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Sequence

import numpy as np
from scipy import stats

LEVEL = 0.95


def t_quantile(df: float | None, level: float = LEVEL) -> float:
  return float(stats.t.ppf(0.5 + level / 2, df)) if df and math.isfinite(df) else float(
      stats.norm.ppf(0.5 + level / 2))


@dataclasses.dataclass(frozen=True)
class Estimate:
  """A number with its standard error; ``low``/``high``: the ``LEVEL`` interval (Student-t
  with ``df`` degrees of freedom, a normal one when ``df`` is infinite; proportions give their
  Wilson bounds explicitly)."""
  value: float
  se: float | None              # None: no interval (one unit, one seed)
  n: int                        # units (or seeds) behind the number
  df: float | None = None
  bounds: tuple[float, float] | None = None   # explicit bounds (Wilson)

  @property
  def half_width(self) -> float | None:
    if self.se is None:
      return None
    return t_quantile(self.df) * self.se

  @property
  def low(self) -> float | None:
    if self.bounds:
      return self.bounds[0]
    return None if self.se is None else self.value - self.half_width

  @property
  def high(self) -> float | None:
    if self.bounds:
      return self.bounds[1]
    return None if self.se is None else self.value + self.half_width

  def excludes(self, value: float = 0.0) -> bool:
    """Whether the interval lies entirely on one side of ``value``."""
    return self.low is not None and (self.low > value or self.high < value)


def ratio(y: Sequence[float], w: Sequence[float]) -> Estimate | None:
  """``sum(y) / sum(w)`` over units with its ratio-estimator standard error (module doc);
  None when there is no weight."""
  y_N, w_N = np.asarray(y, np.float64), np.asarray(w, np.float64)
  total = float(w_N.sum())
  if not y_N.size or total <= 0:
    return None
  r = float(y_N.sum() / total)
  n = int(y_N.size)
  if n < 2:
    return Estimate(r, None, n)
  residual = y_N - r * w_N
  se = math.sqrt(n / (n - 1) * float(np.sum(residual ** 2))) / total
  return Estimate(r, se, n, n - 1)


def wilson(p: float, n: float, level: float = LEVEL) -> tuple[float, float]:
  """The Wilson score interval of a proportion ``p`` of ``n`` trials (``n`` may be an
  effective, non-integer count); for integer counts it equals scipy's
  ``binomtest(k, n).proportion_ci(method='wilson')``."""
  z = float(stats.norm.ppf(0.5 + level / 2))
  denom = 1 + z * z / n
  centre = (p + z * z / (2 * n)) / denom
  half = z * math.sqrt(max(p * (1 - p), 0.0) / n + z * z / (4 * n * n)) / denom
  return max(0.0, centre - half), min(1.0, centre + half)


def proportion(values: Sequence[float | None], examples: int) -> Estimate | None:
  """The mean of per-seed proportions (one value: one run) with a Wilson interval.

  Variance of the mean: ``p (1 - p) / examples`` (the within-run bound of the module doc:
  the examples of a cell) plus, for 2+ seeds, the between-seed ``s^2 / k``. Wilson is taken
  at the effective count ``n_eff = p (1 - p) / variance`` (``= examples`` for one run), so the
  interval stays inside [0, 1] and widens with the seeds' spread."""
  x = np.asarray([v for v in values if v is not None and math.isfinite(v)], np.float64)
  if not x.size or examples < 1:
    return None
  p = float(x.mean())
  within = p * (1 - p) / examples
  between = float(np.var(x, ddof=1)) / x.size if x.size > 1 else 0.0
  var = within + between
  n_eff = float(examples) if var <= 0 or p in (0.0, 1.0) else min(float(examples),
                                                                  p * (1 - p) / var)
  return Estimate(p, math.sqrt(var), int(x.size) if x.size > 1 else int(examples), None,
                  wilson(p, n_eff))


def combine_seeds(values: Sequence[float], shared: Estimate | None) -> Estimate | None:
  """The mean over seeds of one number (``values``: each seed's) with both sources of
  variance.

  ``shared``: when every seed was scored on the same units, the ratio estimate over those
  units of the seed-averaged per-unit losses; its SE is the rows' sampling error, which the
  seeds share (so their spread does not contain it): ``SE^2 = s^2 / k + shared.se^2``, with
  Welch–Satterthwaite degrees of freedom. Without it (different rows per seed) the spread
  over seeds already holds each seed's sampling error: ``SE^2 = s^2 / k``, ``k - 1`` df."""
  x = np.asarray([v for v in values if v is not None and math.isfinite(v)], np.float64)
  if not x.size:
    return None
  k = int(x.size)
  if k == 1:
    return shared if shared is not None else Estimate(float(x[0]), None, 1)
  a = float(np.var(x, ddof=1)) / k
  if shared is None or shared.se is None:
    return Estimate(float(x.mean()), math.sqrt(a), k, k - 1)
  b = shared.se ** 2
  denom = a * a / (k - 1) + b * b / max(shared.df or 1, 1)
  df = (a + b) ** 2 / denom if denom > 0 else math.inf
  return Estimate(float(x.mean()), math.sqrt(a + b), k, df)


def units_for(estimate: Estimate | None, target_se: float) -> int | None:
  """Units needed for ``target_se``, from an estimate's SE at its ``n`` units."""
  if estimate is None or estimate.se is None:
    return None
  return max(2, math.ceil(estimate.n * (estimate.se / target_se) ** 2))


def digests(rows: dict) -> list[str]:
  """One short content hash per row (inputs, targets, weights): two evaluations are paired
  on a unit only where these are equal, i.e. where the rows really are the same."""
  out = []
  for inputs, targets, weights in zip(rows['inputs'], rows['targets'], rows['weights']):
    h = hashlib.sha1()
    for a, dtype in ((inputs, np.int32), (targets, np.int32), (weights, np.float32)):
      h.update(np.ascontiguousarray(a, dtype).tobytes())
    out.append(h.hexdigest()[:16])
  return out
