"""Sampling error of one evaluation: the ratio-estimator SE against known variances, Wilson
against scipy, Holm against its definition, ``--examples auto`` on a text fixture, and the
one rule for reusing an earlier evaluation."""

import dataclasses
import math

import numpy as np
import pytest
from scipy import stats

from ropex.evaluation import intervals, perplexity, rows as rows_lib, sampling, suite
from ropex.errors import ConfigError

from evaluation_testlib import micro_config


class DocumentScorer:
  """Every token of row ``i`` has loss ``level[i]`` (a per-document loss level)."""

  def __init__(self, level):
    self.level = np.asarray(level, np.float64)

  def score(self, rows):
    n, L = rows['inputs'].shape
    return np.repeat(self.level[:n, None], L, 1), np.zeros((n, L), bool)


def test_ratio_se_of_known_per_document_levels():
  # 4 documents of 12 scored tokens each with losses 1, 2, 3, 4 per token: the loss is their
  # mean 2.5 and its SE the textbook s / sqrt(n) = 1.2910 / 2.
  docs = [(np.arange(13, dtype=np.int32), np.ones(13, np.float32)) for _ in range(4)]
  rows = rows_lib.from_documents(docs, 12, bos_id=None)
  out = perplexity.length_sweep(DocumentScorer([1, 2, 3, 4]), lambda L: rows, [12], bucket=4)
  assert out['loss'] == [2.5] and out['rows'] == [4] and out['weight'] == [48.0]
  assert out['se'][0] == pytest.approx(math.sqrt(5 / 3) / 2)
  assert out['by_position']['12']['se'] == [pytest.approx(math.sqrt(5 / 3) / 2)] * 3
  assert len(out['units']['12']['digest']) == 4


def test_ratio_se_has_its_nominal_coverage():
  # Documents of random lengths whose per-token loss level has mean 3 and sd 0.5: the 95%
  # interval must hold the true token-weighted mean (3) in about 95% of 2000 evaluations.
  rng = np.random.default_rng(0)
  hits = []
  for _ in range(2000):
    w = rng.integers(20, 200, size=24).astype(float)
    level = rng.normal(3.0, 0.5, size=24)
    est = sampling.ratio(level * w, w)
    hits.append(est.low <= 3.0 <= est.high)
  assert np.mean(hits) == pytest.approx(0.95, abs=0.015)


@pytest.mark.parametrize('k,n', [(0, 5), (1, 5), (3, 7), (7, 7), (12, 40)])
def test_wilson_equals_scipy_and_stays_in_0_1(k, n):
  ci = stats.binomtest(k, n).proportion_ci(method='wilson')
  low, high = sampling.wilson(k / n, n)
  assert (low, high) == (pytest.approx(ci.low), pytest.approx(ci.high))
  assert 0 <= low <= k / n <= high <= 1
  seeds = sampling.proportion([0.0, 1.0, 1.0], n)       # t over seeds: 0.67 ± 1.43
  assert 0 <= seeds.low < seeds.value < seeds.high <= 1


def test_holm_against_its_definition():
  # p = 0.01, 0.04, 0.03, 0.20 (m = 4): sorted 0.01, 0.03, 0.04, 0.20 times 4, 3, 2, 1 =
  # 0.04, 0.09, 0.08, 0.20, then the running maximum: 0.04, 0.09, 0.09, 0.20.
  assert intervals.holm([0.01, 0.04, 0.03, 0.20]) == pytest.approx([0.04, 0.09, 0.09, 0.20])
  assert intervals.holm([0.5, 0.6]) == [1.0, 1.0]


def _text_config(tmp_path, count=40):
  rng = np.random.default_rng(1)
  words = ['the', 'rotary', 'position', 'a', 'of', 'model', 'zq', 'xv', 'attention', 'kj']
  for i in range(count):      # documents of different difficulty: repetitive to random
    p = np.full(len(words), 1 / len(words)) if i % 2 else np.r_[0.9, np.full(9, 0.1 / 9)]
    (tmp_path / f'doc{i:02d}.txt').write_text(' '.join(rng.choice(words, 60, p=p)))
  config = micro_config('rope', max_wavelength=10_000)
  config.data.update(source='text', text_glob=str(tmp_path / '*.txt'), eval_fraction=1.0)
  return config


def test_examples_auto_reaches_its_target_on_text(micro_rope, tmp_path):
  _, params = micro_rope
  config = _text_config(tmp_path)
  quick = dict(lengths=[32, 64], tasks=(), retrieval='none', suite='perplexity')
  fixed = suite.evaluate(config, params, suite.Options(examples=16, **quick))
  se16 = max(fixed['perplexity']['se'])
  target = se16 * 0.75            # needs more than 16 documents, fewer than the 40 held
  out = suite.evaluate(config, params, suite.Options(target_se=target, **quick))
  p = out['perplexity']
  assert out['settings']['examples'] == 'auto' and p['sizing']['stop'] == 'target'
  assert all(se <= target for se in p['se']) and 16 < p['rows'][0] <= 40
  assert p['rows'][0] == p['rows'][1] == p['documents']['count']   # the same documents
  exhausted = suite.evaluate(config, params, suite.Options(target_se=1e-6, **quick))
  assert exhausted['perplexity']['sizing']['stop'] == 'data'
  assert exhausted['perplexity']['rows'] == [40, 40]
  capped = suite.evaluate(config, params, suite.Options(target_se=1e-6, max_examples=20, **quick))
  assert capped['perplexity']['sizing']['stop'] == 'max_examples'
  assert capped['perplexity']['rows'] == [20, 20]
  with pytest.raises(ConfigError, match='--target_se'):
    suite.resolve(config, suite.Options(target_se=0, **quick))


def test_reuse_only_when_every_field_matches(micro_rope):
  config, params = micro_rope
  options = suite.Options(lengths=[16, 24], examples=2, tasks=(), retrieval='none',
                          suite='perplexity', depths=[0.5])
  old = suite.evaluate(config, params, options, step=5)
  assert suite.reusable(old, config, options, 5) is None
  changed = {'step': (options, 6),
             'lengths': (dict(lengths=[16, 32]), 5), 'examples': (dict(examples=3), 5),
             'suite': (dict(suite='perplexity,retrieval'), 5),
             'data': (dict(data='eval'), 5),
             'overrides': (dict(overrides={'model.pe.position_scale': 2.0}), 5)}
  for field, (change, step) in changed.items():
    o = options if isinstance(change, suite.Options) else dataclasses.replace(options, **change)
    why = suite.reusable(old, config, o, step)
    assert why and field.rstrip('s') in why, field
