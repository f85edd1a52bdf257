"""`python -m ropex.analyze`: a training workdir end to end, the report's files, errors."""
import json
import os
import re
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from ropex.training import checkpoint
from ropex.analysis import pipeline, prompts
from ropex.analysis import theory as theory_lib
from ropex.data.tokenizers import ByteTokenizer
from ropex.model.config import ModelConfig
from ropex.training.step import TrainState

from analysis_testlib import random_params

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tiny_config():
  sys.path.insert(0, os.path.join(REPO, 'configs'))
  import tiny  # pylint: disable=import-outside-toplevel
  c = tiny.get_config('pe=prope,p=0.5')
  c.model.num_layers = 2
  c.checkpoint.async_save = False
  return c


def write_workdir(workdir, step=7):
  """A workdir as ropex.train leaves it: config.json and a checkpoint at ``step``."""
  config = tiny_config()
  cfg = ModelConfig.from_config(config.model)
  params = random_params(cfg, seed=3)
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json(indent=2))
  ckpt = checkpoint.Checkpointer(workdir, config.checkpoint)
  state = TrainState(step=jnp.asarray(step, jnp.int32),
                     params=jax_tree(params), opt_state={'count': jnp.zeros((), jnp.int32)})
  assert ckpt.save(step, state, {'position': 0}, force=True)
  ckpt.close()
  return cfg, params


def jax_tree(tree):
  return {k: jax_tree(v) if isinstance(v, dict) else jnp.asarray(v) for k, v in tree.items()}


def run_cli(*args):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, '-m', 'ropex.analyze', *args], capture_output=True,
                        text=True, env=env, timeout=600, cwd=REPO)


def test_analyze_workdir_end_to_end(tmp_path):
  workdir = tmp_path / 'run'
  config = tiny_config()
  cfg, params = write_workdir(str(workdir))
  proc = run_cli(f'--workdir={workdir}', '--top_heads=1')
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = workdir / 'analysis'
  report = (out / 'report.md').read_text()
  assert '- step: 7' in report and 'prope' in report and 'rotated chunks 0..7 of 16' in report
  assert 'prompts: synthetic tasks (copy_offset, prev_token' in report   # the run's own data
  links = re.findall(r'!\[[^]]*\]\(([^)]+)\)', report)
  assert len(links) == 2 + cfg.num_layers      # overview, attention maps, one per layer
  for link in links:
    assert not os.path.isabs(link) and (out / link).stat().st_size > 1000
  html = (out / 'report.html').read_text()
  assert all(f'src="{link}"' in html for link in links)
  arrays = np.load(out / 'arrays.npz')
  assert arrays['q_chunk_norm_LNC'].shape == (2, cfg.num_heads, 16)
  assert arrays['head_scores_LNS'].shape == (2, cfg.num_heads, 3)
  # The numbers are those of the checkpoint's params on the run's synthetic tasks.
  batch = prompts.task_prompts(config.data, ByteTokenizer.bos_id)
  np.testing.assert_array_equal(arrays['tokens_PT'], batch.tokens_PT)
  direct = pipeline.analyze(cfg, params, batch, top_heads=0)
  summary = json.loads((out / 'summary.json').read_text())
  assert summary['loss'] == pytest.approx(direct.loss, rel=1e-5)
  np.testing.assert_allclose(arrays['q_chunk_norm_LNC'], direct.usage.q_LNC, rtol=1e-5)
  np.testing.assert_allclose(arrays['head_offsets_LNO'], direct.head_scores.offsets_LNO,
                             atol=1e-6)
  assert len(summary['ablations']) == 2 and summary['step'] == 7


def test_missing_checkpoint_and_bad_arguments_fail_with_one_sentence(tmp_path):
  (tmp_path / 'empty').mkdir()
  with open(tmp_path / 'empty' / 'config.json', 'w') as f:
    f.write(tiny_config().to_json())
  proc = run_cli(f'--workdir={tmp_path / "empty"}')
  assert proc.returncode != 0 and 'no checkpoints' in proc.stderr.splitlines()[-1]
  proc = run_cli(f'--workdir={tmp_path}', f'--gemma={tmp_path}')
  assert proc.returncode != 0
  assert proc.stderr.strip().splitlines()[-1].startswith('ropex.analyze: give exactly one of')


@pytest.mark.slow
def test_train_then_analyze_and_theory_from_the_command_line(tmp_path):
  workdir = tmp_path / 'tiny'
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  train = subprocess.run(
      [sys.executable, '-m', 'ropex.train', '--config=configs/tiny.py:pe=rope',
       f'--workdir={workdir}', '--config.train.steps=20', '--config.checkpoint.every_steps=10',
       '--config.eval.every_steps=20'], capture_output=True, text=True, env=env, cwd=REPO,
      timeout=1800)
  assert train.returncode == 0, train.stderr[-3000:]
  proc = run_cli(f'--workdir={workdir}', '--step=10')
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert '- step: 10' in (workdir / 'analysis' / 'report.md').read_text()
  proc = run_cli('theory', f'--out={tmp_path / "theory"}')
  assert proc.returncode == 0, proc.stderr[-3000:]
  theory = json.loads((tmp_path / 'theory' / 'theory.json').read_text())
  assert theory['nope_bound']['nope_max_self_attention'] <= 0.5 + theory_lib.NOPE_BOUND_SLACK
