"""Packing documents into fixed-length rows: one independent stream per global batch row.

Row ``r`` of every global batch (``r < B``) is produced by stream ``r``, whose ``k``-th document
is document ``g = k * B + r`` of the source. Streams share nothing, so a process that owns rows
``[p * B / P, (p + 1) * B / P)`` reads exactly those streams' documents and the concatenated
global batch is identical for every process count ``P``. The state of a stream is two integers
(``doc_index`` k, ``doc_offset`` = prediction pairs of document k already emitted); the
document itself is re-read from the random-access source on restore.

Why not grain's packing (``grain.experimental.FirstFitPackIterDataset`` etc.): it packs one
sequential stream; sharding that stream by process (``ds[p::P]``) changes which documents share
a row, so the global batch would depend on the process count. grain still does the source
work (random access, per-epoch shuffling, repeat, tokenizing map) in :mod:`ropex.data.sources`.

Rules (document = tokens ``t_0 .. t_{n-1}`` with bos/eos; it yields ``n - 1`` pairs
``(t_j -> t_{j+1})``, so ``targets`` are always the next token of the same document; a synthetic
document bundles several examples, each packed as its own document):

- ``pack=True``: documents are laid out back to back, each with its own segment id 1, 2, ...
  A document that fits in a row is never split: if it does not fit in the space left, the row is
  padded and the document starts the next row. A longer document fills the space left and
  continues in the next rows; each piece is its own segment.
- ``pack=False``: one document per row, truncated to the row (the rest is dropped) and padded.
- ``data.worker_count > 0``: rows are filled by that many threads (helps when reading or
  tokenizing releases the GIL: TFDS reads, SentencePiece); the result does not depend on it.
- ``reset_positions=True``: positions count from 0 in each segment; else ``positions`` is the row
  slot index. Padding has segment id 0, weight 0, task id -1, token 0.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any

import numpy as np

STATE_FORMAT = 'ropex.data.packed/1'
_MAX_EMPTY_DOCS = 10_000


class PackedBatches:
  """Iterator over this process's rows ``[first_stream, first_stream + num_streams)``."""

  def __init__(self, docs, global_batch: int, seq_len: int, first_stream: int,
               num_streams: int, pack: bool = True, reset_positions: bool = True,
               worker_count: int = 0):
    self._docs = docs
    self._pool = (concurrent.futures.ThreadPoolExecutor(worker_count, 'ropex-data')
                  if worker_count > 0 else None)
    self._B, self._L = int(global_batch), int(seq_len)
    self._first, self._n = int(first_stream), int(num_streams)
    self._pack, self._reset = bool(pack), bool(reset_positions)
    self._doc_index = np.zeros(self._n, np.int64)
    self._doc_offset = np.zeros(self._n, np.int64)
    self._batches = 0
    self._cache: list[tuple[int, Any] | None] = [None] * self._n

  def __iter__(self):
    return self

  def _document(self, j: int):
    k = int(self._doc_index[j])
    cached = self._cache[j]
    if cached is None or cached[0] != k:
      cached = (k, self._docs[k * self._B + self._first + j])
      self._cache[j] = cached
    return cached[1]

  def _fill_row(self, j: int, out: dict[str, np.ndarray]) -> None:
    L, pos, seg, empty = self._L, 0, 0, 0
    while pos < L:
      doc = self._document(j)
      pairs = len(doc.inputs_P)
      off = int(self._doc_offset[j])
      if pairs - off <= 0:
        empty += 1
        if empty > _MAX_EMPTY_DOCS:
          raise ValueError(f'{_MAX_EMPTY_DOCS} documents in a row have fewer than 2 tokens; '
                           'check the data source and data.add_bos/add_eos')
        self._doc_index[j] += 1
        self._doc_offset[j] = 0
        continue
      space = L - pos
      if self._pack and off == 0 and space < pairs <= L:
        break  # fits in a row but not in this one: pad, start it in the next row
      take = min(pairs - off, space)
      sl, src = slice(pos, pos + take), slice(off, off + take)
      out['inputs'][j, sl] = doc.inputs_P[src]
      out['targets'][j, sl] = doc.targets_P[src]
      if doc.starts_S is None:
        seg += 1
        out['segment_ids'][j, sl] = seg
        if self._reset:
          out['positions'][j, sl] = np.arange(take, dtype=np.int32)
      else:  # several examples: each its own segment, positions from its start (or the piece's)
        idx_T = np.arange(off, off + take)
        ex_T = np.searchsorted(doc.starts_S, idx_T, side='right') - 1
        out['segment_ids'][j, sl] = seg + 1 + ex_T - ex_T[0]
        seg += 1 + int(ex_T[-1] - ex_T[0])
        if self._reset:
          out['positions'][j, sl] = idx_T - np.maximum(doc.starts_S[ex_T], off)
      out['weights'][j, sl] = 1.0 if doc.weights_P is None else doc.weights_P[src]
      out['task_ids'][j, sl] = -1 if doc.task_ids_P is None else doc.task_ids_P[src]
      pos += take
      if self._pack and off + take < pairs:
        self._doc_offset[j] = off + take
      else:  # finished, or (pack=False) truncated
        self._doc_index[j] += 1
        self._doc_offset[j] = 0
      if not self._pack:
        break

  def __next__(self) -> dict[str, np.ndarray]:
    shape = (self._n, self._L)
    out = {k: np.zeros(shape, np.int32)
           for k in ('inputs', 'targets', 'positions', 'segment_ids')}
    out['weights'] = np.zeros(shape, np.float32)
    out['task_ids'] = np.full(shape, -1, np.int32)
    if not self._reset:
      out['positions'][:] = np.arange(self._L, dtype=np.int32)
    if self._pool is None:
      for j in range(self._n):
        self._fill_row(j, out)
    else:  # rows are independent: each thread writes only its own rows and stream state
      list(self._pool.map(lambda j: self._fill_row(j, out), range(self._n)))
    self._batches += 1
    return out

  def get_state(self) -> dict[str, Any]:
    return {'format': STATE_FORMAT, 'global_batch': self._B, 'seq_len': self._L,
            'first_stream': self._first, 'num_streams': self._n, 'batches': self._batches,
            'doc_index': [int(v) for v in self._doc_index],
            'doc_offset': [int(v) for v in self._doc_offset]}

  def set_state(self, state: dict[str, Any]) -> None:
    mine = self.get_state()
    for key in ('format', 'global_batch', 'seq_len', 'first_stream', 'num_streams'):
      if state.get(key) != mine[key]:
        raise ValueError(f'data iterator state has {key}={state.get(key)!r} but this iterator '
                         f'has {mine[key]!r}; resume with the same batch size, sequence length '
                         'and process layout')
    self._doc_index = np.asarray(state['doc_index'], np.int64).copy()
    self._doc_offset = np.asarray(state['doc_offset'], np.int64).copy()
    self._batches = int(state['batches'])
    self._cache = [None] * self._n
