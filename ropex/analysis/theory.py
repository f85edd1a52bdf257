"""The paper's theoretical claims as runnable, numerical checks.

Each check returns a :class:`TheoryResult` (numbers + a matplotlib figure + a sentence of
explanation). ``python -m ropex.analyze theory --out DIR`` runs them all and writes a report.
Rotations use the registry's encodings (``ropex.model.positional``); the semantic-channel check,
which needs distances far beyond float32 angle precision, uses the float64 reference rotation
of :mod:`ropex.analysis.chunks` with the registry encoding's own frequencies.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ropex import model as model_lib
from ropex import paths
from ropex.model import positional
from ropex.analysis import chunks as chunks_lib
from ropex.analysis import figures
from ropex.analysis.document import Doc, rel
from ropex.model.config import ModelConfig, model_block, pe_block
from ropex.errors import ConfigError


@dataclasses.dataclass
class TheoryResult:
  name: str
  title: str
  text: str
  numbers: dict[str, Any]
  figure: Any


def _rope(head_dim: int, theta: float, kind: str = 'rope', **fields):
  return positional.from_config(dict(kind=kind, max_wavelength=theta, **fields), head_dim)


def _apply(pe, x_TNH: np.ndarray, positions_L: np.ndarray) -> np.ndarray:
  """The registry encoding on one batch row, back to numpy float64."""
  out = pe(jnp.asarray(x_TNH, jnp.float32)[None], jnp.asarray(positions_L, jnp.int32)[None])
  return np.asarray(out[0], np.float64)


def rope_no_decay(head_dim: int = 64, theta: float = 10_000.0, draws: int = 4000,
                  max_distance: int = 4096, seed: int = 0) -> TheoryResult:
  """For q, k ~ N(0, I) independent, E[<R_i q, R_j k>] = 0 at every distance j - i: RoPE has
  no built-in decay. The Monte-Carlo mean carries a standard error sqrt(d / draws) (the score
  of one draw has variance d, as rotations are orthogonal). All-ones vectors instead give
  ``sum_k 2 cos(r g_k)``, which decays (with oscillations) from d."""
  rng = np.random.default_rng(seed)
  pe = _rope(head_dim, theta)
  distances = np.unique(np.concatenate([np.arange(32), np.geomspace(
      32, max_distance, 40).astype(int)]))
  q_ND = rng.standard_normal((draws, head_dim))
  k_ND = rng.standard_normal((draws, head_dim))
  q_rot = _apply(pe, q_ND[None], np.zeros(1))[0]
  k_RND = _apply(pe, np.broadcast_to(k_ND, (len(distances),) + k_ND.shape), distances)
  scores_RN = np.einsum('rnd,nd->rn', k_RND, q_rot)
  mean_R = scores_RN.mean(axis=1)
  stderr_R = scores_RN.std(axis=1, ddof=1) / math.sqrt(draws)
  analytic = math.sqrt(head_dim / draws)
  ones = np.ones((1, 1, head_dim))
  ones_R = np.einsum('rd,d->r', _apply(pe, np.broadcast_to(ones[0], (len(distances), 1,
                                                                     head_dim)), distances)[:, 0],
                     _apply(pe, ones, np.zeros(1))[0, 0])
  fig, axes = figures.new(2, 1, width=4.6, height=3.2)
  ax = axes[0, 0]
  ax.fill_between(distances, -3 * analytic, 3 * analytic, color='C0', alpha=0.2,
                  label='±3 standard errors')
  ax.plot(distances, mean_R, 'C0.-', ms=3, label='Gaussian q, k: mean score')
  ax.set_xscale('symlog', linthresh=32)
  ax.set_xlabel('distance j - i')
  ax.set_title(f'{draws} draws, d={head_dim}, θ={theta:g}', fontsize=9)
  ax.set_ylim(-6 * analytic, 6 * analytic)
  figures.legend_beside(ax)
  ax = axes[0, 1]
  ax.plot(distances, ones_R / head_dim, 'C1.-', ms=3)
  ax.set_xscale('symlog', linthresh=32)
  ax.set_xlabel('distance j - i')
  ax.set_title('all-ones q, k: score / d (decays)', fontsize=9)
  return TheoryResult(
      'no_decay', 'RoPE does not decay for random vectors',
      'Gaussian queries and keys score zero on average at every distance (the mean stays '
      'inside the Monte-Carlo band), while all-ones vectors give the decaying curve usually '
      'quoted as RoPE\'s "long-term decay".',
      dict(head_dim=head_dim, theta=theta, draws=draws, distances=distances.tolist(),
           mean=mean_R.tolist(), stderr=stderr_R.tolist(), analytic_stderr=analytic,
           max_abs_z=float(np.max(np.abs(mean_R)) / analytic), ones_score=ones_R.tolist()),
      fig)


def construct_head(kind: str, eps: float, length: int = 64, head_dim: int = 64,
                   theta: float = 10_000.0) -> dict:
  """A RoPE head whose attention on its target (itself for ``diagonal``, the previous token
  for ``previous``) is >= 1 - eps for every query of a ``length``-token sequence.

  All tokens share one query ``q = a e`` and one key: ``k = q`` (diagonal) or ``k = R(g0) q``
  (previous), with ``e`` in the highest-frequency chunk (``g0 = 1`` rad/token). Then the
  logit of key ``s`` for query ``t`` is ``c cos((s - target) g0)``, ``c = a^2 / sqrt(d)``. With
  ``delta = min_{1<=r<length} 1 - cos(r g0) > 0`` the target weight is at least
  ``1 / (1 + (length - 1) exp(-c delta))``, so ``c = log((length - 1)(1 - eps) / eps) / delta``
  suffices. The returned attention is computed with the registry's RoPE."""
  if kind not in ('diagonal', 'previous'):
    raise ConfigError(f'kind={kind!r} is not allowed; allowed: diagonal, previous')
  pe = _rope(head_dim, theta)
  layout = chunks_lib.chunk_layout(pe, head_dim)
  g0 = layout.freqs_C[0]
  r = np.arange(1, length)
  delta = float(np.min(1.0 - np.cos(r * g0)))
  c = math.log((length - 1) * (1 - eps) / eps) / delta
  a = math.sqrt(c * math.sqrt(head_dim))
  q_H = np.zeros(head_dim)
  q_H[layout.dims_C2[0, 0]] = a
  k_H = q_H if kind == 'diagonal' else chunks_lib.rotate(q_H, np.asarray(1.0), layout)
  positions = np.arange(length)
  q_TH = _apply(pe, np.broadcast_to(q_H, (length, 1, head_dim)), positions)[:, 0]
  k_SH = _apply(pe, np.broadcast_to(k_H, (length, 1, head_dim)), positions)[:, 0]
  attn_TS = _softmax_causal(q_TH @ k_SH.T / math.sqrt(head_dim))
  t = np.arange(1, length)
  target = attn_TS[t, t] if kind == 'diagonal' else attn_TS[t, t - 1]
  return dict(kind=kind, eps=eps, length=length, head_dim=head_dim, theta=theta, delta=delta,
              logit_scale=c, norm=a, q=q_H, k=k_H, attention=attn_TS,
              min_target_attention=float(target.min()))


