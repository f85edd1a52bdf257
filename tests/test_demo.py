"""The demo's sweep (configs/demo.py), its wiring end to end on 2-step runs, and its tables."""

import os
import textwrap

import pytest

from ropex import demo
from ropex.config import loading
from ropex.errors import ConfigError
from ropex.evaluation import intervals

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_load_config_passes_args_like_the_cli():
  c = loading.load('configs/tiny.py:pe=prope,p=0.25', '--run')
  assert c.model.pe.kind == 'prope' and c.model.pe.fraction == 0.25
  assert c.name == 'tiny_prope0.25'


def test_demo_sweep_is_rope_against_prope_at_small_theta_over_three_seeds(tmp_path):
  runs = demo.demo_runs(os.path.join(ROOT, 'configs/demo.py'), str(tmp_path))
  names = [run.name for run, _ in runs]
  assert names == [f'demo_{pe}_s{s}' for pe in ('rope', 'prope0.75') for s in range(3)]
  for run, c in runs:
    assert c.name == run.name and run.workdir == f'{tmp_path}/{run.name}'
    assert c.model.pe.max_wavelength == 10.0
    assert (c.model.pe.kind, c.model.pe.fraction) in (('rope', None), ('prope', 0.75))
    assert tuple(c.data.tasks) == ('assoc_recall',)
    assert c.train.seed == c.data.seed == int(run.name[-1])
  keys = [intervals.group_key(c.to_dict()) for _, c in runs]
  assert [len(g) for g in intervals.groups(keys)] == [3, 3]   # one seed group per encoding


def test_demo_eval_options_come_from_the_sweep_file():
  o = demo.eval_options(os.path.join(ROOT, 'configs/demo.py'))
  assert max(o.lengths) > 64           # beyond the longest training example
  assert 'tasks' in o.suite and 'retrieval' in o.suite


def test_demo_runs_end_to_end_and_prints_intervals(tmp_path):
  sweep = tmp_path / 'sweep.py'
  tiny = os.path.join(ROOT, 'configs/tiny.py')
  sweep.write_text(textwrap.dedent(f'''
      SEEDS = 2
      EVAL = dict(lengths=(16, 32), depths=(0.0, 1.0), task_examples=2, suite='retrieval,tasks')
      def get_sweep(arg=None):
        o = {{'data.tasks': ('assoc_recall',), 'train.batch_size': 8, 'train.seq_len': 64}}
        return [('r', '{tiny}:pe=rope,theta=10', o), ('p', '{tiny}:pe=prope,p=0.75,theta=10', o)]
  '''))
  printed = []
  out = demo.run_demo(str(sweep), str(tmp_path / 'runs'), steps=2, out=printed.append)
  text = '\n'.join(printed)
  assert [name for name, _ in out['rows']] == ['r_s0', 'r_s1', 'p_s0', 'p_s1']
  assert all(r['run']['step'] == 2 for r in out['results'])
  assert 'r (n=2 seeds)' in text and 'p (n=2 seeds)' in text
  assert 'task: assoc_recall (mean over depths)' in text and 'Wilson' in text
  row = next(l for l in text.splitlines() if l.startswith('| r (n=2 seeds) |'))
  cells = [c.strip() for c in row.strip().strip('|').split('|')][1:]
  # a cell is a mean with its Wilson bounds, or '–' where the prompt does not fit the length
  shown = [c for c in cells if c != '–']
  assert shown and all(' [' in c and c.rstrip(' ≈').endswith(']') for c in shown)
  page = demo.report_markdown(out, 'python -m ropex.demo --steps 2')
  assert page.startswith('Written by `python -m ropex.demo --steps 2`: 4 runs')
  assert demo.comparison_table(out['rows']) in page          # the printed tables, as printed
  assert demo.interval_table(out['results']) in page
  assert all(f'| {name} |' in page for name in ('r_s0', 'r_s1', 'p_s0', 'p_s1'))  # per seed
  again = demo.run_demo(str(sweep), str(tmp_path / 'runs'), steps=2, out=lambda _: None)
  assert [r['seconds'] for r in again['results']] == [r['seconds'] for r in out['results']]


def test_comparison_table_has_one_row_per_run_and_every_task():
  rows = [('tiny_nope', {'train/loss': 1.23456, 'eval/loss': 1.5e-4, 'eval/perplexity': 4.4817,
                         'eval/accuracy/copy_offset': 0.5, 'train/tokens_per_s': 9000.4}),
          ('tiny_rope', {'train/loss': 0.5, 'eval/accuracy/induction': 1.0})]
  lines = demo.comparison_table(rows).splitlines()
  assert lines[0].split() == ['run', 'train', 'loss', 'eval', 'loss', 'perplexity', 'acc',
                              'copy_offset', 'acc', 'induction', 'tokens/s']
  assert lines[2].split() == ['tiny_nope', '1.23', '0.00015', '4.482', '0.500', '-', '9000']
  assert lines[3].split() == ['tiny_rope', '0.5', '-', '-', '-', '1.000', '-']


def test_a_missing_sweep_file_names_the_sweep_flag(tmp_path):
  with pytest.raises(ConfigError, match="--sweep='configs/missing.py' is not a file"):
    demo.demo_runs('configs/missing.py', str(tmp_path))
