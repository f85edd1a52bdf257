"""Evaluation-time overrides, the whole-suite results, their JSON, figures and comparison."""

import json
import math
import os

import numpy as np
from scipy import stats
import pytest

from ropex.training import workdir as workdir_lib
from ropex.data import tokenizers
from ropex.evaluation import overrides, rows as rows_lib, suite
from ropex.evaluation.reporting import compare, tables, values
from ropex.model.config import ModelConfig
from ropex.errors import ConfigError

from evaluation_testlib import micro_config

PPL_ONLY = dict(lengths=[16, 40], examples=2, tasks=(), retrieval='none', depths=[0.5])


def test_overrides_rebuild_the_model_config_exactly(micro_rope):
  config, params = micro_rope
  direct = micro_config('rope', max_wavelength=10_000, position_scale=4.0)
  got = overrides.model_config(config, overrides.parse(['model.pe.position_scale=4']), params)
  assert got == ModelConfig.from_config(direct.model)
  assert got != ModelConfig.from_config(config.model)
  assert config.model.pe.position_scale is None        # the run's config is not modified
  theta = overrides.parse(['model.pe.max_wavelength=5e5'])
  assert theta == {'model.pe.max_wavelength': 500000.0}
  assert overrides.model_config(config, theta).pattern[0].pe.max_wavelength == 500000.0


def test_overrides_on_a_config_read_back_from_json(micro_rope, tmp_path):
  config, params = micro_rope
  (tmp_path / 'config.json').write_text(config.to_json())
  loaded = workdir_lib.load_config(str(tmp_path))       # None fields are plain None here
  over = overrides.parse(['model.pe.position_scale=4'])
  assert overrides.lookup(overrides.apply(loaded, over), 'model.pe.position_scale') == 4.0
  direct = micro_config('rope', max_wavelength=10_000, position_scale=4.0)
  assert overrides.model_config(loaded, over, params) == ModelConfig.from_config(direct.model)


@pytest.mark.parametrize('text', ['train.steps=3', 'model.pe.nope=1', 'model.pe.max_wavelength',
                                  'model.pe.max_wavelength="big"', 'model.embed_dim=64'])
def test_bad_overrides_are_config_errors(micro_rope, text):
  config, params = micro_rope
  with pytest.raises(ConfigError):
    overrides.model_config(config, overrides.parse([text]), params)


def test_theta_override_equals_a_model_built_with_that_theta(micro_rope):
  config, params = micro_rope
  over = suite.evaluate(config, params, suite.Options(
      overrides={'model.pe.max_wavelength': 500_000}, **PPL_ONLY))
  direct = suite.evaluate(micro_config('rope', max_wavelength=500_000), params,
                          suite.Options(**PPL_ONLY))
  base = suite.evaluate(config, params, suite.Options(**PPL_ONLY))
  assert over['perplexity']['loss'] == direct['perplexity']['loss']
  assert over['perplexity']['loss'][1] != base['perplexity']['loss'][1]
  assert over['overrides'] == {'model.pe.max_wavelength': 500000.0}
  assert over['run']['layers'][0]['max_wavelength'] == 500000.0
  assert over['run']['model']['pe']['max_wavelength'] == 500000.0
  assert base['overrides'] == {} and suite.label(over) == 'micro_rope [pe.max_wavelength=500000.0]'


@pytest.fixture(scope='module')
def two_results(micro_rope):
  config, params = micro_rope
  options = dict(lengths=[24, 48], depths=[0.0, 1.0], examples=2, task_examples=2,
                 tasks=('copy_offset', 'assoc_recall'))
  a = suite.evaluate(config, params, suite.Options(**options), step=7)
  b = suite.evaluate(config, params, suite.Options(
      overrides={'model.pe.position_scale': 2.0}, **options), step=7)
  return a, b


