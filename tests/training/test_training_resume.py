"""Resume can never reset a run by accident: a changed frozen field is refused with nothing on
disk changed; a resumable change continues from the checkpoint's step; an unreadable (checksum
mismatch) latest step is set aside and the previous one reproduces the uninterrupted run; no
readable step stops the run with nothing moved; a torn metrics line is survived."""

import hashlib
import json
import logging
import os
import shutil

import jax
import numpy as np
import pytest

from ropex.config import defaults as config_base
from ropex.errors import ConfigError
from ropex.experiments import run_summary
from ropex.training import checkpoint, inference, integrity, loop, metrics, sharding, step


def _config(steps=4):
  c = config_base.base_config('tiny')
  c.train.update(steps=steps, batch_size=8, seq_len=64, warmup_steps=1, log_every_steps=1,
                 schedule='constant')
  c.checkpoint.update(every_steps=2, keep=5)
  c.eval.update(steps=0)
  return c


def listing(root) -> dict:
  """sha256 of every file under ``root`` (relative path -> digest); {} if it does not exist."""
  out = {}
  for d, _, files in os.walk(root):
    for f in files:
      path = os.path.join(d, f)
      with open(path, 'rb') as fh:
        out[os.path.relpath(path, root)] = hashlib.sha256(fh.read()).hexdigest()
  return out


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A finished 4-step run (checkpoints 2 and 4) and its per-step losses."""
  workdir = str(tmp_path_factory.mktemp('resume') / 'run')
  loop.train(_config(), workdir)
  return workdir, {r['step']: r['train/loss'] for r in metrics.read_metrics(workdir)}


def _copy(trained, tmp_path) -> str:
  target = str(tmp_path / 'run')
  shutil.copytree(trained[0], target)
  return target


@pytest.mark.parametrize('field, value', [
    ('train.grad_clip_norm', 0.0), ('train.batch_size', 16), ('train.seq_len', 32),
    ('train.decay_norms_and_embeddings', True), ('data.seed', 7), ('model.num_layers', 4),
    ('data.pack', False)])
def test_a_changed_frozen_field_is_refused_and_nothing_changes(trained, tmp_path, field, value):
  workdir = _copy(trained, tmp_path)
  before = listing(workdir)
  c = _config(steps=8)
  block, name = field.split('.')
  c[block][name] = value
  with pytest.raises(ConfigError) as e:
    loop.train(c, workdir)
  message = str(e.value)
  assert f'{field}=' in message and 'cannot change on resume' in message
  assert 'new --workdir' in message and '\n' not in message
  assert listing(workdir) == before  # config.json and checkpoints byte-for-byte unchanged
  assert not os.path.exists(os.path.join(workdir, 'checkpoints_corrupt'))


def test_a_changed_layout_is_refused_by_the_checkpoint_itself(trained, tmp_path):
  """Second line of defence: the checkpoint's array tree vs the state the config builds."""
  workdir = _copy(trained, tmp_path)
  before = listing(workdir)
  c = _config()
  c.train.grad_clip_norm = 0.0  # no clipping: the optimizer state loses a level
  setup = step.make_setup(c, sharding.make_mesh(c))
  ckpt = checkpoint.Checkpointer(workdir, c.checkpoint)
  with pytest.raises(ConfigError, match=r'checkpoint 4 .* another layout .*opt_state'):
    ckpt.restore_latest(setup.abstract_state)
  ckpt.close()
  assert listing(workdir) == before


def test_a_resumable_change_continues_from_the_checkpoint(trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  c = _config(steps=6)
  c.train.learning_rate, c.train.grad_clip_norm, c.data.prefetch = 1e-3, 0.5, 0
  _, params_4, _ = inference.load_for_inference(workdir, 4)
  ckpt = checkpoint.Checkpointer(workdir, c.checkpoint)
  setup = step.make_setup(c, sharding.make_mesh(c))
  state, _, start = ckpt.restore_latest(setup.abstract_state)
  ckpt.close()
  assert start == 4 and int(state.step) == 4
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state.params), params_4)
  summary = loop.train(c, workdir)
  assert summary['step'] == 6
  assert [r['step'] for r in metrics.read_metrics(workdir)] == [1, 2, 3, 4, 5, 6]
  assert json.load(open(os.path.join(workdir, 'config.json')))['train']['learning_rate'] == 1e-3


def _largest_state_file(step_dir) -> str:
  files = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(step_dir, 'state'))
           for f in fs]
  return max(files, key=os.path.getsize)


