"""Reporting: seed groups combine the spread over seeds with the rows' sampling error, accuracy
intervals stay inside [0, 1], ``≈`` marks are Holm-adjusted, paired differences are exact
(0 ± 0 for a run against itself) and tighter than unpaired ones, and the figures draw bands."""

import copy
import math
import os

import jax
import numpy as np
import pytest
from matplotlib.collections import PolyCollection

from ropex.evaluation import suite
from ropex.evaluation.reporting import compare, figures, grouped, paired

from evaluation_testlib import init_params, micro_config

T975 = {2: 4.302652729911275, 3: 3.182446305284263}    # t_{0.975, df} from a t table


def _evaluate(seed, examples=4, lengths=(16, 40), params=None):
  config = micro_config('rope', max_wavelength=10_000)
  config.train.seed = config.data.seed = seed
  config.name = f'micro_rope_s{seed}'
  params = init_params(config, seed) if params is None else params
  return suite.evaluate(config, params, suite.Options(
      lengths=list(lengths), examples=examples, tasks=(), retrieval='needle', depths=[0.5],
      task_examples=2, suite='perplexity,retrieval,ruler', ruler='niah_single'))


@pytest.fixture(scope='module')
def seeds():
  return [_evaluate(s) for s in range(3)]


def _set_units(r, L, losses):
  """Per-unit losses by hand (weight 1 each), and the length's loss to match."""
  u = r['perplexity']['units'][str(L)]
  u['loss'], u['weight'] = list(losses), [1.0] * len(losses)
  i = r['perplexity']['lengths'].index(L)
  r['perplexity']['loss'][i] = float(np.mean(losses))
  r['perplexity']['perplexity'][i] = math.exp(np.mean(losses))


def _row(text, start):
  return next(l for l in text.splitlines() if l.startswith(start))


def _ppl_cell(row, column=1):
  shown, half = row.split(' | ')[column].split(' ± ')
  return float(shown), float(half.split()[0])


def test_seed_groups_combine_both_sources_of_variance(seeds):
  rope = copy.deepcopy(seeds)
  assert len({r['run']['group'] for r in rope}) == 1
  assert len({tuple(r['perplexity']['units']['16']['digest']) for r in rope}) == 1  # same rows
  # Limit 1: every unit of a seed has the same loss, so the seed-averaged units do not vary
  # and the interval is the plain Student-t one over the 3 seeds' losses.
  for r, a in zip(rope, (1.0, 1.3, 1.2)):
    _set_units(r, 16, [a] * 4)
  # Limit 2: identical seeds, so the spread over seeds is 0 and the interval is the rows' own:
  # per-unit losses 1, 2, 3, 4 (weight 1): SE = s / sqrt(4), t with 3 df.
  for r in rope:
    _set_units(r, 40, [1.0, 2.0, 3.0, 4.0])
  text, _, _, _ = compare.report(rope)
  row = _row(text, '| micro_rope (n=3 seeds)')
  m = np.mean([1.0, 1.3, 1.2])
  h = T975[2] * np.std([1.0, 1.3, 1.2], ddof=1) / math.sqrt(3)
  assert _ppl_cell(row, 1) == (round(math.exp(m), 3), round(math.exp(m) * h, 3))
  h40 = T975[3] * np.std([1, 2, 3, 4], ddof=1) / 2
  assert _ppl_cell(row, 2) == (round(math.exp(2.5), 3), pytest.approx(
      math.exp(2.5) * h40, rel=2e-3))


def test_accuracy_intervals_stay_in_0_1_and_noise_marks_are_holm_adjusted(seeds):
  rope = copy.deepcopy(seeds)
  fits = next(j for j, n in enumerate(rope[0]['retrieval']['needle']['examples'][0]) if n)
  for r, acc in zip(rope, (0.0, 1.0, 1.0)):      # a t-interval would be 0.67 ± 1.43
    g = r['retrieval']['needle']
    g[g['primary']][0][fits] = acc
  for r, a in zip(rope, (1.0, 1.02, 0.98)):
    _set_units(r, 16, [a, a + 0.1, a - 0.1, a])
  worse = copy.deepcopy(rope)                    # clearly worse
  close = copy.deepcopy(rope)                    # the same numbers: within noise of the best
  for group, tag, shift in ((worse, 'worse', 1.0), (close, 'close', 0.0)):
    for i, r in enumerate(group):
      r['run']['group'] += tag
      r['run']['name'] = f'{tag}_s{i}'
      u = r['perplexity']['units']['16']['loss']
      _set_units(r, 16, [v + shift for v in u])
  text, _, _, _ = compare.report(rope + worse + close)
  needle = text[text.index('retrieval: needle'):]
  cell = _row(needle, '| micro_rope (n=3 seeds)').split(' | ')[1 + fits]
  low, high = (float(x) for x in cell.split('[')[1].split(']')[0].split(', '))
  assert 0 <= low < 0.67 < high <= 1
  assert '≈' not in _row(text, '| worse (n=3 seeds)').split(' | ')[1]
  assert _row(text, '| close (n=3 seeds)').split(' | ')[1].endswith('≈')
  assert 'Holm' in text


