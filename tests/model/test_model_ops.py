"""Hand-written backward passes of ``ropex.model.ops`` against ``jax.grad`` of the plain
expression, and remat policies that save what their names say.

Tolerances: float32 — tight (1e-5 relative to the largest gradient entry: summation order
only). bfloat16 — both sides accumulate in float32 and round once, so they may differ by the
rounding of the result: at most 2 bfloat16 ulps (2 * 2^-8 relative) of the largest entry."""
import contextlib
import io

import flax.linen as nn
import jax
from jax import ad_checkpoint
import jax.numpy as jnp
import numpy as np
import pytest

from ropex import model
from ropex.model import ops
from ropex.model.config import ModelConfig, model_block

BF16_ULP = 2.0 ** -8   # bfloat16 has 8 significant bits (7 stored)
TOLERANCE = {jnp.float32: 1e-5, jnp.bfloat16: 2 * BF16_ULP}


def _random(shape, seed, dtype):
  return jax.random.normal(jax.random.key(seed), shape).astype(dtype)


def _plain_softmax_attend(logits, v):
  probs = jax.nn.softmax(logits, axis=-1)
  out = jnp.einsum('BKGTS,BSKH->BTKGH', probs.astype(v.dtype), v,
                   preferred_element_type=jnp.float32).astype(v.dtype)
  return out, probs


CASES = {
    'dense': (lambda x, w, tuned: ops.dense(x, w, tuned=tuned),
              lambda x, w: jnp.einsum('...k,kn->...n', x, w, preferred_element_type=jnp.float32
                                      ).astype(x.dtype),
              ((3, 5, 16), (16, 24))),
    'einsum': (lambda a, b, tuned: ops.einsum('BTD,NDH->BTNH', a, b, tuned=tuned),
               lambda a, b: jnp.einsum('BTD,NDH->BTNH', a, b, preferred_element_type=jnp.float32
                                       ).astype(a.dtype),
               ((2, 6, 16), (4, 16, 8))),
    'softmax_attend': (lambda l, v, tuned: ops.softmax_attend(l.astype(jnp.float32), v,
                                                              tuned=tuned),
                       lambda l, v: _plain_softmax_attend(l.astype(jnp.float32), v),
                       ((2, 2, 3, 7, 7), (2, 7, 2, 8))),
}


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize('name', CASES)
def test_hand_written_gradients_equal_autodiff_of_the_plain_expression(name, dtype):
  op, plain, shapes = CASES[name]
  a, b = (_random(s, i, dtype) for i, s in enumerate(shapes))

  def loss(fn):
    def f(a, b):
      outs = jax.tree.leaves(fn(a, b))
      return sum(jnp.sum(jnp.sin(o.astype(jnp.float32) * (i + 1))) for i, o in enumerate(outs))
    return f

  tuned = jax.grad(loss(lambda a, b: op(a, b, True)), (0, 1))(a, b)
  untuned = jax.grad(loss(lambda a, b: op(a, b, False)), (0, 1))(a, b)
  reference = jax.grad(loss(plain), (0, 1))(a, b)
  for got, want in [*zip(tuned, reference), *zip(untuned, reference)]:
    assert got.dtype == want.dtype == dtype
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    scale = np.abs(want).max()
    assert scale > 0.1
    assert np.abs(got - want).max() <= TOLERANCE[dtype] * scale
  # the tuned path really is a custom VJP (the plain one is not)
  jaxpr = str(jax.make_jaxpr(lambda a, b: op(a, b, True))(a, b))
  if name != 'einsum' or dtype != jnp.float32:   # float32 einsum needs no custom backward
    assert 'custom_vjp_call' in jaxpr
  assert 'custom_vjp_call' not in str(jax.make_jaxpr(lambda a, b: op(a, b, False))(a, b))


def _small(remat):
  return ModelConfig.from_config(model_block(
      'tiny', vocab_size=64, num_layers=2, embed_dim=32, num_heads=4, num_kv_heads=2,
      head_dim=8, hidden_dim=48, remat=remat))


def _saved(remat):
  """Residuals the backward pass of a small model keeps: the lines of
  ``jax.ad_checkpoint.print_saved_residuals`` (``dtype[shape] from ...``)."""
  cfg = _small(remat)
  tokens = jnp.zeros((2, 16), jnp.int32)
  net = model.Transformer(cfg)
  params = nn.unbox(net.init(jax.random.key(0), tokens)['params'])
  loss = lambda p: jnp.mean(net.apply({'params': p}, tokens) ** 2)
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    ad_checkpoint.print_saved_residuals(loss, params)
  return [line for line in out.getvalue().splitlines() if line.strip()]


def test_remat_policies_save_what_their_names_say():
  none, full, dots, no_batch = (_saved(r) for r in ('none', 'full', 'dots', 'dots_no_batch'))
  assert len(full) < len(no_batch) < len(dots) < len(none)
  stacked = lambda saved: [line for line in saved if 'output of scan' in line]
  # full: only the layer inputs [L, B, T, D] (and the scan's carry out) are kept
  assert [line.split(' ')[0] for line in stacked(full)] == ['f32[2,16,32]', 'f32[2,2,16,32]']
  scores = lambda saved: [line for line in saved if '16,16' in line.split(' ')[0]]
  mlp = lambda saved: [line for line in saved if line.startswith('f32[2,2,16,48] ')]
  # dots: every matmul output, the MLP projections [L, B, T, F] and the batched attention
  # scores [.., T, S, ..] too
  assert len(mlp(dots)) == 2 and len(scores(dots)) == 1
  # dots_no_batch: the projections, not the batched attention einsums
  assert len(mlp(no_batch)) == 2 and not scores(no_batch)
  assert not mlp(full) and not scores(full)
