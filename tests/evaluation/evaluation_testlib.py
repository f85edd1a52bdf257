"""Small models for the evaluation tests: a micro config, random init, and a hand-built model
that copies the token ``delta`` positions back (an oracle with a known accuracy)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ropex.config import defaults as config_base
from ropex import model as model_lib
from ropex.model import config as model_config
from ropex.model.config import ModelConfig


def micro_config(pe_kind='rope', vocab=260, **pe_fields):
  pe = model_config.pe_block(pe_kind, **pe_fields)
  c = config_base.base_config('tiny', pe=pe)
  c.model.update(vocab_size=vocab, num_layers=1, embed_dim=32, num_heads=2, num_kv_heads=1,
                 head_dim=16, hidden_dim=32)
  c.name = f'micro_{pe_kind}'
  c.data.tasks = ('copy_offset', 'prev_token', 'assoc_recall', 'induction')
  return c


def init_params(config, seed=0):
  cfg = ModelConfig.from_config(config.model)
  init = jax.jit(model_lib.Transformer(cfg).init)
  return nn.unbox(init(jax.random.key(seed), jnp.zeros((1, 8), jnp.int32))['params'])


def dense_token_stats(config, params, rows):
  """Independent reference: full dense logits via ``Transformer.__call__``, numpy loss/argmax."""
  cfg = ModelConfig.from_config(config.model)
  logits = model_lib.Transformer(cfg).apply(
      {'params': params}, jnp.asarray(rows['inputs']), jnp.asarray(rows['positions']),
      jnp.asarray(rows['segment_ids']))
  logits = np.asarray(logits, np.float64)
  m = logits.max(-1, keepdims=True)
  log_z = (m + np.log(np.exp(logits - m).sum(-1, keepdims=True)))[..., 0]
  target = np.take_along_axis(logits, rows['targets'][..., None], -1)[..., 0]
  return log_z - target, logits.argmax(-1) == rows['targets']


COPY_VOCAB, COPY_DIM = 96, 128


def copier(delta: int, gain: float = 8.0):
  """(config, params) of a one-layer RoPE model whose prediction at position i is the input
  token at position i - delta (for i >= delta).

  Every embedding row is ``e_bias + e_{1+t}`` (same norm), so after RMSNorm the bias dim is a
  constant. The query is that constant on every rotary chunk (1, 0); the key is (1, 0) rotated
  by ``delta * g_k``, so the score of key j is ``sum_k cos((j + delta - i) g_k)`` (x ``gain``),
  maximal only at j = i - delta. Values carry the token one-hot, the output writes it back with
  a large gain, and the MLP is zero."""
  c = micro_config('rope', vocab=COPY_VOCAB, max_wavelength=10_000)
  c.model.update(embed_dim=COPY_DIM, num_heads=1, num_kv_heads=1, head_dim=COPY_DIM,
                 hidden_dim=4)
  c.name = f'copier_{delta}'
  p = init_params(c)
  D = H = COPY_DIM
  V = COPY_VOCAB
  half = H // 2
  g_K = 10_000.0 ** (-2.0 * np.arange(half) / H)
  emb = np.zeros((V, D), np.float32)
  emb[:, 0] = 1.0
  emb[np.arange(V), 1 + np.arange(V)] = 1.0
  qkv = np.zeros((3, 1, D, H), np.float32)
  qkv[0, 0, 0, :half] = gain
  qkv[1, 0, 0, :half] = np.cos(delta * g_K)
  qkv[1, 0, 0, half:] = np.sin(delta * g_K)
  qkv[2, 0, 1 + np.arange(V), np.arange(V)] = 1.0
  out = np.zeros((1, H, D), np.float32)
  out[0, np.arange(V), 1 + np.arange(V)] = 100.0
  layer = p['layers']['layer_0']
  layer['attn']['qkv_einsum']['w'] = jnp.asarray(qkv[None])
  layer['attn']['attn_vec_einsum']['w'] = jnp.asarray(out[None])
  layer['mlp']['linear'] = jnp.zeros_like(layer['mlp']['linear'])
  p['embedder']['input_embedding'] = jnp.asarray(emb)
  return c, p
