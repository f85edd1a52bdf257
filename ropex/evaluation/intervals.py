"""Seeds and confidence: which runs differ only by seed, their mean with a 95% interval, and
whether two such groups differ beyond noise. Used by ``ropex.experiments.report`` and
``ropex.evaluate compare``.

Method (stated here and in the README):

- interval: the Student-t interval on the per-seed values (each seed's number is one
  observation): ``mean ± t_{0.975, n-1} · s / sqrt(n)``, ``s`` the sample standard deviation
  (``ddof=1``). One seed has no interval.
- within noise: Welch's two-sided t-test (unequal variances, Welch–Satterthwaite degrees of
  freedom) at level 0.05; a difference with ``p >= 0.05`` is marked as within noise. Groups of
  one seed cannot be tested (``None``). :func:`estimate_test` is the same test on two
  :class:`ropex.evaluation.sampling.Estimate` (a number with its SE and degrees of freedom).
- against the best: a row compared with the row picked as best *after the fact* is one of
  ``m`` comparisons; their p-values are Holm-adjusted (:func:`holm`) before the 0.05 level.

The t distribution comes from ``scipy.stats`` (declared in setup.cfg; jax needs it too).

Grouping: :func:`group_key` is a run's config with the seed fields (``train.seed``,
``data.seed``) and its ``name`` left out; runs with the same key differ only by seed.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Mapping, Sequence

import numpy as np
from scipy import stats

LEVEL = 0.95
ALPHA = 0.05
SEED_FIELDS = (('train', 'seed'), ('data', 'seed'))


@dataclasses.dataclass(frozen=True)
class Interval:
  mean: float
  half_width: float | None    # None for one value
  n: int
  std: float | None

  @property
  def low(self) -> float | None:
    return None if self.half_width is None else self.mean - self.half_width

  @property
  def high(self) -> float | None:
    return None if self.half_width is None else self.mean + self.half_width

  def text(self, digits: int = 3) -> str:
    fmt = (lambda v: f'{v:.{digits}g}') if abs(self.mean) >= 100 else (
        lambda v: f'{v:.{digits}f}')
    if self.half_width is None:
      return fmt(self.mean)
    return f'{fmt(self.mean)} ± {fmt(self.half_width)}'


def _values(values: Sequence[float | None]) -> np.ndarray:
  return np.asarray([v for v in values if v is not None and math.isfinite(v)], np.float64)


def mean_interval(values: Sequence[float | None], level: float = LEVEL) -> Interval | None:
  """The Student-t interval of the finite values (None if there are none)."""
  x = _values(values)
  if not x.size:
    return None
  if x.size == 1:
    return Interval(float(x[0]), None, 1, None)
  s = float(np.std(x, ddof=1))
  t = float(stats.t.ppf(0.5 + level / 2, df=x.size - 1))
  return Interval(float(x.mean()), t * s / math.sqrt(x.size), int(x.size), s)


@dataclasses.dataclass(frozen=True)
class Welch:
  t: float
  df: float
  p: float

  @property
  def within_noise(self) -> bool:
    return self.p >= ALPHA


def welch(a: Sequence[float | None], b: Sequence[float | None]) -> Welch | None:
  """Welch's two-sided t-test of mean(a) != mean(b) (None unless both have 2+ values). Two
  groups without any spread are equal (p = 1) or different (p = 0)."""
  x, y = _values(a), _values(b)
  if x.size < 2 or y.size < 2:
    return None
  vx, vy = np.var(x, ddof=1) / x.size, np.var(y, ddof=1) / y.size
  diff = float(x.mean() - y.mean())
  if vx + vy == 0:
    return Welch(0.0 if diff == 0 else math.copysign(math.inf, diff), math.inf,
                 1.0 if diff == 0 else 0.0)
  t = diff / math.sqrt(vx + vy)
  df = (vx + vy) ** 2 / (vx ** 2 / (x.size - 1) + vy ** 2 / (y.size - 1))
  return Welch(float(t), float(df), float(2 * stats.t.sf(abs(t), df)))


def estimate_test(a, b) -> float | None:
  """Two-sided p-value of ``a.value != b.value`` for two independent estimates (``se``,
  ``df``): ``t = (a - b) / sqrt(se_a^2 + se_b^2)``, Welch–Satterthwaite df (infinite df:
  normal). None if either has no SE."""
  if a is None or b is None or a.se is None or b.se is None:
    return None
  va, vb = a.se ** 2, b.se ** 2
  diff = a.value - b.value
  if va + vb == 0:
    return 1.0 if diff == 0 else 0.0
  t = diff / math.sqrt(va + vb)
  inv = lambda df: 0.0 if df is None or not math.isfinite(df) else 1.0 / df
  denom = va * va * inv(a.df) + vb * vb * inv(b.df)
  df = (va + vb) ** 2 / denom if denom > 0 else math.inf
  return float(2 * (stats.t.sf(abs(t), df) if math.isfinite(df) else stats.norm.sf(abs(t))))


def holm(p_values: Sequence[float]) -> list[float]:
  """Holm's step-down adjusted p-values (same order as given): with ``p_(1) <= ... <= p_(m)``,
  ``adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j))``. Rejecting where ``adj < alpha``
  keeps the family-wise error rate at ``alpha``."""
  m = len(p_values)
  order = sorted(range(m), key=lambda i: p_values[i])
  out = [0.0] * m
  running = 0.0
  for rank, i in enumerate(order):
    running = max(running, min(1.0, (m - rank) * p_values[i]))
    out[i] = running
  return out


def group_key(config: Mapping[str, Any]) -> str:
  """A run's config (a dict, e.g. ``config.json``) without its seeds and name, as a string:
  equal keys = runs that differ only by seed."""
  c = json.loads(json.dumps(dict(config), default=str))
  c.pop('name', None)
  for block, field in SEED_FIELDS:
    if isinstance(c.get(block), dict):
      c[block].pop(field, None)
  return json.dumps(c, sort_keys=True)


def seeds_of(config: Mapping[str, Any]) -> dict[str, Any]:
  return {block: (config.get(block) or {}).get(field) for block, field in SEED_FIELDS}


def groups(keys: Sequence[str]) -> list[list[int]]:
  """Indices grouped by equal key, in order of first appearance."""
  out: dict[str, list[int]] = {}
  for i, key in enumerate(keys):
    out.setdefault(key, []).append(i)
  return list(out.values())
