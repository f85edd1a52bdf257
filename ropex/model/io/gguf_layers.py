"""llama.cpp's per-layer GGUF metadata (its Gemma 4 scheme) -> transformers' Gemma 4 config fields.

The facts, from llama.cpp (ggml-org/llama.cpp): ``conversion/gemma.py`` (``Gemma4Model``, a
``Gemma3Model`` registered for ``Gemma4ForConditionalGeneration`` / ``Gemma4ForCausalLM``,
``set_gguf_parameters`` / ``generate_extra_tensors``; the generic keys from ``TextModel`` in
``conversion/base.py``), ``src/models/gemma4.cpp`` (``load_arch_hparams`` /
``load_arch_tensors``) and ``src/models/gemma4-iswa.cpp`` (the graph):

* ``<arch>.attention.sliding_window_pattern``: one bool per layer, true = sliding
  (transformers' ``layer_types``); ``attention.sliding_window`` the window.
* head dims per layer type: ``attention.key_length`` / ``value_length`` = ``global_head_dim``
  (full layers), ``key_length_swa`` / ``value_length_swa`` = ``head_dim`` (sliding); llama.cpp
  requires key = value length for both.
* ``attention.head_count_kv``: one count per layer when the config has
  ``num_global_key_value_heads`` (sliding layers ``num_key_value_heads``, full layers the
  global count), else one number.
* ``attention_k_eq_v`` is not stored: full layers simply have no ``attn_v`` tensor and the graph
  uses K as V when ``attn_v`` is absent. transformers shares K as V on full layers only, and
  only then uses ``num_global_key_value_heads``.
* ``attention.shared_kv_layers`` = ``num_kv_shared_layers``: the last layers hold no K/V (nor
  k_norm) and reuse an earlier layer's cache.
* ``feed_forward_length``: with ``use_double_wide_mlp`` one length per layer, doubled on the
  KV-shared layers; else one number.
* ``embedding_length_per_layer_input`` = ``hidden_size_per_layer_input`` (0: none); the
  per-layer tensors (``per_layer_token_embd``, ``per_layer_model_proj``,
  ``per_layer_proj_norm``, ``blk.N.inp_gate`` / ``proj`` / ``post_norm``) are stored as
  transformers has them; ``layer_scalar`` becomes ``blk.N.layer_output_scale.weight``.
* RoPE: ``rope.freq_base`` is the full layers' θ, ``rope.freq_base_swa`` the sliding layers'
  (llama.cpp: the full θ when absent); ``rope.dimension_count`` = ``global_head_dim`` and
  ``dimension_count_swa`` = ``head_dim`` (both layer types rotate the whole head in ggml's
  NeoX half-split order, as transformers does: no permutation). Proportional RoPE (partial
  rotation ``p`` of the full layers) is the tensor ``rope_freqs``: ``global_head_dim * p / 2``
  factors 1.0, then 1e30 (llama.cpp divides each frequency by its factor: those pairs do not
  rotate); used by the full layers only.
* Norms are stored as transformers has them (``norm_shift`` 0: Gemma 4's RMSNorm is
  ``x * w``), the attention scale is 1 (hard-coded), ``final_logit_softcapping`` is stored.
* Mixture-of-experts layers (``expert_count``, ``ffn_gate_inp``, ``ffn_gate_up_exps``, ...)
  exist in the format; ropex builds dense Gemma 4 only and refuses them in one line.

Anything in a file that these fields cannot say is one :class:`ConfigError` line naming the key
or tensor and what is allowed.
"""

from __future__ import annotations

import numpy as np

from ropex.errors import ConfigError

SLIDING, FULL = 'sliding_attention', 'full_attention'
_UNROTATED = 1e30          # the converter's factor for pairs that do not rotate
_MOE_TENSORS = ('ffn_gate_inp', '_exps', 'pre_ffw_norm_2', 'post_ffw_norm_1', 'post_ffw_norm_2')