def _softmax_causal(logits_TS: np.ndarray) -> np.ndarray:
  T = logits_TS.shape[0]
  masked = np.where(np.tril(np.ones((T, T), bool)), logits_TS, -np.inf)
  masked = masked - masked.max(axis=1, keepdims=True)
  w = np.exp(masked)
  return w / w.sum(axis=1, keepdims=True)


def positional_heads(eps_values=(0.1, 0.01, 0.001), length: int = 64,
                     head_dim: int = 64) -> TheoryResult:
  """Diagonal and previous-token RoPE heads built to reach attention > 1 - eps."""
  rows = [construct_head(k, e, length, head_dim) for k in ('diagonal', 'previous')
          for e in eps_values]
  fig, axes = figures.new(3, 1, width=3.6, height=3.2)
  for ax, kind in zip(axes[0][:2], ('diagonal', 'previous')):
    row = next(r for r in rows if r['kind'] == kind and r['eps'] == eps_values[-1])
    figures.heatmap(ax, row['attention'][:24, :24], f'{kind} head, eps={row["eps"]:g}',
                    'key position', 'query position', cmap='magma', vmin=0, vmax=1)
  ax = axes[0, 2]
  scales = np.geomspace(0.05, 1.5, 25)
  base = rows[len(eps_values) - 1]
  mins = []
  for s in scales:
    q = base['q'] * math.sqrt(s)
    pe = _rope(head_dim, base['theta'])
    pos = np.arange(length)
    q_TH = _apply(pe, np.broadcast_to(q, (length, 1, head_dim)), pos)[:, 0]
    attn = _softmax_causal(q_TH @ q_TH.T / math.sqrt(head_dim))
    mins.append(float(np.min(np.diag(attn)[1:])))
  ax.plot(scales * base['logit_scale'], mins, 'C0.-')
  ax.axhline(1 - base['eps'], color='k', ls='--', lw=1, label=f'1 - eps ({base["eps"]:g})')
  ax.axvline(base['logit_scale'], color='C3', ls=':', lw=1, label='constructed c')
  ax.set_xscale('log')
  ax.set_xlabel('logit scale c = |q|^2 / sqrt(d)')
  ax.set_title('diagonal head: min self-attention', fontsize=9)
  figures.legend_beside(ax)
  numbers = [{k: r[k] for k in ('kind', 'eps', 'delta', 'logit_scale', 'norm',
                                'min_target_attention')} for r in rows]
  return TheoryResult(
      'positional_heads', 'RoPE can build diagonal and previous-token heads',
      f'Using only the highest frequency (1 rad/token) and a large norm, a RoPE head puts '
      f'more than 1 - eps of its attention on the token itself or on the previous token at '
      f'every position of a {length}-token sequence.', dict(heads=numbers, length=length,
                                                           head_dim=head_dim), fig)


