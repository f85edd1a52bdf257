"""The interface every positional encoding implements (registered in :mod:`ropex.model.positional`).

An encoding is a frozen (hashable) dataclass. The model calls these hooks and nothing else; it
never looks at the kind's name. Every hook has a neutral default, so a kind overrides only what
it does:

* ``queries(q_BTNH, positions_BT, params)`` / ``keys(k_BSKH, positions_BS, params)``: transform
  queries and keys (default: both through ``__call__(x, positions)``, the classic
  ``pe(x_BTNH, positions_BT)`` signature, so q and k get the same rotation). A kind may treat
  them differently (a query-only temperature).
* ``logit_bias(positions_q_BT, positions_k_BS, params, num_heads)``: an additive attention-logit
  bias, float32 ``[B, N, T, S]`` or ``[1, N, T, S]`` (or ``None``: no bias, the default). The
  convention: ``logits = softcap(q . k / sqrt(H) + bias)``, then the causal / window mask. It is
  a function of the *given* positions (packed documents restart at 0), never of array indices,
  so the dense and the chunked attention paths compute it identically (the chunked path calls
  it once per query block). ``bias_kind`` names it for describe and reports.
* ``param_specs(dims)``: learned parameters of the attention side, ``{name: ParamSpec}``; the
  model creates them under ``attn/pe`` of each layer with the logical axes given (so they are
  sharded, checkpointed and optimised like every other parameter) and passes them to the hooks
  as ``params``.
* ``acts_on_embedding`` / ``embed(x_BTD, positions_BT, params)`` / ``embedding_param_specs``:
  absolute encodings that act once on the input embedding (parameters under ``pe_embedding``).
* ``inv_freq(seq_len)``: what the encoding declares about frequencies: the angular frequency in
  radians per position of each of the ``head_dim/2`` chunks (0 = unrotated), or ``None`` when
  the encoding has no notion of rotation frequencies (bias and absolute kinds): analyses then
  say "not applicable". ``chunk_dims(head_dim)`` gives the two dims of every chunk and
  ``attention_factor(seq_len)`` the factor that multiplies cos and sin (YaRN, LongRoPE).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import numpy as np


@dataclasses.dataclass(frozen=True)
class Dims:
  """The attention shapes an encoding may need to size its parameters."""
  num_heads: int
  num_kv_heads: int
  head_dim: int
  embed_dim: int


@dataclasses.dataclass(frozen=True)
class ParamSpec:
  """One learned parameter: shape, logical axis names (one per dim) and a flax-style
  initializer ``init(key, shape, dtype)``."""
  shape: tuple[int, ...]
  axes: tuple[str | None, ...]
  init: Callable[..., Any]

  @property
  def size(self) -> int:
    return math.prod(self.shape)


def half_pairs(head_dim: int) -> np.ndarray:
  """Gemma's half-split chunks: chunk ``k`` is dims ``(k, k + head_dim/2)``; [C, 2]."""
  k = np.arange(head_dim // 2)
  return np.stack([k, k + head_dim // 2], axis=-1)


class Encoding:
  """Base class with the neutral default of every hook (see the module docstring). Subclasses
  are frozen dataclasses with a ``kind`` field (the registered name)."""
  bias_kind: str | None = None
  acts_on_embedding = False

  def __call__(self, x_BTNH, positions_BT):
    del positions_BT
    return x_BTNH

  def queries(self, q_BTNH, positions_BT, params):
    del params
    return self(q_BTNH, positions_BT)

  def keys(self, k_BSKH, positions_BS, params):
    del params
    return self(k_BSKH, positions_BS)

  def logit_bias(self, positions_q_BT, positions_k_BS, params, num_heads):
    del positions_q_BT, positions_k_BS, params, num_heads
    return None

  def param_specs(self, dims: Dims) -> dict[str, ParamSpec]:
    del dims
    return {}

  def embed(self, x_BTD, positions_BT, params):
    del positions_BT, params
    return x_BTD

  def embedding_param_specs(self, dims: Dims) -> dict[str, ParamSpec]:
    del dims
    return {}

  def inv_freq(self, seq_len: int | None = None) -> np.ndarray | None:
    del seq_len
    return None

  def attention_factor(self, seq_len: int | None = None) -> float:
    del seq_len
    return 1.0

  def chunk_dims(self, head_dim: int) -> np.ndarray:
    return half_pairs(head_dim)

  def rotated_chunks(self) -> tuple[int, ...]:
    return ()

  def label(self) -> str:
    return getattr(self, 'kind', type(self).__name__)

  def summary(self) -> dict:
    return {'pe_kind': self.label(), 'rotated_chunks': list(self.rotated_chunks())}


@dataclasses.dataclass(frozen=True)
class Callable_(Encoding):
  """Adapter for a bare callable ``pe(x_BTNH, positions_BT)`` (same transform of q and k)."""
  fn: Any
  kind: str = 'custom'

  def __call__(self, x_BTNH, positions_BT):
    return self.fn(x_BTNH, positions_BT)

  def summary(self) -> dict:
    return {'pe_kind': getattr(self.fn, 'kind', type(self.fn).__name__), 'rotated_chunks': []}


def as_encoding(pe) -> Encoding:
  """``pe`` itself if it implements the interface, else a same-q-and-k adapter around it."""
  return pe if isinstance(pe, Encoding) else Callable_(pe)


def count_params(specs: dict[str, ParamSpec]) -> int:
  return int(sum(s.size for s in specs.values()))