def hf_fields(reader, name: str, c: dict) -> dict:
  """transformers' Gemma 4 fields of the file's per-layer metadata (``c``: the generic ones)."""
  key = lambda k: f'{name}.{k}'
  _refuse(reader, key, c)
  L = int(c['num_hidden_layers'])
  types = _layer_types(reader, key('attention.sliding_window_pattern'), L)
  shared = int(reader.field(key('attention.shared_kv_layers')) or 0)
  if not 0 <= shared < L:
    raise ConfigError(f'{reader.path}: {key("attention.shared_kv_layers")}={shared}; allowed: '
                      f'0 to {L - 1}')
  out = dict(layer_types=types, num_kv_shared_layers=shared,
             sliding_window=int(_need(reader, key('attention.sliding_window'))))
  out.update(_head_dims(reader, key))
  out.update(_kv_heads(reader, key, types, L - shared))
  out.update(_feed_forward(reader, key('feed_forward_length'), L, shared))
  per_layer = int(reader.field(key('embedding_length_per_layer_input')) or 0)
  out['hidden_size_per_layer_input'] = per_layer
  embd = reader.tensors.get('per_layer_token_embd.weight')
  if per_layer and embd is not None:
    out['vocab_size_per_layer_input'] = int(embd.shape[-1])
  out['rope_parameters'] = _rope(reader, key, c, out)
  return out


def _need(reader, k: str):
  value = reader.field(k)
  if value is None:
    raise ConfigError(f'{reader.path}: metadata {k!r} is missing (a truncated or foreign GGUF '
                      'file)')
  return value


def _refuse(reader, key, c: dict) -> None:
  experts = reader.field(key('expert_count'))
  if experts:
    raise ConfigError(f'{reader.path}: {key("expert_count")}={experts} (mixture-of-experts '
                      'blocks) is not implemented; allowed: unset or 0 (dense Gemma 4)')
  moe = sorted(t for t in reader.tensors if any(m in t for m in _MOE_TENSORS))
  if moe:
    raise ConfigError(f'{reader.path}: tensor {moe[0]!r} (mixture-of-experts blocks) is not '
                      'implemented; allowed: dense Gemma 4 layers')
  if 'rope_scaling' in c:
    raise ConfigError(f'{reader.path}: {key("rope.scaling.type")}='
                      f'{c["rope_scaling"]["rope_type"]!r} is not implemented for this '
                      'architecture; allowed: unset (its RoPE is the rope_freqs tensor)')


def _layer_types(reader, k: str, L: int) -> list[str]:
  pattern = _need(reader, k)
  if not isinstance(pattern, list) or len(pattern) != L:
    raise ConfigError(f'{reader.path}: {k}={pattern!r}; allowed: one bool per layer ({L})')
  if pattern[-1]:
    raise ConfigError(f'{reader.path}: {k} makes the last layer sliding; allowed: a full-'
                      'attention last layer (transformers\' Gemma 4 forces it)')
  return [SLIDING if s else FULL for s in pattern]


def _head_dims(reader, key) -> dict:
  out = {}
  for field, suffix in (('global_head_dim', ''), ('head_dim', '_swa')):
    k, v = (int(_need(reader, key(f'attention.{n}_length{suffix}'))) for n in ('key', 'value'))
    if k != v:
      raise ConfigError(f'{reader.path}: {key(f"attention.value_length{suffix}")}={v} differs '
                        f'from key_length{suffix}={k}; allowed: equal (as llama.cpp requires)')
    out[field] = k
  return out


