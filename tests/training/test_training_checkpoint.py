"""Checkpoints through ``loop.train``: resume after a corrupt latest step (falls back to the
previous one and retrains to the identical params), ``load_for_inference``, and a NaN loss that
stops the run without saving a bad step."""

import json
import logging
import os

import flax.linen as nn
import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from ropex.training import checkpoint, loop, metrics, sharding, inference
from ropex.config import defaults as config_base
from ropex import data, model
from ropex.model.config import ModelConfig


def _config(steps=4):
  c = config_base.base_config('tiny')
  c.train.update(steps=steps, batch_size=8, seq_len=64, warmup_steps=1, log_every_steps=1)
  c.checkpoint.update(every_steps=2, keep=5)
  c.eval.update(steps=0)
  return c


def _corrupt(step_dir):
  files = [os.path.join(d, f) for d, _, fs in os.walk(step_dir) for f in fs]
  assert files
  for path in files:
    with open(path, 'r+b') as f:
      f.truncate(max(0, os.path.getsize(path) // 3))


def test_corrupt_latest_checkpoint_falls_back_and_resumes_identically(tmp_path, caplog):
  c, workdir = _config(), str(tmp_path / 'run')
  loop.train(c, workdir)
  cfg, params_4, step_4 = inference.load_for_inference(workdir)
  assert step_4 == 4 and cfg.model.to_dict() == c.model.to_dict()
  assert cfg.data.tasks == c.data.tasks  # JSON lists come back as tuples
  abstract = nn.unbox(model.abstract_params(ModelConfig.from_config(c.model)))
  assert jax.tree.map(lambda x: x.shape, params_4) == jax.tree.map(lambda x: x.shape, abstract)
  _, params_2, _ = inference.load_for_inference(workdir, step=2)
  losses_before = {r['step']: r['train/loss'] for r in metrics.read_metrics(workdir)}

  _corrupt(os.path.join(workdir, 'checkpoints', '4'))
  with caplog.at_level(logging.WARNING, logger='ropex'):
    summary = loop.train(c, workdir)  # restores step 2, retrains steps 3 and 4
  assert any('step 4 is unreadable' in r.getMessage() for r in caplog.records)
  assert os.path.isdir(os.path.join(workdir, 'checkpoints_corrupt', '4'))
  assert summary['step'] == 4
  _, params_again, _ = inference.load_for_inference(workdir)
  jax.tree.map(np.testing.assert_array_equal, params_again, params_4)  # bitwise
  with pytest.raises(AssertionError):
    jax.tree.map(np.testing.assert_array_equal, params_2, params_4)
  lines = [json.loads(x) for x in open(os.path.join(workdir, 'metrics.jsonl'))]
  assert [r['step'] for r in lines] == [1, 2, 3, 4, 3, 4]
  assert lines[4]['train/loss'] == losses_before[3] and lines[5]['train/loss'] == losses_before[4]


class _PoisonedIterator:
  """The real train iterator, with one out-of-vocabulary token in batch ``at`` (-> NaN)."""

  def __init__(self, inner, at, vocab):
    self.inner, self.at, self.vocab, self.n = inner, at, vocab, 0

  def __next__(self):
    batch = dict(next(self.inner))
    self.n += 1
    if self.n == self.at:
      batch['inputs'] = batch['inputs'].copy()
      batch['inputs'][0, 0] = self.vocab
    return batch

  def get_state(self):
    return self.inner.get_state()

  def set_state(self, state):
    self.inner.set_state(state)

  def close(self):
    self.inner.close() if hasattr(self.inner, 'close') else None


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
  c, workdir = _config(steps=6), str(tmp_path / 'nan')
  c.train.log_every_steps = 5  # the NaN step is found through the one-step-late check
  real = data.make_iterator
  monkeypatch.setattr(data, 'make_iterator', lambda config, split, *a: _PoisonedIterator(
      real(config, split, *a), 3, config.model.vocab_size))
  with pytest.raises(loop.NonFiniteLossError, match=r'nan.*at step 3.*last good checkpoint '
                     r'is step 2'):
    loop.train(c, workdir)
  assert sorted(int(s) for s in os.listdir(os.path.join(workdir, 'checkpoints'))
                if s.isdigit()) == [2]
  # The bad step is logged (as nulls) so that reports mark the run as diverged.
  assert metrics.read_metrics(workdir) == [
      {'step': 3, 'train/loss': None, 'train/grad_norm': None}]
  _, _, last = inference.load_for_inference(workdir)
  assert last == 2
  from ropex.experiments import run_summary
  summary = run_summary.summarize(workdir)
  assert summary.status == 'diverged' and 'step 3' in summary.note


def test_make_train_step_lowers_from_abstract_values():
  c = _config()
  c.mesh.update(data=2, fsdp=2, tensor=2)
  train_step, abstract_state, abstract_batch = loop.make_train_step(c, sharding.make_mesh(c))
  assert abstract_batch['inputs'].shape == (8, 64)
  assert abstract_batch['inputs'].sharding.spec == P(('data', 'fsdp'), None)
  compiled = train_step.lower(abstract_state, abstract_batch).compile()
  out_state, _ = compiled.output_shardings
  embedding = out_state.params['embedder']['input_embedding']
  assert embedding.spec == P('tensor', 'fsdp')
  assert embedding == abstract_state.params['embedder']['input_embedding'].sharding


def _orbax_error(module: str) -> logging.LogRecord:
  """An ERROR record as orbax's ``module`` (a path under orbax/checkpoint/_src) logs it."""
  import orbax.checkpoint as ocp_pkg  # pylint: disable=g-import-not-at-top
  path = os.path.join(os.path.dirname(ocp_pkg.__file__), '_src', module)
  return logging.LogRecord('absl', logging.ERROR, path, 1, f'an error in {module}', None, None)


def test_orbax_errors_are_hidden_only_while_a_save_is_in_flight(tmp_path, caplog):
  """The failed-save filter is scoped: unrelated orbax ERROR records always reach the log, and
  save-thread records do outside a save."""
  config = config_base.base_config('tiny')
  config.checkpoint.update(every_steps=1, async_save=True)
  absl_logger = logging.getLogger('absl')
  save_thread = 'checkpointers/async_checkpointer.py'
  unrelated = 'metadata/checkpoint.py'
  with caplog.at_level(logging.ERROR):
    ckpt = checkpoint.Checkpointer(str(tmp_path / 'run'), config.checkpoint)
    absl_logger.handle(_orbax_error(save_thread))     # no save in flight: logged
    ckpt.save(1, {'x': np.arange(4.0)}, {'k': 1}, force=True)
    absl_logger.handle(_orbax_error(save_thread))     # in flight: the failed save's tracebacks
    absl_logger.handle(_orbax_error(unrelated))       # in flight but unrelated: logged
    ckpt.close()
    absl_logger.handle(_orbax_error(save_thread))     # the save is complete: logged again
  got = [r.getMessage() for r in caplog.records if r.getMessage().startswith('an error in')]
  assert got == [f'an error in {save_thread}', f'an error in {unrelated}',
                 f'an error in {save_thread}']
  assert not absl_logger.filters
