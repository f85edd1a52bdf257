"""Hugging Face tensor names -> ropex parameter paths, with the transform of each.

One rule per ropex parameter of the unscanned (official Gemma) tree: the HF tensors it is made
of (names without the checkpoint's prefix, e.g. ``model.``) and a numpy function of them. HF
linear weights are ``[out, in]``: ``q_proj [N*H, D]``, ``k_proj``/``v_proj [K*H, D]``,
``o_proj [D, N*H]``, ``gate_proj``/``up_proj [F, D]``, ``down_proj [D, F]``. Both sides pair
rotary dims half-split, so no permutation. Which HF norm fills which ropex norm is the family's
(:mod:`ropex.model.io.hf_families`).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from ropex.model.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class Rule:
  path: tuple[str, ...]          # ropex parameter path
  sources: tuple[str, ...]       # HF tensor names (no prefix)
  transform: Callable[..., np.ndarray]


def _heads(n: int, H: int):
  """[n*H, D] -> [n, D, H]."""
  return lambda w: w.reshape(n, H, -1).transpose(0, 2, 1)


def _stacked(*fns):
  return lambda *ws: np.stack([f(w) for f, w in zip(fns, ws)])


def _bias(n: int, H: int):
  return lambda b: b.reshape(n, H)


def _same(w):
  return w


def _transposed(w):
  return w.T


def _attention_rules(cfg: ModelConfig, i: int, spec, hf: str) -> list[Rule]:
  N, D = cfg.num_heads, cfg.embed_dim
  K, H = cfg.attention_shape(spec)
  at = ('layer_' + str(i), 'attn')
  q, k, v = (f'{hf}.self_attn.{n}_proj' for n in 'qkv')
  own = spec.kv_source < 0
  rules = [Rule(at + ('attn_vec_einsum', 'w'), (f'{hf}.self_attn.o_proj.weight',),
                lambda w, N=N, H=H, D=D: w.T.reshape(N, H, D))]
  if N == K and own and not spec.k_eq_v:
    rules.append(Rule(at + ('qkv_einsum', 'w'), (q + '.weight', k + '.weight', v + '.weight'),
                      _stacked(*[_heads(N, H)] * 3)))
    if cfg.qkv_bias:
      rules.append(Rule(at + ('qkv_einsum', 'b'), (q + '.bias', k + '.bias', v + '.bias'),
                        _stacked(*[_bias(N, H)] * 3)))
  else:
    rules.append(Rule(at + ('q_einsum', 'w'), (q + '.weight',), _heads(N, H)))
    if cfg.qkv_bias:
      rules.append(Rule(at + ('q_einsum', 'b'), (q + '.bias',), _bias(N, H)))
    if own and spec.k_eq_v:
      rules.append(Rule(at + ('k_einsum', 'w'), (k + '.weight',), _heads(K, H)))
    elif own:
      rules.append(Rule(at + ('kv_einsum', 'w'), (k + '.weight', v + '.weight'),
                        _stacked(_heads(K, H), _heads(K, H))))
      if cfg.qkv_bias:
        rules.append(Rule(at + ('kv_einsum', 'b'), (k + '.bias', v + '.bias'),
                          _stacked(_bias(K, H), _bias(K, H))))
  if cfg.qk_norm:
    rules.append(Rule(at + ('_query_norm', 'scale'), (f'{hf}.self_attn.q_norm.weight',), _same))
    if own:
      rules.append(Rule(at + ('_key_norm', 'scale'), (f'{hf}.self_attn.k_norm.weight',), _same))
  return rules


def _layer_rules(cfg: ModelConfig, i: int, spec, norms: dict) -> list[Rule]:
  hf, at = f'layers.{i}', ('layer_' + str(i),)
  rules = _attention_rules(cfg, i, spec, hf)
  rules += [
      Rule(at + ('mlp', 'gating_einsum'), (f'{hf}.mlp.gate_proj.weight', f'{hf}.mlp.up_proj.weight'),
           _stacked(_transposed, _transposed)),
      Rule(at + ('mlp', 'linear'), (f'{hf}.mlp.down_proj.weight',), _transposed)]
  present = {'pre_attention_norm', 'pre_ffw_norm'}
  present |= {n for n, on in (('post_attention_norm', cfg.post_attention_norm),
                              ('post_ffw_norm', cfg.post_ffw_norm)) if on}
  rules += [Rule(at + (ours, 'scale'), (f'{hf}.{theirs}.weight',), _same)
            for theirs, ours in norms.items() if ours in present]
  if cfg.layer_scalar:
    rules.append(Rule(at + ('layer_scalar',), (f'{hf}.layer_scalar',), _same))
  if cfg.hidden_size_per_layer_input:
    p = at + ('per_layer_input',)
    rules += [Rule(p + ('gate',), (f'{hf}.per_layer_input_gate.weight',), _transposed),
              Rule(p + ('projection',), (f'{hf}.per_layer_projection.weight',), _transposed),
              Rule(p + ('post_norm', 'scale'), (f'{hf}.post_per_layer_input_norm.weight',),
                   _same)]
  return rules


def rules(cfg: ModelConfig, norms: dict) -> list[Rule]:
  """Every ropex parameter's rule (``norms``: the family's HF -> ropex layer norms)."""
  out = [Rule(('embedder', 'input_embedding'), ('embed_tokens.weight',), _same),
         Rule(('final_norm', 'scale'), ('norm.weight',), _same)]
  if not cfg.tie_word_embeddings:
    out.append(Rule(('embedder', 'output_embedding'), ('lm_head.weight',), _same))
  if cfg.hidden_size_per_layer_input:
    p = ('per_layer_inputs',)
    out += [Rule(p + ('input_embedding',), ('embed_tokens_per_layer.weight',), _same),
            Rule(p + ('model_projection',), ('per_layer_model_projection.weight',), _transposed),
            Rule(p + ('projection_norm', 'scale'), ('per_layer_projection_norm.weight',), _same)]
  for i, spec in enumerate(cfg.layers):
    out += _layer_rules(cfg, i, spec, norms)
  return out
