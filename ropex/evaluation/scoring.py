"""Per-token next-token loss and argmax correctness, with memory bounded at long lengths.

:class:`Scorer` turns rows (numpy dicts ``inputs``/``targets``/``positions``/``segment_ids``
[N, T], the layout of the data pipeline) into ``loss_NT`` (nats) and ``correct_NT`` (argmax ==
target). Two things keep memory bounded at any length:

- attention: for ``T > attention_chunk`` the model runs with ``attention_impl='chunked'`` (one
  block of ``attention_chunk`` queries at a time, never the full T x T scores). Rows are padded
  at the END to a multiple of the chunk with segment id 0; attention is causal, so padding
  after a token never changes that token's output.
- logits: the loss is computed from ``Transformer.hidden`` and the tied embedding over
  ``loss_chunk`` positions at a time, never a full [B, T, V] logits tensor.

Rows go through in batches of ``max(1, tokens_per_batch // T)`` (the last one padded with
empty rows), so each (batch, length) shape compiles once. Logits and losses are float32
whatever the compute dtype. With a :class:`~ropex.training.placement.Placement` the parameters
are placed on the mesh once (restored sharded, or imported) and every batch is split over the
batch axes (rounded up to a multiple of the batch shards).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ropex import model as model_lib
from ropex.evaluation import generation
from ropex.model import loss as loss_lib
from ropex.model.config import ModelConfig
from ropex.training.placement import Placement

ROW_KEYS = ('inputs', 'targets', 'positions', 'segment_ids')


def _pad_axis(x, size: int, axis: int):
  pad = size - x.shape[axis]
  if pad == 0:
    return x
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, pad)
  return jnp.pad(x, widths)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _score_batch(cfg: ModelConfig, loss_chunk: int, params, inputs_BT, targets_BT, positions_BT,
                 segment_ids_BT):
  B, T = inputs_BT.shape
  h_BTD = model_lib.Transformer(cfg).apply({'params': params}, inputs_BT, positions_BT,
                                           segment_ids_BT, method=model_lib.Transformer.hidden)
  emb_VD = params['embedder']['input_embedding'].astype(cfg.dtype)
  n = math.ceil(T / loss_chunk)
  h_nBCD = jnp.moveaxis(_pad_axis(h_BTD, n * loss_chunk, 1).reshape(B, n, loss_chunk, -1), 1, 0)
  tgt_nBC = jnp.moveaxis(_pad_axis(targets_BT, n * loss_chunk, 1).reshape(B, n, loss_chunk), 1, 0)

  def one_chunk(args):
    h_BCD, tgt_BC = args
    logits_BCV = jnp.einsum('BCD,VD->BCV', h_BCD, emb_VD, preferred_element_type=jnp.float32)
    logits_BCV = model_lib.softcap(logits_BCV, cfg.final_logit_softcap)
    t = loss_lib.token_losses(logits_BCV, tgt_BC)
    return t.loss_BT, t.correct_BT

  loss_nBC, correct_nBC = jax.lax.map(one_chunk, (h_nBCD, tgt_nBC))
  loss_BT = jnp.moveaxis(loss_nBC, 0, 1).reshape(B, n * loss_chunk)[:, :T]
  correct_BT = jnp.moveaxis(correct_nBC, 0, 1).reshape(B, n * loss_chunk)[:, :T]
  return loss_BT, correct_BT


@dataclasses.dataclass(frozen=True)
class NextLogits:
  """``(params, tokens_BT, at_B) -> logits_BV``: the next-token logits after position ``at_B``
  of every row (float32, soft-capped as the model's own logits); the ``model_apply`` of
  :func:`ropex.evaluation.generation.greedy_decode`."""
  cfg: ModelConfig

  def __call__(self, params, tokens_BT, at_B):
    h_BTD = model_lib.Transformer(self.cfg).apply({'params': params}, tokens_BT,
                                                  method=model_lib.Transformer.hidden)
    h_BD = jnp.take_along_axis(h_BTD, at_B[:, None, None], axis=1)[:, 0]
    emb_VD = params['embedder']['input_embedding'].astype(self.cfg.dtype)
    logits_BV = jnp.einsum('BD,VD->BV', h_BD, emb_VD, preferred_element_type=jnp.float32)
    return model_lib.softcap(logits_BV, self.cfg.final_logit_softcap)


@dataclasses.dataclass
class Scorer:
  """Scores rows with one model. ``cfg`` may carry evaluation-time overrides."""
  cfg: ModelConfig
  params: dict
  attention_chunk: int = 512   # queries per attention block beyond this length (0: always dense)
  loss_chunk: int = 512        # positions per logits block
  tokens_per_batch: int = 16_384
  placement: Placement | None = None   # the mesh to run on (None: the default device)

  def __post_init__(self):
    self.params = nn.unbox(self.params)
    if self.placement is not None:
      self.params = self.placement.place(self.params, self.cfg)
    for name in ('loss_chunk', 'tokens_per_batch'):
      if int(getattr(self, name)) < 1:
        raise ValueError(f'{name} must be >= 1, got {getattr(self, name)}')

  def model_cfg(self, length: int) -> tuple[ModelConfig, int]:
    """The config used for rows of ``length`` tokens and the padded length it runs at."""
    chunk = int(self.attention_chunk)
    base = dataclasses.replace(self.cfg, remat='none')
    if chunk and length > chunk:
      padded = math.ceil(length / chunk) * chunk
      return dataclasses.replace(base, attention_impl='chunked', attention_chunk=chunk), padded
    return dataclasses.replace(base, attention_impl='dense'), length

  def batch_size(self, length: int, rows: int) -> int:
    size = max(1, min(int(self.tokens_per_batch) // length, rows))
    return self.placement.rows(size) if self.placement is not None else size

  def score(self, rows: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``(loss_NT float64, correct_NT bool)`` for every row and position."""
    N, T = rows['inputs'].shape
    for key in ROW_KEYS:
      if rows[key].shape != (N, T):
        raise ValueError(f'rows[{key!r}] has shape {rows[key].shape}, expected {(N, T)}')
    cfg, padded_T = self.model_cfg(T)
    B = self.batch_size(T, N)
    loss_NT = np.zeros((N, T), np.float64)
    correct_NT = np.zeros((N, T), bool)
    for start in range(0, N, B):
      stop = min(start + B, N)
      batch = []
      for key in ROW_KEYS:
        x = np.zeros((B, padded_T), np.int32)   # padding: token 0, position 0, segment 0
        x[:stop - start, :T] = rows[key][start:stop]
        batch.append(self.placement.batch(x) if self.placement else jnp.asarray(x))
      with self.placement.rules_context() if self.placement else contextlib.nullcontext():
        loss_BT, correct_BT = _score_batch(cfg, min(int(self.loss_chunk), padded_T),
                                           self.params, *batch)
      loss_NT[start:stop] = np.asarray(Placement.to_host(loss_BT), np.float64)[:stop - start, :T]
      correct_NT[start:stop] = Placement.to_host(correct_BT)[:stop - start, :T]
    return loss_NT, correct_NT

  def generate(self, prompts_NT: np.ndarray, lengths_N: np.ndarray,
               max_new_tokens: int) -> np.ndarray:
    """``tokens_NM``: greedy generation of ``max_new_tokens`` tokens after the first
    ``lengths_N[i]`` tokens of every row (:func:`ropex.evaluation.generation.greedy_decode`,
    in batches of :meth:`batch_size` rows; chunked attention beyond ``attention_chunk``)."""
    N, T = prompts_NT.shape
    cfg, width = self.model_cfg(T + max_new_tokens)
    B = self.batch_size(width, N)
    out = np.zeros((N, max_new_tokens), np.int32)
    for start in range(0, N, B):
      stop = min(start + B, N)
      prompts = np.zeros((B, T), np.int32)
      prompts[:stop - start] = prompts_NT[start:stop]
      lengths = np.ones(B, np.int32)
      lengths[:stop - start] = lengths_N[start:stop]
      put = self.placement.batch if self.placement else jnp.asarray
      with self.placement.rules_context() if self.placement else contextlib.nullcontext():
        out[start:stop] = generation.greedy_decode(
            NextLogits(cfg), self.params, prompts, lengths, max_new_tokens, width, put,
            Placement.to_host)[:stop - start]
    return out
