"""Builds the per-process batch iterator of a config, and measures its throughput."""

from __future__ import annotations

import time

from ropex.data import packing
from ropex.data import prefetch
from ropex.data import sources
from ropex.data import tokenizers
from ropex.data import validation
from ropex.errors import ConfigError

SPLITS = ('train', 'eval')


def batch_size(config, split: str) -> int:
  """Global batch of ``split``: ``train.batch_size``, or ``eval.batch_size`` (0: the train one)."""
  if split == 'eval' and 'eval' in config and config.eval.get('batch_size', 0):
    return int(config.eval.batch_size)
  return int(config.train.batch_size)


def make_iterator(config, split: str = 'train', process_index: int = 0, process_count: int = 1):
  """Iterator of this process's rows of every global batch (see :mod:`ropex.data.packing`).

  Batches are dicts of numpy arrays ``[global_batch // process_count, train.seq_len]``:
  ``inputs``, ``targets``, ``positions``, ``segment_ids``, ``task_ids`` (int32) and ``weights``
  (float32). ``get_state()`` / ``set_state()`` save and restore the position exactly."""
  validation.validate(config)
  if split not in SPLITS:
    raise ConfigError(f'split={split!r} is not allowed; allowed: {", ".join(SPLITS)}')
  if not 0 <= process_index < process_count:
    raise ConfigError(f'process_index={process_index} must be in [0, process_count='
                      f'{process_count})')
  global_batch = batch_size(config, split)
  if global_batch % process_count:
    field = 'train.batch_size' if split == 'train' or not config.eval.get('batch_size', 0) \
        else 'eval.batch_size'
    raise ConfigError(f'{field}={global_batch} is not divisible by the process count '
                      f'{process_count}; allowed: a multiple of {process_count}')
  local = global_batch // process_count
  tok = tokenizers.make_tokenizer(config.data)
  docs = sources.documents(config, split, tok)
  it = packing.PackedBatches(docs, global_batch, config.train.seq_len, process_index * local,
                             local, pack=config.data.pack,
                             reset_positions=config.data.reset_positions,
                             worker_count=config.data.worker_count)
  if config.data.prefetch > 0:
    return prefetch.Prefetch(it, config.data.prefetch)
  return it


def task_names(config) -> tuple[str, ...]:
  """Names of the task ids in ``batch['task_ids']`` (empty unless data.source='synthetic')."""
  return tuple(config.data.tasks) if config.data.source == 'synthetic' else ()


def measure_throughput(config, seconds: float = 5.0, split: str = 'train') -> float:
  """Batch slots (``batch * seq_len``) per second produced by one process's iterator."""
  it = make_iterator(config, split)
  batch = next(it)  # warm-up: opening files, first documents
  tokens, n = batch['inputs'].size, 0
  start = time.perf_counter()
  while True:
    next(it)
    n += 1
    elapsed = time.perf_counter() - start
    if elapsed >= seconds:
      break
  if hasattr(it, 'close'):
    it.close()
  return n * tokens / elapsed