def test_results_hold_every_number(two_results, tmp_path):
  a, _ = two_results
  assert a['settings']['lengths'] == [24, 48] and a['settings']['data'] == 'synthetic'
  assert a['perplexity']['lengths'] == [24, 48]
  for loss, ppl in zip(a['perplexity']['loss'], a['perplexity']['perplexity']):
    assert ppl == pytest.approx(math.exp(loss))
  assert sorted(a['retrieval']) == ['needle']                       # auto: synthetic run
  assert sorted(a['tasks']) == ['assoc_recall', 'copy_offset']
  assert a['retrieval']['needle']['primary'] == 'string_match_all'     # RULER's, by generation
  assert np.asarray(a['retrieval']['needle']['string_match_all']).shape == (2, 2)
  assert np.asarray(a['retrieval']['needle']['teacher_forced_accuracy']).shape == (2, 2)
  assert a['tasks']['copy_offset']['depths'] == [None]
  assert a['tasks']['assoc_recall']['primary'] == 'teacher_forced_token_accuracy'
  assert np.asarray(a['tasks']['assoc_recall']['teacher_forced_accuracy']).shape == (2, 2)
  assert a['run']['train_positions'] >= 1 and a['run']['step'] == 7
  written = suite.write(a, str(tmp_path / 'eval'))
  assert [os.path.basename(p) for p in written] == [
      'results.json', 'perplexity.png', 'loss_by_position.png', 'accuracy.png']
  for path in written[1:]:
    with open(path, 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  assert suite.load(str(tmp_path)) == json.loads(json.dumps(a))   # finds DIR/eval/results.json


def test_compare_puts_runs_in_one_table(two_results, tmp_path):
  a, b = two_results
  text, written = compare.compare([a, b], str(tmp_path))
  assert os.path.isfile(tmp_path / 'comparison.md') and len(written) == 4
  lines = text.splitlines()
  row_a = next(l for l in lines if l.startswith('| micro_rope | rope θ=10000 |'))
  row_b = next(l for l in lines if l.startswith('| micro_rope [pe.position_scale=2.0] |'))
  assert 'pos÷2' in row_b
  cells = [c.strip() for c in row_a.strip('|').split('|')]
  # perplexity ± its interval (2 rows per length: t(0.975, 1) = 12.706), then the units
  for cell, ppl in zip(cells[3:5], a['perplexity']['perplexity']):
    shown, half = cell.split(' ± ')
    assert shown == values.fmt(ppl) and float(half) > 0
  assert cells[5] == '2'
  assert 'retrieval: needle: string match all (mean over depths)' in text
  assert 'task: assoc_recall: teacher forced token accuracy (mean over depths)' in text
  needle = values.mean_over_depths(a['retrieval']['needle'])
  assert needle == [np.mean(col) for col in zip(*a['retrieval']['needle']['string_match_all'])]
  recall = values.mean_over_depths(a['tasks']['assoc_recall'])
  assert recall == [np.mean(col) for col in
                    zip(*a['tasks']['assoc_recall']['teacher_forced_token_accuracy'])]
  section = text[text.index('task: assoc_recall'):]
  row = next(l for l in section.splitlines() if l.startswith('| micro_rope |'))
  cells = [c.strip() for c in row.strip('|').split('|')][1:]
  checked = 0
  for cell, v in zip(cells, recall):    # p [Wilson low, high] over the 2 examples of a cell
    low, high = (float(x) for x in cell.split(' [')[1].rstrip(']').split(', '))
    assert cell.startswith(f'{v:.2f} [') and 0 <= low <= v <= high <= 1
    if float(2 * v).is_integer():
      ci = stats.binomtest(round(2 * v), 2).proportion_ci(method='wilson')
      assert (low, high) == (round(ci.low, 2), round(ci.high, 2))
      checked += 1
  assert checked


def test_text_run_uses_its_eval_split_and_the_passkey(micro_rope, tmp_path):
  _, params = micro_rope
  texts = [f'Document {i}. ' + ' '.join(f'w{i}x{j}' for j in range(120)) for i in range(3)]
  for i, text in enumerate(texts):
    (tmp_path / f'doc{i}.txt').write_text(text)
  config = micro_config('rope', max_wavelength=10_000)
  config.data.update(source='text', text_glob=str(tmp_path / '*.txt'), eval_fraction=1.0)
  rows = rows_lib.eval_split(config, 256, 3)
  tok = tokenizers.ByteTokenizer()
  assert rows['inputs'].shape == (3, 256) and (rows['inputs'][:, 0] == tok.bos_id).all()
  decoded = sorted(tok.decode(r) for r in rows['inputs'])
  assert decoded == sorted(t[:255] for t in texts)         # each row: one document's start
  out = suite.evaluate(config, params, suite.Options(lengths=[256, 300], depths=[0.0, 1.0],
                                                     examples=3, task_examples=2))
  assert out['perplexity']['data'] == 'eval' and out['perplexity']['rows'] == [3, 3]
  assert out['run']['train_positions'] == config.train.seq_len
  assert sorted(out['retrieval']) == ['passkey'] and out['tasks'] == {}
  assert out['retrieval']['passkey']['examples'] == [[2, 2], [2, 2]]


def test_ruler_suite_in_results_figures_and_comparison(micro_rope, tmp_path):
  config, params = micro_rope
  quick = dict(lengths=[40, 64], depths=[0.0, 1.0], task_examples=2, examples=2)
  only = suite.evaluate(config, params, suite.Options(suite='ruler', **quick))
  assert 'perplexity' not in only and only['retrieval'] == {} and only['tasks'] == {}
  assert list(only['ruler']) == list(suite.ruler_lib.TASKS)
  assert only['ruler']['cwe']['depths'] == [None]
  assert only['ruler']['vt']['depths'] == [0.0, 1.0]
  assert only['ruler']['niah_single']['lexicon'] == {'style': 'symbol', 'haystack': 'noise'}
  assert only['settings']['suite'] == ['ruler']
  two = suite.evaluate(config, params, suite.Options(suite='perplexity,ruler',
                                                     ruler='niah_single,fwe', **quick))
  assert list(two['ruler']) == ['niah_single', 'fwe'] and two['perplexity']['lengths'] == [40, 64]
  written = suite.write(only, str(tmp_path / 'only'))
  assert sorted(os.path.basename(p) for p in written) == ['accuracy.png', 'results.json',
                                                          'ruler.png']
  text, _ = compare.compare([two, only], str(tmp_path / 'cmp'))
  assert 'RULER average' in text and 'Perplexity by context length' in text
  assert text.count('RULER (') == 2 and '| average |' in text
  with pytest.raises(ConfigError, match='--suite names'):
    suite.resolve(config, suite.Options(suite='ruler,nope', **quick))
  with pytest.raises(ConfigError, match='--ruler names'):
    suite.resolve(config, suite.Options(suite='ruler', ruler='niah', **quick))
  with pytest.raises(ConfigError, match='haystack=eval needs a text run'):
    suite.resolve(config, suite.Options(suite='ruler', haystack='eval', **quick))