def _kv_heads(reader, key, types: list[str], own_kv: int) -> dict:
  """``num_key_value_heads``, and ``attention_k_eq_v`` / ``num_global_key_value_heads`` from
  the full layers that hold their own K/V (no ``attn_v`` there: K is V)."""
  k = key('attention.head_count_kv')
  counts = _need(reader, k)
  counts = counts if isinstance(counts, list) else [counts] * len(types)
  if len(counts) != len(types):
    raise ConfigError(f'{reader.path}: {k} has {len(counts)} entries; allowed: one number or '
                      f'one per layer ({len(types)})')
  by_type = {t: {int(n) for n, u in zip(counts, types) if u == t} for t in (SLIDING, FULL)}
  for t, values in by_type.items():
    if len(values) > 1:
      raise ConfigError(f'{reader.path}: {k}={counts} differs between {t} layers; allowed: one '
                        'count per layer type')
  no_v = {t: [i for i in range(own_kv) if types[i] == t and
              f'blk.{i}.attn_v.weight' not in reader.tensors] for t in (SLIDING, FULL)}
  if no_v[SLIDING]:
    raise ConfigError(f'{reader.path}: tensor blk.{no_v[SLIDING][0]}.attn_v.weight is missing; '
                      'allowed: K used as V on full-attention layers only (Gemma 4)')
  full_own = [i for i in range(own_kv) if types[i] == FULL]
  k_eq_v = bool(full_own) and len(no_v[FULL]) == len(full_own)
  if no_v[FULL] and not k_eq_v:
    have = next(i for i in full_own if i not in no_v[FULL])
    raise ConfigError(f'{reader.path}: tensor blk.{no_v[FULL][0]}.attn_v.weight is missing but '
                      f'blk.{have}.attn_v.weight exists; allowed: every full-attention layer '
                      'with or every one without attn_v')
  sliding = next(iter(by_type[SLIDING] or by_type[FULL]))
  full = next(iter(by_type[FULL] or by_type[SLIDING]))
  out = {'num_key_value_heads': sliding, 'attention_k_eq_v': k_eq_v}
  if k_eq_v:
    out['num_global_key_value_heads'] = full
  elif full != sliding:
    raise ConfigError(f'{reader.path}: {k}={counts} gives full-attention layers {full} heads '
                      f'and sliding ones {sliding}, but the full layers have attn_v; allowed: '
                      'one count (transformers uses num_global_key_value_heads only when K is V)')
  return out


def _feed_forward(reader, k: str, L: int, shared: int) -> dict:
  lengths = _need(reader, k)
  if not isinstance(lengths, list):
    return {'intermediate_size': int(lengths), 'use_double_wide_mlp': False}
  n = int(lengths[0])
  double = [n if i < L - shared else 2 * n for i in range(L)]
  if [int(x) for x in lengths] == [n] * L:
    return {'intermediate_size': n, 'use_double_wide_mlp': False}
  if [int(x) for x in lengths] == double and shared:
    return {'intermediate_size': n, 'use_double_wide_mlp': True}
  raise ConfigError(f'{reader.path}: {k}={lengths}; allowed: one length, or one per layer '
                    f'doubled on the {shared} KV-shared layers (use_double_wide_mlp): {double}')


def _rope(reader, key, c: dict, out: dict) -> dict:
  full_dim, swa_dim = out['global_head_dim'], out['head_dim']
  for k, want in (('rope.dimension_count', full_dim), ('rope.dimension_count_swa', swa_dim)):
    got = reader.field(key(k))
    if got is not None and int(got) != want:
      raise ConfigError(f'{reader.path}: {key(k)}={got}; allowed: {want} (the head dim: '
                        'Gemma 4 rotates partially only through rope_freqs)')
  theta = float(c['rope_theta'])
  swa_theta = reader.field(key('rope.freq_base_swa'))
  return {FULL: {'rope_type': 'proportional', 'rope_theta': theta,
                 'partial_rotary_factor': partial_rotary_factor(reader, full_dim)},
          SLIDING: {'rope_type': 'default',
                    'rope_theta': theta if swa_theta is None else float(swa_theta)}}


def partial_rotary_factor(reader, head_dim: int) -> float:
  """``p`` of the full layers' proportional RoPE from ``rope_freqs``: ``head_dim * p / 2``
  factors 1 then factors 1e30, exactly as the converter writes them."""
  name = 'rope_freqs.weight'
  if name not in reader.tensors:
    raise ConfigError(f'{reader.path}: tensor {name!r} is missing; allowed: the converter\'s '
                      'proportional-RoPE factors (llama.cpp requires it)')
  f = reader.tensor(name).reshape(-1)
  rotated = int(np.sum(f == 1.0))
  want = np.asarray([1.0] * rotated + [_UNROTATED] * (head_dim // 2 - rotated), np.float32)
  if f.shape != want.shape or not np.array_equal(f, want):
    raise ConfigError(f'{reader.path}: tensor {name!r} is not proportional RoPE factors; '
                      f'allowed: {head_dim // 2} float32 values, n of 1.0 then 1e30')
  return 2 * rotated / head_dim
