"""Schedules, the weight-decay mask and one AdamW step against plain numpy."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ropex.config import defaults as config_base
from ropex.training import optim


def _train(**overrides):
  t = config_base.base_config('tiny').train
  t.update(overrides)
  return t


@pytest.mark.parametrize('schedule', ['cosine', 'rsqrt', 'constant'])
def test_schedules_match_formulas(schedule):
  t = _train(schedule=schedule, learning_rate=0.01, warmup_steps=10, steps=110,
             end_learning_rate_fraction=0.1)
  lr = optim.learning_rate_schedule(t)
  for step in (0, 5, 9):  # linear warmup from 0
    np.testing.assert_allclose(float(lr(step)), 0.01 * step / 10, rtol=1e-6, atol=1e-9)
  for step in (10, 35, 60, 109, 110):
    k = step - 10
    want = {'cosine': 0.01 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * k / 100))),
            'rsqrt': 0.01 * math.sqrt(10 / (10 + k)),
            'constant': 0.01}[schedule]
    np.testing.assert_allclose(float(lr(step)), want, rtol=1e-5)


def test_decay_mask_excludes_norms_and_embedding():
  params = {'embedder': {'input_embedding': 0}, 'final_norm': {'scale': 0},
            'layers': {'layer_0': {'pre_attention_norm': {'scale': 0},
                                   'attn': {'q_einsum': {'w': 0}}, 'mlp': {'linear': 0}}}}
  mask = optim.decay_mask(params)
  assert mask['layers']['layer_0']['attn']['q_einsum']['w'] is True
  assert mask['layers']['layer_0']['mlp']['linear'] is True
  assert mask['embedder']['input_embedding'] is False
  assert mask['final_norm']['scale'] is False
  assert mask['layers']['layer_0']['pre_attention_norm']['scale'] is False
  assert all(jax.tree.leaves(optim.decay_mask(params, decay_norms_and_embeddings=True)))


def test_one_adamw_step_matches_numpy():
  t = _train(schedule='constant', warmup_steps=0, learning_rate=0.1, b1=0.9, b2=0.95,
             eps=1e-8, weight_decay=0.5, grad_clip_norm=1.0, steps=10)
  params = {'embedder': {'input_embedding': jnp.array([[1.0, -2.0]])},
            'mlp': {'linear': jnp.array([[0.5, 3.0], [-1.0, 2.0]])}}
  grads = {'embedder': {'input_embedding': jnp.array([[3.0, 0.0]])},
           'mlp': {'linear': jnp.array([[0.0, 4.0], [-2.0, 1.0]])}}
  tx = optim.make_optimizer(t)
  updates, _ = tx.update(grads, tx.init(params), params)
  new = jax.tree.map(lambda p, u: np.asarray(p + u), params, updates)

  norm = math.sqrt(9 + 16 + 4 + 1)
  for path, decay in ((('embedder', 'input_embedding'), 0.0), (('mlp', 'linear'), 0.5)):
    p = np.asarray(params[path[0]][path[1]], np.float64)
    g = np.asarray(grads[path[0]][path[1]], np.float64) * min(1.0, 1.0 / norm)
    m_hat = (1 - 0.9) * g / (1 - 0.9)
    v_hat = (1 - 0.95) * g ** 2 / (1 - 0.95)
    want = p - 0.1 * (m_hat / (np.sqrt(v_hat) + 1e-8) + decay * p)
    np.testing.assert_allclose(new[path[0]][path[1]], want, rtol=1e-5, atol=1e-6)
