"""``python -m ropex.study`` on tiny runs trained here: runs x variants x lengths x suite in one
report."""

import json
import os
import subprocess
import sys

import pytest

import cli_runs
from ropex.evaluation import study
from ropex.errors import ConfigError

MICRO = ('--config.train.steps=2', '--config.train.batch_size=4', '--config.train.seq_len=32',
         '--config.checkpoint.every_steps=2', '--config.checkpoint.async_save=False',
         '--config.eval.steps=0', '--config.model.num_layers=1', '--config.model.embed_dim=32',
         '--config.model.hidden_dim=32', '--config.model.head_dim=16')


def test_variants_and_bad_study_fields(tmp_path):
  assert study.parse_variants('base=|pi4=model.pe.position_scale=4;model.pe.max_wavelength=5e5') \
      == [('base', {}), ('pi4', {'model.pe.position_scale': 4, 'model.pe.max_wavelength': 5e5})]
  with pytest.raises(ConfigError, match='distinct labels'):
    study.parse_variants('a=|a=')
  with pytest.raises(ConfigError, match='label=override'):
    study.parse_variants('model.pe.position_scale')
  with pytest.raises(ConfigError, match='matches no workdir'):
    study.workdirs(str(tmp_path / 'nothing*'))


def test_study_on_two_seeds_and_two_variants(tmp_path):
  root = tmp_path / 'runs'
  for name, flags, config in (
      ('rope_s0', (), 'configs/tiny.py'),
      ('rope_s1', ('--config.train.seed=1', '--config.data.seed=1'), 'configs/tiny.py'),
      ('nope', (), 'configs/tiny.py:pe=nope')):
    done = cli_runs.run(str(root / name), *MICRO, *flags, config=config)
    assert done.returncode == 0, done.stderr[-2000:]
  out = tmp_path / 'study'
  command = [sys.executable, '-m', 'ropex.study', '--config=configs/study_tiny.py',
             f'--config.runs={root}/*', f'--config.out={out}', '--config.lengths=24,48',
             '--config.depths=0,1', '--config.examples=2', '--config.task_examples=2',
             '--config.ruler=niah_single,vt', '--config.variants=base=|pi4=model.pe.position_scale=4']
  done = subprocess.run(command, cwd=cli_runs.ROOT, env=cli_runs.env(), capture_output=True,
                        text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  evals = sorted(os.listdir(out / 'evals'))
  assert evals == ['nope__base', 'rope_s0__base', 'rope_s0__pi4', 'rope_s1__base',
                   'rope_s1__pi4']
  with open(out / 'evals' / 'rope_s1__pi4' / 'results.json') as f:
    r = json.load(f)
  assert r['overrides'] == {'model.pe.position_scale': 4.0} and r['study_variant'] == 'pi4'
  assert r['perplexity']['lengths'] == [24, 48] and sorted(r['ruler']) == ['niah_single', 'vt']
  text = (out / 'study.md').read_text()
  # the two seeds of each variant are one row with an interval
  assert '| tiny_rope (n=2 seeds) |' in text
  assert '| tiny_rope [pe.position_scale=4] (n=2 seeds) |' in text
  row = next(l for l in text.splitlines() if l.startswith('| tiny_rope (n=2 seeds) |'))
  assert row.count(' ± ') == 2 and 'RULER average recall' in text       # perplexity ± h
  paired = text[text.index('Paired differences'):]            # each variant against base
  assert '| tiny_rope [pe.position_scale=4] (n=2 seeds) | tiny_rope (n=2 seeds) |' in paired
  assert '- nope__pi4: model.pe.position_scale=4 is not used by kind' in text   # listed, skipped
  for name in ('summary.png', 'perplexity.png', 'ruler.png', 'accuracy.png'):
    assert f'![{name}]({name})' in text and os.path.getsize(out / name) > 1000
  again = subprocess.run(command, cwd=cli_runs.ROOT, env=cli_runs.env(), capture_output=True,
                         text=True, timeout=600)
  assert again.returncode == 0 and again.stdout.count('existing results') == 5
  assert again.stdout.count('skipped') == 1
  # one run and one variant are enough to show that changed options re-evaluate instead of
  # reusing results
  changed = subprocess.run([{'--config.examples=2': '--config.examples=3',
                             f'--config.runs={root}/*': f'--config.runs={root}/rope_s0',
                             '--config.variants=base=|pi4=model.pe.position_scale=4':
                             '--config.variants=pi4=model.pe.position_scale=4'}.get(c, c)
                            for c in command], cwd=cli_runs.ROOT, env=cli_runs.env(),
                           capture_output=True, text=True, timeout=600)
  assert changed.returncode == 0 and changed.stdout.count(': existing results\n') == 0
  assert changed.stdout.count('existing results differ: examples 2 != 3') == 1
  assert 'rope_s0__pi4: evaluating again (existing results differ: examples 2 != 3)' \
      in changed.stdout
