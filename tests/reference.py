"""The tests' one independent numpy reference: RoPE and the Gemma (v1) forward pass, float64.

Written from the papers (RoFormer; Gemma), not from ropex's code, so that a test comparing the
two can fail. Every test that needs a numpy RoPE or forward pass imports it from here.
"""

import math

import numpy as np


def rope_frequencies(head_dim: int, theta: float = 10_000.0, denominator: int | None = None):
  """Angular frequencies g_k = theta^(-2k / denominator) of chunks k = 0 .. head_dim/2 - 1
  (the denominator is the head dim unless given)."""
  return theta ** (-2.0 * np.arange(head_dim // 2) / (denominator or head_dim))


def rotate_pairs(x, positions, pairs, freqs):
  """Rotates dims (i, j) of each pair by ``position * freq``; other dims unchanged. ``x`` is
  [..., H]; ``positions`` has x's leading shape up to the axis before the heads or H."""
  x = np.asarray(x, np.float64)
  pos = np.asarray(positions, np.float64)
  pos = pos.reshape(pos.shape + (1,) * (x.ndim - 1 - pos.ndim))
  out = x.copy()
  for (i, j), g in zip(pairs, freqs):
    a = pos * g
    out[..., i] = x[..., i] * np.cos(a) - x[..., j] * np.sin(a)
    out[..., j] = x[..., j] * np.cos(a) + x[..., i] * np.sin(a)
  return out


def half_pairs(head_dim: int):
  """Gemma's half-split pairing: chunk k = dims (k, k + H/2)."""
  return [(k, k + head_dim // 2) for k in range(head_dim // 2)]


def rope(x, positions, theta: float = 10_000.0):
  """Half-split RoPE of ``x`` [..., H] at ``positions`` (x's leading axes)."""
  H = x.shape[-1]
  return rotate_pairs(x, positions, half_pairs(H), rope_frequencies(H, theta))


def fope(x, positions, kv_head, cos_coef, sin_coef, theta: float, train_length: int):
  """FoPE (Hua et al. 2412.17739, with the authors' defaults) of one head's ``x`` [B, T, H] at
  ``positions`` [B, T], read from the paper's formula, float64: frequencies below
  ``2*pi/train_length`` are dropped from the basis, the first ``M = min(D, H/4)`` chunks turn
  by the Fourier series ``cos_m(n) = sum_j A[j, m] cos(w_j n)``, ``sin_m(n) = sum_j B[j, m]
  sin(w_j n)`` over the ``D`` kept frequencies, the remaining chunks by ``cos = sin = 1``.
  ``cos_coef`` / ``sin_coef`` are [K, D, M]; ``kv_head`` picks this head's coefficients."""
  x = np.asarray(x, np.float64)
  H = x.shape[-1]
  w = rope_frequencies(H, theta)
  w = w[w >= 2 * math.pi / train_length]
  M = min(len(w), H // 4)
  A = np.asarray(cos_coef, np.float64)[kv_head]
  B = np.asarray(sin_coef, np.float64)[kv_head]
  out = x.copy()
  n = np.asarray(positions, np.float64)
  for m in range(H // 2):
    if m < M:
      c = sum(A[j, m] * np.cos(w[j] * n) for j in range(len(w)))
      s = sum(B[j, m] * np.sin(w[j] * n) for j in range(len(w)))
    else:
      c = s = np.ones_like(n)
    i, k = m, m + H // 2
    out[..., i] = x[..., i] * c - x[..., k] * s
    out[..., k] = x[..., k] * c + x[..., i] * s
  return out


def rms_norm(x, scale):
  return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + 1e-6) * (1 + scale)


def gelu_tanh(x):
  return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def _qkv(attn):
  if 'qkv_einsum' in attn:
    wq, wk, wv = attn['qkv_einsum']['w']
  else:
    wq, (wk, wv) = attn['q_einsum']['w'], attn['kv_einsum']['w']
  return wq, wk, wv


def gemma_forward(params, tokens_BT, num_layers: int, positions_BT=None, segment_ids_BT=None,
                  theta: float = 10_000.0):
  """Logits [B, T, V] of Gemma v1 with the official (unscanned) parameter tree: embedding times
  sqrt(D), RMSNorm(1 + scale), half-split RoPE, MHA/GQA/MQA causal attention (within segments)
  with 1/sqrt(H) scaling, tanh-GELU GeGLU, tied output embedding."""
  p = _float64(params)
  tokens_BT = np.asarray(tokens_BT)
  B, T = tokens_BT.shape
  positions_BT = np.broadcast_to(np.arange(T), (B, T)) if positions_BT is None else positions_BT
  segments_BT = np.zeros((B, T)) if segment_ids_BT is None else np.asarray(segment_ids_BT)
  allowed_BTS = np.tril(np.ones((T, T), bool))[None] & (segments_BT[:, :, None] ==
                                                        segments_BT[:, None, :])
  emb_VD = p['embedder']['input_embedding']
  x = emb_VD[tokens_BT] * math.sqrt(emb_VD.shape[1])
  for i in range(num_layers):
    layer = p[f'layer_{i}']
    wq, wk, wv = _qkv(layer['attn'])
    h = rms_norm(x, layer['pre_attention_norm']['scale'])
    q_BTNH = rope(np.einsum('btd,ndh->btnh', h, wq), positions_BT, theta)
    k_BSKH = rope(np.einsum('btd,kdh->btkh', h, wk), positions_BT, theta)
    v_BSKH = np.einsum('btd,kdh->btkh', h, wv)
    group = q_BTNH.shape[2] // k_BSKH.shape[2]
    k_BSNH, v_BSNH = np.repeat(k_BSKH, group, 2), np.repeat(v_BSKH, group, 2)
    logits = np.einsum('btnh,bsnh->bnts', q_BTNH, k_BSNH) / math.sqrt(q_BTNH.shape[-1])
    logits = np.where(allowed_BTS[:, None], logits, -np.inf)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    out_BTNH = np.einsum('bnts,bsnh->btnh', probs, v_BSNH)
    x = x + np.einsum('btnh,nhd->btd', out_BTNH, layer['attn']['attn_vec_einsum']['w'])
    h = rms_norm(x, layer['pre_ffw_norm']['scale'])
    gate = layer['mlp']['gating_einsum']
    x = x + (gelu_tanh(h @ gate[0]) * (h @ gate[1])) @ layer['mlp']['linear']
  return rms_norm(x, p['final_norm']['scale']) @ emb_VD.T


def token_nll(logits_BTV, targets_BT):
  """Per-token cross-entropy, float64."""
  logits = np.asarray(logits_BTV, np.float64)
  top = logits.max(-1, keepdims=True)
  log_z = np.log(np.exp(logits - top).sum(-1)) + top[..., 0]
  return log_z - np.take_along_axis(logits, np.asarray(targets_BT)[..., None], -1)[..., 0]


def _float64(tree):
  if isinstance(tree, dict):
    return {k: _float64(v) for k, v in tree.items()}
  return np.asarray(tree, np.float64)