def test_a_run_against_itself_is_exactly_zero(seeds, tmp_path):
  a = seeds[0]
  b = copy.deepcopy(a)
  b['run']['name'] = 'again'
  text, _ = compare.compare([a, b], str(tmp_path))
  row = _row(text[text.index('Paired differences'):], '| again |')
  assert row.split(' | ')[2].startswith('+0.0000 ± 0.0000 ≈0')
  est, was_paired = paired.difference([b], [a], 16)
  assert was_paired and (est.value, est.se) == (0.0, 0.0)


def test_paired_interval_is_narrower_than_unpaired_on_two_runs():
  # Two different models that share what makes a row hard, as two checkpoints of one run do:
  # an initialisation, and the same with every weight moved by 30% noise.
  params = init_params(micro_config('rope', max_wavelength=10_000), 0)
  rng = np.random.default_rng(0)
  moved = jax.tree.map(lambda x: x * (1 + 0.3 * rng.standard_normal(x.shape)).astype(x.dtype),
                       params)
  a = _evaluate(0, examples=16, lengths=(40,), params=params)
  b = _evaluate(1, examples=16, lengths=(40,), params=moved)
  est, was_paired = paired.difference([b], [a], 40)
  loose = paired.unpaired([b], [a], 40)
  assert was_paired and est.n == 16
  assert est.value == pytest.approx(loose.value)
  assert est.half_width < loose.half_width
  c = copy.deepcopy(b)                           # other rows: refused, reported unpaired
  c['perplexity']['units']['40']['digest'] = ['x' + d for d in c['perplexity']['units']['40']
                                              ['digest']]
  est, was_paired = paired.difference([c], [a], 40)
  assert not was_paired and est.half_width == pytest.approx(loose.half_width)
  text = paired.markdown([[a], [c]], ['a', 'c'], [(0, 1)])
  assert 'unpaired: rows differ' in text


def test_figures_draw_the_bands(seeds, tmp_path, monkeypatch):
  drawn = {}
  monkeypatch.setattr(figures, 'save', lambda fig, path, **kw: drawn.setdefault(
      os.path.basename(path), fig) and path)
  compare.compare(seeds[:1], str(tmp_path / 'one'))          # one run: its own intervals
  for name in ('perplexity.png', 'loss_by_position.png', 'ruler.png'):
    ax = drawn.pop(name).axes[0]
    assert any(isinstance(c, PolyCollection) for c in ax.collections), name
  compare.compare(seeds, str(tmp_path / 'group'))            # a seed group
  ax = drawn['perplexity.png'].axes[0]
  assert any(isinstance(c, PolyCollection) for c in ax.collections)
  bands = grouped.bands([seeds])
  lengths, low, high = bands['perplexity'][0]
  mean = grouped.mean_result(seeds)['perplexity']['perplexity']
  assert lengths == [16, 40] and all(lo < m < hi for lo, m, hi in zip(low, mean, high))


def test_evaluation_modules_import_no_circle():
  """Imports inside ropex.evaluation (in functions too) form no cycle (compare and grouped used to
  import each other), and reporting never imports suite."""
  import ast   # pylint: disable=g-import-not-at-top
  import pathlib   # pylint: disable=g-import-not-at-top
  root = pathlib.Path(suite.__file__).parent
  graph = {}
  for path in root.rglob('*.py'):
    name = '.'.join(path.relative_to(root.parent.parent).with_suffix('').parts)
    deps = set()
    for node in ast.walk(ast.parse(path.read_text())):      # function-level imports too
      if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(
          'ropex.evaluation'):
        deps |= {f'{node.module}.{a.name}' for a in node.names} | {node.module}
    graph[name.removesuffix('.__init__')] = deps
  graph = {k: {d for d in v if d in graph and d != k} for k, v in graph.items()}
  assert not any('suite' in d for k, v in graph.items() if '.reporting.' in k for d in v)
  state = {}

  def visit(node, trail):
    assert state.get(node) != 'open', ' -> '.join(trail + [node])
    if state.get(node) is None:
      state[node] = 'open'
      for dep in graph[node]:
        visit(dep, trail + [node])
      state[node] = 'done'

  for node in graph:
    visit(node, [])
