"""Cross-entropy against numpy; the chunked loss equals the plain one (values and gradients)
and never materialises the [B, T, V] logits."""

import flax.linen as nn
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np

from ropex.config import defaults as config_base
from ropex.model import loss
from ropex.training import step
from ropex.model import Transformer
from ropex.model.config import ModelConfig


def _numpy_ce(logits, targets, weights):
  logits = logits.astype(np.float64)
  log_z = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
  target = np.take_along_axis(logits, targets[..., None], -1)[..., 0]
  return (weights * (log_z - target)).sum(), (weights * log_z ** 2).sum()


def test_cross_entropy_matches_numpy():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(3, 5, 11)).astype(np.float32) * 3
  targets = rng.integers(0, 11, size=(3, 5))
  weights = (rng.random((3, 5)) > 0.3).astype(np.float32)
  sums = loss.cross_entropy(jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(weights))
  ce, z = _numpy_ce(logits, targets, weights)
  np.testing.assert_allclose(float(sums.ce_sum), ce, rtol=1e-6)
  np.testing.assert_allclose(float(sums.z_sum), z, rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(sums.correct_BT), logits.argmax(-1) == targets)


def _tiny_setup(**model):
  c = config_base.base_config('tiny', **model)
  cfg = ModelConfig.from_config(c.model)
  net = Transformer(cfg)
  params = nn.unbox(net.init(jax.random.key(1), jnp.zeros((1, 8), jnp.int32))['params'])
  rng = np.random.default_rng(1)
  B, T = 2, 16
  batch = {'inputs': rng.integers(0, cfg.vocab_size, (B, T)).astype(np.int32),
           'targets': rng.integers(0, cfg.vocab_size, (B, T)).astype(np.int32),
           'positions': np.tile(np.arange(T, dtype=np.int32), (B, 1)),
           'segment_ids': np.ones((B, T), np.int32),
           'weights': (rng.random((B, T)) > 0.2).astype(np.float32)}
  return net, params, batch


def test_chunked_loss_and_grads_equal_plain():
  net, params, batch = _tiny_setup(final_logit_softcap=30.0)

  def objective(p, chunk):
    sums = step.loss_sums(net, p, batch, chunk)
    return sums.ce_sum + 1e-3 * sums.z_sum, sums.correct_BT

  grad_fn = jax.jit(jax.value_and_grad(objective, has_aux=True), static_argnums=1)
  (plain, correct_plain), g_plain = grad_fn(params, 0)
  (chunked, correct_chunked), g_chunked = grad_fn(params, 4)
  np.testing.assert_allclose(float(chunked), float(plain), rtol=1e-6)
  np.testing.assert_array_equal(np.asarray(correct_chunked), np.asarray(correct_plain))
  # Same per-token math; only float32 summation order differs.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4,
                                                       atol=1e-5 * np.abs(b).max()),
               g_chunked, g_plain)
  # The plain loss really uses the soft-capped logits of the model.
  logits = np.asarray(jax.jit(net.apply)({'params': params}, batch['inputs'],
                                         batch['positions']))
  ce, z = _numpy_ce(logits, batch['targets'], batch['weights'])
  np.testing.assert_allclose(float(plain), ce + 1e-3 * z, rtol=1e-5)


def _shapes_in(jaxpr) -> set:
  shapes = set()
  for eqn in jaxpr.eqns:
    shapes.update(tuple(v.aval.shape) for v in eqn.outvars if hasattr(v.aval, 'shape'))
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      shapes |= _shapes_in(sub)
  return shapes


def test_chunked_loss_never_builds_full_logits():
  net, params, batch = _tiny_setup(vocab_size=300)  # V unlike any other dimension
  B, T = batch['inputs'].shape
  V = net.cfg.vocab_size
  grad = lambda chunk: jax.grad(lambda p: step.loss_sums(net, p, batch, chunk).ce_sum)
  assert (B, T, V) in _shapes_in(jax.make_jaxpr(grad(0))(params).jaxpr)
  shapes = _shapes_in(jax.make_jaxpr(grad(4))(params).jaxpr)
  assert (B, T, V) not in shapes and (B, 4, V) in shapes
