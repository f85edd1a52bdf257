"""Evaluation and analysis on a mesh (8 CPU devices, tests/conftest.py): parameters restored
directly into their shards, or placed once; sharded scoring and capture give the numbers of one
device; float32 logits in scoring whatever the compute dtype."""
import dataclasses
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from ropex import model as model_lib
from ropex.analysis import capture
from ropex.evaluation import scoring
from ropex.config import loading
from ropex.model.config import ModelConfig
from ropex.training import checkpoint, inference, workdir as workdir_lib
from ropex.training.placement import Placement

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEP = 7


def tiny_config():
  config = loading.load(os.path.join(ROOT, 'configs', 'tiny.py'))
  config.mesh.update(data=2, fsdp=4, tensor=1)
  return config


@pytest.fixture(scope='module')
def saved(tmp_path_factory):
  """A workdir with config.json and one checkpoint of (random) parameters at step 7."""
  config = tiny_config()
  cfg = ModelConfig.from_config(config.model)
  params = nn.unbox(model_lib.Transformer(cfg).init(jax.random.key(3),
                                                    jnp.zeros((1, 8), jnp.int32))['params'])
  workdir = str(tmp_path_factory.mktemp('run'))
  workdir_lib.write_config(config, workdir, primary=True)
  path = os.path.join(checkpoint.checkpoint_dir(workdir), str(STEP), 'state')
  with ocp.PyTreeCheckpointer() as ckptr:
    ckptr.save(path, {'params': params, 'step': np.int32(STEP)})
  return workdir, config, cfg, params


def test_restore_is_sharded_on_the_runs_mesh(saved):
  workdir, _, cfg, params = saved
  config, restored, step, placement = inference.load_sharded(workdir)
  assert step == STEP and dict(placement.mesh.shape) == {'data': 2, 'fsdp': 4, 'tensor': 1}
  emb = restored['embedder']['input_embedding']                 # [V, D], D over fsdp
  assert emb.sharding.spec == jax.sharding.PartitionSpec('tensor', 'fsdp')
  assert {s.data.shape for s in emb.addressable_shards} == {(512, 32)}
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
               restored, params)
  assert config.model.to_dict() == saved[1].model.to_dict()


def rows(n=5, T=24, vocab=512, seed=0):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, vocab, (n, T + 1))
  return {'inputs': tokens[:, :-1], 'targets': tokens[:, 1:],
          'positions': np.broadcast_to(np.arange(T), (n, T)).copy(),
          'segment_ids': np.ones((n, T), np.int64)}


def test_sharded_scoring_equals_one_device(saved):
  _, config, cfg, params = saved
  placement = Placement.from_config(config)
  r = rows()
  one = scoring.Scorer(cfg, params, attention_chunk=16, loss_chunk=8, tokens_per_batch=72)
  mesh = scoring.Scorer(cfg, params, attention_chunk=16, loss_chunk=8, tokens_per_batch=72,
                        placement=placement)
  assert one.batch_size(24, 5) == 3 and mesh.batch_size(24, 5) == 8  # data x fsdp shards
  leaf = mesh.params['layers']['layer_0']['mlp']['linear']
  assert len({s.device for s in leaf.addressable_shards}) == 8 and not leaf.is_fully_replicated
  loss_one, correct_one = one.score(r)
  loss_mesh, correct_mesh = mesh.score(r)
  assert loss_one.shape == (5, 24) and np.all(loss_one > 0)   # really computed
  np.testing.assert_allclose(loss_mesh, loss_one, rtol=2e-5, atol=2e-5)
  np.testing.assert_array_equal(correct_mesh, correct_one)


def test_sharded_capture_equals_one_device(saved):
  _, config, cfg, params = saved
  flat, flat_params = capture.for_analysis(cfg, params)
  placement = Placement.from_config(config)
  tokens = rows(n=8, T=16)['inputs']   # 8 rows: one per batch shard
  valid = np.ones_like(tokens, bool)
  one = capture.capture(flat, flat_params, tokens, valid)
  mesh = capture.capture(flat, placement.place(flat_params, flat), tokens, valid,
                         placement=placement)
  assert one.nll_BT[:, :-1].min() > 0
  np.testing.assert_allclose(mesh.nll_BT, one.nll_BT, rtol=2e-5, atol=2e-5)
  for a, b in zip(mesh.probs + mesh.q, one.probs + one.q):
    np.testing.assert_allclose(a, b, atol=2e-5)


def test_scoring_logits_are_float32_with_bfloat16_compute(saved):
  _, _, cfg, params = saved
  bf16 = dataclasses.replace(cfg, dtype='bfloat16')
  x = jnp.zeros((1, 8), jnp.int32)
  jaxpr = jax.make_jaxpr(lambda p: scoring._score_batch(bf16, 8, p, x, x, x, x + 1))(params)
  vocab_dots = [e for e in _eqns(jaxpr.jaxpr) if e.primitive.name == 'dot_general'
                and e.outvars[0].aval.shape[-1] == cfg.vocab_size]
  assert vocab_dots and all(e.outvars[0].aval.dtype == jnp.float32 for e in vocab_dots)


def _eqns(jaxpr):
  for eqn in jaxpr.eqns:
    yield eqn
    for value in eqn.params.values():
      inner = getattr(value, 'jaxpr', value)
      if hasattr(inner, 'eqns'):
        yield from _eqns(inner)