# The bound is exact in real arithmetic; in float32 XLA may round the keys of the two equal x
# tokens differently (jax 0.12's CPU compiler does, by an ulp, in ~1/6 of the draws), and with
# sharpened logits of ~1e3 that moves the self-attention to 1/2 + ~3e-5. A model leaking
# position under NoPE exceeds 1/2 by far more (RoPE: ~25% of the heads above 0.51).
NOPE_BOUND_SLACK = 1e-4


def _bos_x_x_self_attention(pe_cfg, draws: int, seed: int) -> np.ndarray:
  """Self-attention of the last token of [b, x, x] in the first layer of random ropex
  models, one per draw: N(0, 1/fan_in) weights, N(0, 0.1) norm scales, query/key weights
  scaled by a random factor in [1, 30] so that many draws have sharp attention."""
  cfg = ModelConfig.from_config(model_block(
      'tiny', pe=pe_cfg, vocab_size=16, num_layers=1, embed_dim=32, num_heads=2,
      num_kv_heads=1, head_dim=16, hidden_dim=32, scan_layers=False))
  model = model_lib.Transformer(cfg)
  rng = np.random.default_rng(seed)
  b = rng.integers(0, 16, draws)
  x = (b + rng.integers(1, 16, draws)) % 16
  tokens_D13 = np.stack([b, x, x], axis=-1)[:, None, :].astype(np.int32)
  scale_D = np.exp(rng.uniform(0, math.log(30.0), draws))

  def draw(path, leaf):
    name = jax.tree_util.keystr(path)
    shape = (draws,) + leaf.shape
    if 'scale' in name:
      return 0.1 * rng.standard_normal(shape)
    fan_in = cfg.embed_dim if 'input_embedding' in name else leaf.shape[-2]
    w = rng.standard_normal(shape) / math.sqrt(fan_in)
    if 'q_einsum' in name:
      return w * scale_D.reshape((-1,) + (1,) * len(leaf.shape))
    if 'kv_einsum' in name:   # scale keys only, not values
      return w * np.stack([scale_D, np.ones(draws)], -1).reshape((draws, 2) + (1,) * (
          len(leaf.shape) - 1))
    return w

  params_D = jax.tree_util.tree_map_with_path(
      lambda p, l: jnp.asarray(draw(p, l), jnp.float32),
      nn.unbox(model_lib.abstract_params(cfg)))

  def one(params, tokens_13):
    _, state = model.apply({'params': params}, tokens_13, mutable=['intermediates'])
    return state['intermediates']['layer_0']['attn']['probs_BNTS'][0][0, :, 2, 2]

  return np.asarray(jax.jit(jax.vmap(one))(params_D, jnp.asarray(tokens_D13)), np.float64)


