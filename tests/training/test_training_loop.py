"""The sharded train step: 2x2x2 mesh == 1 device, accumulated == big batch, and the loss at
initialisation against an independent numpy forward pass (8 virtual CPU devices)."""


import jax
import numpy as np

from ropex.config import defaults as config_base
from ropex import data
from ropex.training import sharding, step
import reference


def _config(**train):
  c = config_base.base_config('tiny')
  c.train.update(dict(batch_size=8, seq_len=64, warmup_steps=2, learning_rate=1e-2), **train)
  c.data.prefetch = 0
  return c


def _batches(c, n):
  it = data.make_iterator(c, 'train')
  return [next(it) for _ in range(n)]


def _run(c, mesh, batches):
  """Losses and final params (numpy) of len(batches) train steps on ``mesh``."""
  setup = step.make_setup(c, mesh)
  train_step, state = step.make_train_step(setup), step.init_state(setup)
  losses = []
  for b in batches:
    g = sharding.global_batch(b, setup.batch_sharding, c.train.batch_size, step.BATCH_DTYPES)
    state, m = train_step(state, g)
    losses.append(float(m['loss']))
  return np.asarray(losses), jax.device_get(state.params)


def _assert_trees_close(a, b, rtol, atol):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=atol), a, b)


def test_2x2x2_mesh_matches_one_device():
  c = _config()
  batches = _batches(c, 3)
  c.mesh.update(data=2, fsdp=2, tensor=2)
  losses_8, params_8 = _run(c, sharding.make_mesh(c), batches)
  c.mesh.update(data=1, fsdp=1, tensor=1)
  losses_1, params_1 = _run(c, sharding.make_mesh(c, jax.devices()[:1]), batches)
  np.testing.assert_allclose(losses_8, losses_1, rtol=1e-5)
  assert losses_1[-1] < losses_1[0]  # it trains
  _assert_trees_close(params_8, params_1, rtol=1e-4, atol=1e-6)


def test_gradient_accumulation_equals_big_batch():
  c = _config()
  batches = _batches(c, 2)
  mesh = sharding.make_mesh(c, jax.devices()[:2])
  losses_1, params_1 = _run(c, mesh, batches)
  c.train.grad_accum_steps = 4
  losses_4, params_4 = _run(c, mesh, batches)
  np.testing.assert_allclose(losses_4, losses_1, rtol=1e-6)
  # Adam divides by sqrt(v): float32 rounding in near-zero gradients moves a parameter by at
  # most ~1e-4 of a step (learning rate 1e-2).
  _assert_trees_close(params_4, params_1, rtol=1e-5, atol=1e-6)


# ---- golden value: the first step's loss from an independent numpy forward pass ----------

def _numpy_loss(p, b, num_layers):
  scanned = p['layers']['layer_0']  # [L, ...] stacked layers -> the official per-layer tree
  tree = {'embedder': p['embedder'], 'final_norm': p['final_norm'],
          **{f'layer_{i}': jax.tree.map(lambda a, i=i: a[i], scanned) for i in range(num_layers)}}
  logits = reference.gemma_forward(tree, b['inputs'], num_layers, b['positions'],
                                   b['segment_ids'])
  nll = reference.token_nll(logits, b['targets'])
  return float((nll * b['weights']).sum() / b['weights'].sum())


def test_first_step_loss_matches_numpy_forward():
  c = _config()
  (batch,) = _batches(c, 1)
  assert len(np.unique(batch['segment_ids'][0])) > 1  # packed: the mask matters
  mesh = sharding.make_mesh(c, jax.devices()[:2])
  setup = step.make_setup(c, mesh)
  state = step.init_state(setup)
  params = jax.device_get(state.params)
  g = sharding.global_batch(batch, setup.batch_sharding, c.train.batch_size, step.BATCH_DTYPES)
  _, m = step.make_train_step(setup)(state, g)
  want = _numpy_loss(params, batch, c.model.num_layers)
  np.testing.assert_allclose(float(m['loss']), want, rtol=1e-4)