def test_flipped_bytes_are_detected_set_aside_and_the_previous_step_reproduces(
    trained, tmp_path, caplog):
  workdir = _copy(trained, tmp_path)
  path = _largest_state_file(os.path.join(workdir, 'checkpoints', '4'))
  size = os.path.getsize(path)
  with open(path, 'r+b') as f:  # 4 KiB of garbage in the middle, size unchanged
    f.seek(size // 2)
    f.write(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
  assert os.path.getsize(path) == size
  with pytest.raises(ConfigError, match='does not match its sha256 checksum'):
    inference.load_for_inference(workdir, 4)
  with caplog.at_level(logging.WARNING, logger='ropex'):
    summary = loop.train(_config(), workdir)
  assert any('step 4 is unreadable' in r.getMessage() for r in caplog.records)
  assert os.path.isdir(os.path.join(workdir, 'checkpoints_corrupt', '4'))
  assert summary['step'] == 4
  lines = [json.loads(x) for x in open(os.path.join(workdir, 'metrics.jsonl'))]
  assert [r['step'] for r in lines] == [1, 2, 3, 4, 3, 4]
  assert {r['step']: r['train/loss'] for r in lines[4:]} == {
      s: trained[1][s] for s in (3, 4)}  # bitwise equal to the uninterrupted run
  _, params_again, _ = inference.load_for_inference(workdir, 4)
  _, params_ref, _ = inference.load_for_inference(trained[0], 4)
  jax.tree.map(np.testing.assert_array_equal, params_again, params_ref)


def test_no_readable_checkpoint_stops_with_nothing_moved(trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  for s in (2, 4):
    path = _largest_state_file(os.path.join(workdir, 'checkpoints', str(s)))
    with open(path, 'r+b') as f:
      f.truncate(os.path.getsize(path) // 2)
  before = listing(workdir)
  with pytest.raises(ConfigError, match=r'no checkpoint in .* is readable \(step 4: .*step 2: '
                     r'.*nothing was moved or started'):
    loop.train(_config(), workdir)
  assert listing(workdir) == before


def test_a_step_without_checksums_yields_to_an_older_verified_one(trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  os.remove(os.path.join(workdir, 'checkpoints', '4', integrity.MANIFEST))
  c = _config()
  ckpt = checkpoint.Checkpointer(workdir, c.checkpoint)
  setup = step.make_setup(c, sharding.make_mesh(c))
  _, _, start = ckpt.restore_latest(setup.abstract_state)
  ckpt.close()
  assert start == 2
  # With no verified step left, the newest complete one is used (with a warning).
  os.remove(os.path.join(workdir, 'checkpoints', '2', integrity.MANIFEST))
  ckpt = checkpoint.Checkpointer(workdir, c.checkpoint)
  _, _, start = ckpt.restore_latest(setup.abstract_state)
  ckpt.close()
  assert start == 2


def test_transient_storage_errors_are_retried_and_others_are_not():
  calls = []

  def flaky():
    calls.append(1)
    if len(calls) < 3:
      raise TimeoutError('read timed out')
    return 'ok'

  assert integrity.retry(flaky, 'reading', delay_s=0.0) == 'ok' and len(calls) == 3
  with pytest.raises(FileNotFoundError):
    integrity.retry(lambda: open('/nonexistent-ropex/x'), 'reading', delay_s=0.0)


def test_a_torn_metrics_line_is_survived_by_resume_and_report(trained, tmp_path, caplog):
  workdir = _copy(trained, tmp_path)
  shutil.rmtree(os.path.join(workdir, 'checkpoints', '4'))  # so that steps 3, 4 are re-done
  path = os.path.join(workdir, 'metrics.jsonl')
  with open(path, 'a') as f:
    f.write('{"step": 5, "train/lo')  # a crash mid-write
  loop.train(_config(), workdir)
  lines = open(path).read().splitlines()
  assert lines[4] == '{"step": 5, "train/lo'  # the torn line is ended, not appended to
  assert [json.loads(x)['step'] for x in lines[5:]] == [3, 4]
  with caplog.at_level(logging.WARNING):
    records = metrics.read_metrics(workdir)
  assert [r['step'] for r in records] == [1, 2, 3, 4]
  assert any('line 5 is not a metrics record' in r.getMessage() for r in caplog.records)
  assert records[3]['train/loss'] == trained[1][4]
  assert run_summary.summarize(workdir).status == 'finished'


def test_a_lost_config_json_is_checked_against_the_checkpoints_copy(trained, tmp_path):
  """Without config.json the run's config saved in its checkpoints stands in: a changed θ is
  refused in one line with nothing changed; the unchanged command resumes."""
  workdir = _copy(trained, tmp_path)
  with open(os.path.join(workdir, 'config.json')) as f:
    written = json.load(f)
  assert checkpoint.saved_config(workdir) == written
  os.remove(os.path.join(workdir, 'config.json'))
  before = listing(workdir)
  c = _config(steps=6)
  c.model.pe.max_wavelength = 500.0  # would otherwise resume silently with another θ
  with pytest.raises(ConfigError, match=r'holds a run with model.pe.max_wavelength=10000.0 but '
                     r'this command has model.pe.max_wavelength=500.0') as e:
    loop.train(c, workdir)
  assert '\n' not in str(e.value)
  assert listing(workdir) == before
  summary = loop.train(_config(steps=6), workdir)
  assert summary['step'] == 6 and os.path.exists(os.path.join(workdir, 'config.json'))


def test_checkpoints_without_config_json_or_a_copy_are_refused(trained, tmp_path):
  workdir = _copy(trained, tmp_path)
  os.remove(os.path.join(workdir, 'config.json'))
  for step_dir in os.listdir(os.path.join(workdir, 'checkpoints')):
    shutil.rmtree(os.path.join(workdir, 'checkpoints', step_dir, 'config'))
  before = listing(workdir)
  with pytest.raises(ConfigError, match=r'holds checkpoints but no config.json \(and its '
                     r'checkpoints hold no copy\)') as e:
    loop.train(_config(steps=8), workdir)
  assert '\n' not in str(e.value)
  assert listing(workdir) == before