def nope_self_attention_bound(draws: int = 2000, seed: int = 0,
                              eps: float = 0.01) -> TheoryResult:
  """NoPE cannot build a diagonal head: on ``[BOS, x, x]`` the last token's self-attention is
  at most 1/2.

  Argument: in the first layer a token's query and key depend on the token alone (embedding
  -> RMSNorm -> projection; no position enters under NoPE). Positions 1 and 2 hold the same
  token, so their keys are equal and the last query gives them the same logit ``s``; with the
  BOS logit ``s0``, its self-attention is ``e^s / (e^s0 + 2 e^s) < 1/2`` for any weights. The
  check draws random ropex models (random weights, attention sharpened by up to 30x) and
  records the largest self-attention; RoPE models on the same inputs exceed 1/2, and the
  constructed RoPE diagonal head reaches 1 - eps."""
  nope = _bos_x_x_self_attention(pe_block('none'), draws, seed)
  rope = _bos_x_x_self_attention(pe_block('rope', max_wavelength=10_000), draws, seed)
  built = construct_head('diagonal', eps, length=3, head_dim=16)
  fig, axes = figures.new(1, 1, width=5.5, height=3.4)
  ax = axes[0, 0]
  bins = np.concatenate([[0.0], np.linspace(0, 1, 41)[1:] + 1e-6])  # 1/2 closes a bin
  ax.hist(nope.reshape(-1), bins, alpha=0.6, label='NoPE (random models)')
  ax.hist(rope.reshape(-1), bins, alpha=0.6, label='RoPE (random models)')
  ax.axvline(0.5, color='k', ls='--', lw=1, label='1/2')
  ax.axvline(built['attention'][2, 2], color='C3', ls=':', lw=1.5, label='RoPE constructed')
  ax.set_xlabel('self-attention of the last token of [BOS, x, x]')
  ax.set_yscale('log')
  figures.legend_beside(ax)
  return TheoryResult(
      'nope_bound', 'NoPE cannot build a diagonal head',
      'On [BOS, x, x] the two x tokens get identical keys without positions, so the last '
      'token can never give itself more than half of its attention in the first layer; RoPE '
      'breaks the tie.',
      dict(draws=draws, nope_max_self_attention=float(nope.max()),
           rope_max_self_attention=float(rope.max()),
           rope_fraction_above_half=float((rope > 0.5).mean()),
           constructed_rope_self_attention=float(built['attention'][2, 2])), fig)


def breaking_distance(pe, head_dim: int, similarity: float, max_distance: int) -> dict:
  """A semantic channel in the lowest-frequency chunk of ``pe``: the query ``q`` and the target
  key are the same unit vector; a distractor key has cosine ``similarity`` with ``q`` and sits
  at distance 0 (the query's own position). Returns the first distance ``r`` at which the
  target (at distance ``r``) scores below the distractor, or None up to ``max_distance``."""
  layout = chunks_lib.chunk_layout(pe, head_dim)
  c = int(layout.by_frequency()[-1])
  channel = chunks_lib.ChunkLayout(np.asarray([[0, 1]]), layout.freqs_C[c:c + 1])
  phi = math.acos(similarity)
  q, target, distractor = np.array([1.0, 0.0]), np.array([1.0, 0.0]), np.array(
      [math.cos(phi), math.sin(phi)])
  r = np.arange(max_distance + 1)
  at = float(max_distance)
  q_rot = chunks_lib.rotate(q, np.asarray(at), channel)
  target_R = chunks_lib.rotate(target[None], at - r, channel) @ q_rot
  distractor_score = float(chunks_lib.rotate(distractor, np.asarray(at), channel) @ q_rot)
  broken = np.flatnonzero(target_R[1:] < distractor_score)
  return dict(chunk=c, frequency=float(layout.freqs_C[c]), distractor_score=distractor_score,
              distance=int(broken[0] + 1) if broken.size else None, distances=r,
              target_scores=target_R)


