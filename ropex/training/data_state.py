"""The data iterator's state as saved in a checkpoint: global, one entry per batch row.

Batch row ``r`` always reads the same document stream (:mod:`ropex.data.packing`), whichever
process owns it. At a save every process contributes its rows' stream positions (one all-gather
of a few integers per row, only at checkpoint steps) and process 0 writes the whole table; on
restore each process takes its own rows. So a run saved by P processes resumes on any process
count with the same global batch, with exactly the batches of the uninterrupted run.
"""

from __future__ import annotations

from typing import Any

import jax
from jax.experimental import multihost_utils
import numpy as np

ROW_FIELDS = ('doc_index', 'doc_offset')


def gather(local: dict[str, Any]) -> dict[str, Any]:
  """The global state from every process's local state (a collective: all processes call it).
  A state without per-row fields (an iterator of another kind) is saved as given."""
  if not all(key in local for key in ROW_FIELDS):
    return dict(local)
  out = dict(local, first_stream=0, num_streams=int(local['global_batch']))
  for key in ROW_FIELDS:
    rows = np.asarray(local[key], np.int64)
    if jax.process_count() > 1:  # processes own contiguous row ranges, in process order
      rows = np.asarray(multihost_utils.process_allgather(rows)).reshape(-1)
    if rows.shape != (out['num_streams'],):
      raise ValueError(f'data state has {rows.shape} rows for a global batch of '
                       f'{out["num_streams"]}')
    out[key] = [int(v) for v in rows]
  return out


def local(saved: dict[str, Any], first_stream: int, num_streams: int) -> dict[str, Any]:
  """This process's rows ``[first_stream, first_stream + num_streams)`` of a global state."""
  if not all(key in saved for key in ROW_FIELDS):
    return dict(saved)
  rows = slice(first_stream - int(saved['first_stream']),
               first_stream - int(saved['first_stream']) + num_streams)
  out = dict(saved, first_stream=first_stream, num_streams=num_streams)
  for key in ROW_FIELDS:
    out[key] = list(saved[key][rows])
  return out
