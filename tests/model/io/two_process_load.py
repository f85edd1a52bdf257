"""One of two processes on loopback (run by test_io_load_two_processes.py, not collected by
pytest): loads checkpoints with ``ropex.model.io.load_model(path, mesh=placement)`` on a mesh
whose fsdp axis spans both processes' devices, and prints one JSON line about what it holds.

    python two_process_load.py COORDINATOR PROCESS_ID OUT_DIR BIG_FOLDER FIXTURE...

* ``BIG_FOLDER`` (first): the growth of the peak resident memory over the import (``VmHWM``,
  reset just before: tests/peak_rss.py) and the bytes of the shards this process holds.
* every ``FIXTURE``: each addressable shard equals the same slice of the one-process (host)
  load; which part of every split tensor the process holds; the
  logits of the fixture's golden tokens, computed on the global mesh and gathered, are saved by
  process 0 to ``OUT_DIR/<name>.npy``.
"""

import time

STARTED = time.perf_counter()

import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

from ropex import model as model_lib
from ropex.config import defaults
from ropex.model import io
from ropex.model.io import huggingface
from ropex.training import distributed
from ropex.training.placement import Placement

TESTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..')
HF_FIXTURES = os.path.join(TESTS, 'fixtures', 'hf')
sys.path.insert(0, TESTS)
from peak_rss import peak_rss, reset_peak_rss  # pylint: disable=g-import-not-at-top,wrong-import-position


def _held(params) -> dict:
  """Bytes of the whole parameters, of the largest one and of the distinct shards this
  process's devices hold; the fractions of the split (not fully replicated) leaves held here,
  and the rows and columns of the embedding held here."""
  total = held = largest = 0
  fractions = set()
  for path, x in huggingface.flat(params):
    total, largest = total + x.nbytes, max(largest, x.nbytes)
    distinct = {_ranges(sh.index, x.shape): sh.data.nbytes for sh in x.addressable_shards}
    held += sum(distinct.values())
    if not x.sharding.is_fully_replicated:
      fractions.add(sum(distinct.values()) / x.nbytes)
  embedding = params['embedder']['input_embedding']
  return {'total': total, 'held': held, 'largest': largest, 'split_fractions': sorted(fractions),
          'embedding_shape': embedding.shape, 'embedding_ranges': sorted({_ranges(sh.index, embedding.shape)
                                      for sh in embedding.addressable_shards})}


def _ranges(index, shape) -> tuple:
  """((start, stop) per dimension) of a shard's index."""
  return tuple(tuple(s.indices(n)[:2]) for s, n in zip(index, shape))


def _check_shards(placed, host) -> dict:
  """Every addressable shard equals the host load's slice; returns per-kind counts."""
  split = replicated = 0
  host_params = dict(huggingface.flat(host.params))
  for path, x in huggingface.flat(placed.params):
    want = host_params[path]
    for sh in x.addressable_shards:
      np.testing.assert_array_equal(np.asarray(sh.data), want[sh.index], err_msg=str(path))
    if x.sharding.is_fully_replicated:
      replicated += 1
    else:
      split += 1
  return {'split': split, 'replicated': replicated}


def _logits(placement, imported, tokens_BT):
  cfg = imported.cfg
  rows = placement.rows(tokens_BT.shape[0])
  padded = np.zeros((rows, tokens_BT.shape[1]), np.int32)
  padded[:tokens_BT.shape[0]] = tokens_BT
  forward = jax.jit(lambda p, t: model_lib.Transformer(cfg).apply({'params': p}, t))
  with placement.rules_context():
    logits = forward(imported.params, placement.batch(padded))
  return Placement.to_host(logits)[:tokens_BT.shape[0]]


def main(coordinator, process_id, out_dir, big, *fixtures):
  report = {'import_seconds': time.perf_counter() - STARTED}
  distributed.initialize(coordinator, 2, int(process_id))
  c = defaults.base_config()
  c.mesh.update(data=1, fsdp=-1, tensor=1)     # parameters split over all 4 devices of 2 processes
  placement = Placement.from_config(c)
  jnp.zeros(1).block_until_ready()
  report.update(process=jax.process_index(), local_devices=jax.local_device_count(),
                devices=jax.device_count(), init_seconds=time.perf_counter() - STARTED)
  base, start = reset_peak_rss(), time.perf_counter()
  imported = io.load_model(big, mesh=placement)
  jax.block_until_ready(imported.params)
  report['big'] = dict(_held(imported.params), growth=peak_rss() - base,
                       seconds=time.perf_counter() - start)
  del imported
  start = time.perf_counter()
  for path in fixtures:
    name = os.path.basename(path)
    placed = io.load_model(path, mesh=placement)
    report[name] = dict(_held(placed.params), **_check_shards(placed, io.load_model(path)))
    family = name.split('.')[0]
    tokens = np.load(os.path.join(HF_FIXTURES, family, 'golden.npz'))['input_ids']
    logits = _logits(placement, placed, tokens)
    if jax.process_index() == 0:
      np.save(os.path.join(out_dir, name + '.npy'), logits)
    report[name]['seconds'] = time.perf_counter() - start
    start = time.perf_counter()
  print(json.dumps(report), flush=True)


if __name__ == '__main__':
  main(*sys.argv[1:])
