"""``compare`` on runs that differ only by seed: mean ± 95% interval cells, within-noise marks,
banded figures."""

import copy
import math
import os

import numpy as np
import pytest

from ropex.evaluation import compare, grouped, suite

from evaluation_testlib import init_params, micro_config

T975_2 = 4.302652729911275    # t_{0.975, 2} from a t table


def _evaluate(seed, pe='rope'):
  config = micro_config(pe, max_wavelength=10_000) if pe == 'rope' else micro_config(pe)
  config.train.seed = config.data.seed = seed
  config.name = f'micro_{pe}_s{seed}'
  return suite.evaluate(config, init_params(config, seed), suite.Options(
      lengths=[16, 40], examples=2, tasks=(), retrieval='needle', depths=[0.5], task_examples=2,
      suite='perplexity,retrieval,ruler', ruler='niah_single'))


def _hand(values):
  m = float(np.mean(values))
  return m, T975_2 * float(np.std(values, ddof=1)) / math.sqrt(len(values))


def test_seed_groups_become_intervals(tmp_path):
  rope = [_evaluate(s) for s in range(3)]
  assert len({r['run']['group'] for r in rope}) == 1
  for r, ppl in zip(rope, ([2.0, 3.0], [2.5, 3.5], [2.2, 3.9])):   # small, known numbers
    r['perplexity']['perplexity'] = ppl
  assert [r['run']['seeds'] for r in rope] == [{'train': s, 'data': s} for s in range(3)]
  # a second group: the same runs with perplexities shifted far up (clearly worse)
  worse = copy.deepcopy(rope)
  for i, r in enumerate(worse):
    r['run']['group'] += 'other'
    r['run']['name'] = f'worse_s{i}'
    r['perplexity']['perplexity'] = [v * 3 + i for v in r['perplexity']['perplexity']]
  close = copy.deepcopy(rope)       # a third: the same numbers in another order (within noise)
  for r, src in zip(close, rope[::-1]):
    r['run']['group'] += 'close'
    r['run']['name'] = r['run']['name'].replace('micro', 'close')
    r['perplexity']['perplexity'] = list(src['perplexity']['perplexity'])
  assert grouped.group_indices(rope + worse + close) == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
  assert grouped.group_indices([rope[0], copy.deepcopy(rope[0])]) == [[0], [1]]   # same seed
  text, written = compare.compare(rope + worse + close, str(tmp_path / 'cmp'))
  ppl16 = [r['perplexity']['perplexity'][0] for r in rope]
  m, h = _hand(ppl16)
  row = [l for l in text.splitlines() if l.startswith('| micro_rope (n=3 seeds)')][0]
  assert f'{m:.3f} ± {h:.3f} (n=3)' in row
  worse16 = [r['perplexity']['perplexity'][0] for r in worse]
  wm, wh = _hand(worse16)
  worse_row = [l for l in text.splitlines() if l.startswith('| worse (n=3 seeds)')][0]
  assert f'| {wm:.3f} ± {wh:.3f} (n=3) |' in worse_row               # no ≈: clearly worse
  close_row = [l for l in text.splitlines() if l.startswith('| close_rope (n=3 seeds)')][0]
  assert close_row.split(' | ')[1].endswith('≈')        # same values: within noise of best
  assert 'RULER average recall' in text and 'retrieval: needle' in text
  assert "Welch's t-test" in text and 'Student-t' in text
  names = sorted(os.path.basename(p) for p in written)
  assert names == ['accuracy.png', 'comparison.md', 'loss_by_position.png', 'perplexity.png',
                   'ruler.png']
  bands = grouped.bands([rope, worse])
  lengths, low, high = bands['perplexity'][0]
  assert lengths == [16, 40] and (low[0], high[0]) == (pytest.approx(m - h), pytest.approx(m + h))
  mean = grouped.mean_result(rope)
  assert mean['perplexity']['perplexity'][0] == float(np.mean(ppl16))
  needle = [r['retrieval']['needle']['string_match_all'][0][1] for r in rope]
  assert mean['retrieval']['needle']['string_match_all'][0][1] == float(np.mean(needle))
