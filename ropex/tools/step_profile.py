r"""Where a compiled step's time goes on XLA:CPU, by op category (``python -m ropex.bench
--profile``).

:func:`profile` runs the compiled executable under ``jax.profiler.trace`` and reads the trace
back with :class:`jax.profiler.ProfileData`: XLA:CPU records one event per executed thunk (a
fusion, a library matmul, a copy) on its worker threads, named after the HLO instruction.
Loop and call thunks (``while``, ``call``, ``conditional``) contain the thunks of their bodies
and are left out, as are the thread pool's bookkeeping events, so every microsecond is counted
once. :func:`hlo_categories` sorts instructions by what they do, from the compiled HLO text:

* ``matmul``: a dot, or a fusion whose computation holds one (XLA:CPU's library matmul
  fusions, e.g. ``ynn_fusion``);
* ``copy/transpose``: layout changes (``copy``, ``transpose`` and fusions of nothing else);
* ``reduction fusion``: a fusion holding a ``reduce`` (softmax and norm statistics, sums);
* ``elementwise fusion``: every other fusion (GeGLU, RoPE, softmax numerators, AdamW);
* ``other``: any other instruction (broadcasts, gathers, scatters, dynamic slices).

The event times are wall times of each thunk; thunks can overlap on the worker threads, so
the shares are of the summed thunk time, not of the step's wall time (both are reported).
"""

from __future__ import annotations

import collections
import glob
import re
import tempfile
import time

import jax
from jax.profiler import ProfileData

CATEGORIES = ('matmul', 'copy/transpose', 'reduction fusion', 'elementwise fusion', 'other')
_CONTAINERS = ('while', 'call', 'conditional')
_BOOKKEEPING = ('ThreadpoolListener', 'ThunkExecutor', 'SlinkyThreadPool', 'end: ')
_COMPUTATION = re.compile(r'^%?([\w.\-]+) \(.*\{$')
_INSTRUCTION = re.compile(r'^\s+(?:ROOT )?%?([\w.\-]+) = \S+(?: \S+)*? ([a-z\-]+)\(')
_CALLS = re.compile(r'calls=%?([\w.\-]+)')


def _computations(hlo_text: str) -> dict[str, list[str]]:
  comps, name = {}, None
  for line in hlo_text.splitlines():
    m = _COMPUTATION.match(line)
    if m:
      name = m.group(1)
      comps[name] = []
    elif name is not None and line.startswith(' '):
      comps[name].append(line)
  return comps


def _opcodes(lines: list[str]) -> set[str]:
  return {m.group(2) for m in map(_INSTRUCTION.match, lines) if m}


def hlo_categories(hlo_text: str) -> dict[str, str]:
  """``{instruction name: category}`` of every instruction of the compiled HLO."""
  comps = _computations(hlo_text)
  out = {}
  for lines in comps.values():
    for line in lines:
      m = _INSTRUCTION.match(line)
      if not m:
        continue
      name, opcode = m.groups()
      inner = set()
      if opcode == 'fusion':
        called = _CALLS.search(line)
        inner = _opcodes(comps.get(called.group(1), [])) if called else set()
      out[name] = _category(opcode, inner)
  return out


def _category(opcode: str, inner: set[str]) -> str:
  if opcode in ('dot', 'convolution') or inner & {'dot', 'convolution'}:
    return 'matmul'
  if opcode in ('copy', 'transpose') or (inner and inner <= {'copy', 'transpose', 'bitcast',
                                                             'parameter', 'reshape'}):
    return 'copy/transpose'
  if opcode == 'fusion':
    return 'reduction fusion' if 'reduce' in inner else 'elementwise fusion'
  return 'other'


def thunk_times(trace_dir: str) -> collections.Counter:
  """Summed nanoseconds per thunk name of the XLA:CPU trace in ``trace_dir`` (leaf thunks)."""
  path = glob.glob(f'{trace_dir}/**/*.xplane.pb', recursive=True)
  if not path:
    raise FileNotFoundError(f'no .xplane.pb trace under {trace_dir}')
  times = collections.Counter()
  for plane in ProfileData.from_file(path[0]).planes:
    for line in plane.lines:
      if not line.name.startswith('tf_XLA'):
        continue
      for event in line.events:
        base = event.name.split('.')[0]
        if base in _CONTAINERS or event.name.startswith(_BOOKKEEPING):
          continue
        times[event.name] += event.duration_ns
  return times


def profile(run_once, hlo_text: str, steps: int = 2) -> dict:
  """Runs ``run_once()`` (one step, blocking) ``steps`` times under the profiler."""
  with tempfile.TemporaryDirectory() as d:
    start = time.perf_counter()
    with jax.profiler.trace(d):
      for _ in range(steps):
        run_once()
    wall = time.perf_counter() - start
    times = thunk_times(d)
  return summarize(times, hlo_categories(hlo_text), wall / steps, steps)


def summarize(times: collections.Counter, categories: dict[str, str], wall_s: float,
              steps: int) -> dict:
  """Per-category seconds per step and shares of the summed thunk time; the top thunks."""
  by = collections.Counter()
  for name, ns in times.items():
    by[categories.get(name, 'other')] += ns
  total = sum(by.values())
  return {'step_wall_s': wall_s, 'thunk_s_per_step': total / steps / 1e9,
          'seconds_per_step': {c: by[c] / steps / 1e9 for c in CATEGORIES},
          'share': {c: by[c] / total if total else 0.0 for c in CATEGORIES},
          'top': [{'name': n, 'category': categories.get(n, 'other'), 's_per_step': ns / steps / 1e9}
                  for n, ns in times.most_common(8)]}
