"""Seed statistics: Student-t intervals and Welch's test against hand computations."""

import math

import numpy as np
import pytest

from ropex.evaluation import intervals

# t_{0.975, df} from a printed t table (e.g. NIST/SEMATECH e-Handbook, table 1.3.6.7.2)
T975 = {2: 4.302652729911275, 3: 3.182446305284263, 4: 2.7764451051977987}


def test_interval_equals_the_hand_computation():
  got = intervals.mean_interval([1.0, 2.0, 3.0, 4.0])
  s = math.sqrt(((1.5 ** 2 + 0.5 ** 2) * 2) / 3)        # sample std, ddof = 1
  assert got.mean == 2.5 and got.n == 4 and got.std == pytest.approx(s)
  assert got.half_width == pytest.approx(T975[3] * s / 2, rel=1e-9)
  assert (got.low, got.high) == (pytest.approx(2.5 - T975[3] * s / 2),
                                 pytest.approx(2.5 + T975[3] * s / 2))
  three = intervals.mean_interval([10.0, 12.0, None, 11.0])     # None: a missing seed
  assert three.n == 3 and three.half_width == pytest.approx(T975[2] / math.sqrt(3), rel=1e-9)
  assert three.text() == '11.000 ± 2.484'
  one = intervals.mean_interval([7.0])
  assert one.half_width is None and one.text() == '7.000'
  assert intervals.mean_interval([None, float('nan')]) is None


def _t_pdf(x, df):
  c = math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2))
  return c * (1 + x ** 2 / df) ** (-(df + 1) / 2)


def test_welch_equals_the_hand_computation():
  a, b = [1.0, 2.0, 3.0, 4.0], [3.0, 5.0, 7.0]
  va, vb = (5 / 3) / 4, 4.0 / 3                          # variance of each mean
  t = (2.5 - 5.0) / math.sqrt(va + vb)
  df = (va + vb) ** 2 / (va ** 2 / 3 + vb ** 2 / 2)
  x = np.linspace(-abs(t), abs(t), 200_001)               # p = 1 - P(|T| < |t|), Simpson
  y = _t_pdf(x, df)
  h = x[1] - x[0]
  inside = h / 3 * (y[0] + y[-1] + 4 * y[1:-1:2].sum() + 2 * y[2:-1:2].sum())
  got = intervals.welch(a, b)
  assert got.t == pytest.approx(t) and got.df == pytest.approx(df)
  assert got.p == pytest.approx(1 - inside, abs=1e-8)
  assert got.within_noise == (1 - inside >= 0.05)
  assert not intervals.welch([1.0, 1.1, 0.9], [5.0, 5.1, 4.9]).within_noise
  assert intervals.welch([1.0], [2.0, 3.0]) is None
  assert intervals.welch([2.0, 2.0], [2.0, 2.0]).p == 1.0


def test_runs_that_differ_only_by_seed_share_a_key():
  base = {'name': 'a', 'train': {'seed': 0, 'lr': 1e-3}, 'data': {'seed': 0, 'source': 's'}}
  seeded = {'name': 'a_s1', 'train': {'seed': 1, 'lr': 1e-3}, 'data': {'seed': 1, 'source': 's'}}
  other = {'name': 'a', 'train': {'seed': 0, 'lr': 3e-3}, 'data': {'seed': 0, 'source': 's'}}
  keys = [intervals.group_key(c) for c in (base, seeded, other, base)]
  assert keys[0] == keys[1] != keys[2]
  assert intervals.groups(keys) == [[0, 1, 3], [2]]
  assert intervals.seeds_of(seeded) == {'train': 1, 'data': 1}
  assert base['train']['seed'] == 0                       # the input is not modified