def semantic_channels(head_dim: int = 256, similarity: float = 0.9,
                      max_distance: int = 1_000_000, fraction: float = 0.75) -> TheoryResult:
  """Semantic channels on the lowest frequency break over distance (RoPE theta 10k, 500k);
  the unrotated lowest chunk of p-RoPE never does."""
  channels = {'RoPE θ=10k': _rope(head_dim, 10_000.0),
              'RoPE θ=500k': _rope(head_dim, 500_000.0),
              f'p-RoPE p={fraction:g} (unrotated)': _rope(head_dim, 10_000.0, 'prope',
                                                         fraction=fraction)}
  fig, axes = figures.new(1, 1, width=6.0, height=3.6)
  ax = axes[0, 0]
  numbers = {}
  for i, (name, pe) in enumerate(channels.items()):
    res = breaking_distance(pe, head_dim, similarity, max_distance)
    step = max(1, max_distance // 20000)
    ax.plot(res['distances'][1::step], res['target_scores'][1::step], f'C{i}', label=name)
    if res['distance'] is not None:
      ax.axvline(res['distance'], color=f'C{i}', ls=':', lw=1)
    numbers[name] = dict(chunk=res['chunk'], frequency=res['frequency'],
                         breaking_distance=res['distance'])
  ax.axhline(similarity, color='k', ls='--', lw=1, label=f'distractor ({similarity:g})')
  ax.set_xscale('log')
  ax.set_xlabel('distance of the target key')
  ax.set_ylabel('target score')
  figures.legend_beside(ax)
  return TheoryResult(
      'semantic_channels', 'Semantic channels break over distance under RoPE',
      f'A query matches its target exactly in the lowest-frequency chunk (d={head_dim}); a '
      f'distractor next to the query matches with cosine {similarity:g}. Rotation makes the '
      f'target lose to the distractor beyond the breaking distance; an unrotated channel '
      f'never breaks (checked to {max_distance:,} tokens).',
      dict(head_dim=head_dim, similarity=similarity, max_distance=max_distance,
           channels=numbers), fig)


CHECKS = (rope_no_decay, positional_heads, nope_self_attention_bound, semantic_channels)


def run_all(out_dir: str, html: bool = True, checks=CHECKS) -> list[TheoryResult]:
  """Runs every check (``checks``: zero-argument callables, default :data:`CHECKS`); writes
  ``theory.md`` (+ html), ``theory.json`` and the figures into ``out_dir``."""
  results = [check() for check in checks]
  doc = Doc('ropex: the paper\'s theory, checked numerically')
  numbers = {}
  for result in results:
    path = figures.save(result.figure, os.path.join(out_dir, 'figures', f'{result.name}.png'))
    doc.h2(result.title).p(result.text)
    doc.bullets(summary_lines(result))
    doc.image(rel(path, out_dir), result.title)
    numbers[result.name] = result.numbers
  paths.path(os.path.join(out_dir, 'theory.json')).write_text(json.dumps(numbers, indent=1))
  doc.write(out_dir, 'theory', html_too=html)
  return results


def summary_lines(result: TheoryResult) -> list[str]:
  n = result.numbers
  if result.name == 'no_decay':
    return [f"largest |mean| / standard error over {len(n['distances'])} distances: "
            f"{n['max_abs_z']:.2f} (standard error sqrt(d/draws) = {n['analytic_stderr']:.3f})",
            f"all-ones score: {n['ones_score'][0]:.1f} at distance 0, "
            f"{n['ones_score'][-1]:.2f} at {n['distances'][-1]}"]
  if result.name == 'positional_heads':
    return [f"{h['kind']} head, eps={h['eps']:g}: min target attention "
            f"{h['min_target_attention']:.6f} (|q| = {h['norm']:.1f})" for h in n['heads']]
  if result.name == 'nope_bound':
    return [f"NoPE: max self-attention over {n['draws']} random models "
            f"{n['nope_max_self_attention']:.6f} (<= 1/2 up to float32 rounding)",
            f"RoPE: max {n['rope_max_self_attention']:.4f}, "
            f"{100 * n['rope_fraction_above_half']:.1f}% of heads above 1/2; constructed "
            f"{n['constructed_rope_self_attention']:.4f}"]
  return [f"{name}: breaking distance {c['breaking_distance'] or 'never'} "
          f"(chunk {c['chunk']}, {c['frequency']:.3g} rad/token)"
          for name, c in n['channels'].items()]
