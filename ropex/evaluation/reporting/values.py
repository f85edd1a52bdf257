"""What one evaluation result (a ``results.json`` dict) says at a length, with its interval:
the numbers every table and figure of :mod:`ropex.evaluation.reporting` shows.

- loss / perplexity at a length: :func:`loss_at` (the ratio estimate over units, see
  :mod:`ropex.evaluation.sampling`); perplexity = ``exp(loss)``, its interval
  ``exp(loss ± h)`` (:func:`perplexity_text` shows ``exp(loss) ± exp(loss) h``, the delta
  method);
- a grid's number at a length, averaged over depths: :func:`grid_at` (Wilson, ``n`` = the
  examples of one cell: the depths share their examples' draws, so they are not extra
  samples);
- RULER's average at a length (mean over tasks of the depth means): :func:`ruler_at` (Wilson,
  ``n`` = tasks x examples per cell; the tasks' examples are independent).

This module imports nothing from the rest of the package (the direction is
``compare`` -> ``tables`` / ``grouped`` / ``paired`` / ``figures`` -> ``values``).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ropex.evaluation import ruler, sampling
from ropex.evaluation.sampling import Estimate


def label(results: dict) -> str:
  """A run's name in tables and legends: name, and the eval-time overrides if any."""
  name = results['run']['name']
  if results.get('overrides'):
    name += ' [' + ', '.join(f'{k.removeprefix("model.")}={v}'
                             for k, v in results['overrides'].items()) + ']'
  return name


def unique_labels(results: Sequence[dict]) -> list[str]:
  labels = [label(r) for r in results]
  seen: dict[str, int] = {}
  out = []
  for name in labels:
    seen[name] = seen.get(name, 0) + 1
    out.append(name if labels.count(name) == 1 else f'{name} #{seen[name]}')
  return out


def describe_pe(results: dict) -> str:
  """``rope θ=1e+04``, ``prope 12/16 θ=1e+04``, ``none`` (+ ``÷4`` for position interpolation);
  layer types joined with ``/``."""
  half = int(results['run']['model']['head_dim']) // 2
  parts = []
  for layer in results['run']['layers']:
    kind = layer['pe_kind']
    if kind == 'none':
      parts.append('none')
      continue
    rotated = len(layer['rotated_chunks'])
    text = kind + ('' if rotated == half else f' {rotated}/{half}')
    if layer.get('max_wavelength'):  # rotary kinds; bias / learned kinds declare no θ
      text += f' θ={layer["max_wavelength"]:g}'
    if layer.get('position_scale', 1.0) != 1.0:
      text += f' pos÷{layer["position_scale"]:g}'
    if layer.get('window'):
      text += f' w={layer["window"]}'
    parts.append(text)
  return ' / '.join(dict.fromkeys(parts))


def grids(results: dict) -> dict[str, dict]:
  """Every accuracy grid of one result: retrieval kinds, then tasks, then RULER tasks."""
  out = {f'retrieval: {k}': g for k, g in results.get('retrieval', {}).items()}
  out.update({f'task: {k}': g for k, g in results.get('tasks', {}).items()})
  out.update({f'ruler: {k}': g for k, g in results.get('ruler', {}).items()})
  return out


def primary(grid: dict) -> str:
  """The number a grid's tables and figures show (``accuracy``, ``token_accuracy``, ``recall``)."""
  return grid.get('primary', 'accuracy')


def mean_over_depths(grid: dict) -> list[float | None]:
  out = []
  for column in zip(*grid[primary(grid)]):
    values = [v for v in column if v is not None]
    out.append(float(np.mean(values)) if values else None)
  return out


def cell_examples(grid: dict) -> list[int]:
  """Examples per cell at each length (the fewest over depths; 0: none scored)."""
  return [min((n or 0 for n in column), default=0) for column in zip(*grid['examples'])]


# --- numbers at a length, with intervals ---------------------------------------------------
def fmt(value, digits: int = 3) -> str:
  if value is None or (isinstance(value, float) and np.isnan(value)):
    return '–'
  return f'{value:.{digits}g}' if abs(value) >= 100 else f'{value:.{digits}f}'


def units(results: dict, L: int) -> dict | None:
  """The per-unit losses of one length (``perplexity.units[L]``), None if not stored."""
  return ((results.get('perplexity') or {}).get('units') or {}).get(str(L))


def loss_at(results: dict, L: int) -> Estimate | None:
  """The loss (nats per scored token) at ``L`` with its ratio-estimator SE over units."""
  u = units(results, L)
  if u is not None:
    return sampling.ratio(u['loss'], u['weight'])
  p = results.get('perplexity')
  loss = dict(zip(p['lengths'], p['loss'])).get(L) if p else None
  return None if loss is None else Estimate(loss, None, 0)   # results without units


def perplexity_at(results: dict, L: int) -> float | None:
  est = loss_at(results, L)
  return None if est is None else _exp(est.value)


def _exp(x: float) -> float:
  return math.exp(x) if x < 700 else float('inf')


def perplexity_text(est: Estimate | None, digits: int = 3) -> str:
  """``exp(loss) ± exp(loss) h`` (``h``: the loss interval's half-width)."""
  if est is None:
    return '–'
  ppl = _exp(est.value)
  if est.half_width is None:
    return fmt(ppl, digits)
  return f'{fmt(ppl, digits)} ± {fmt(ppl * est.half_width, digits)}'


def perplexity_band(est: Estimate | None) -> tuple[float, float] | None:
  if est is None or est.low is None:
    return None
  return _exp(est.low), _exp(est.high)


def proportion_text(est: Estimate | None, digits: int = 2) -> str:
  """``p [low, high]`` (Wilson bounds: not symmetric, so no ±)."""
  if est is None:
    return '–'
  if est.low is None:
    return fmt(est.value, digits)
  return f'{fmt(est.value, digits)} [{fmt(est.low, digits)}, {fmt(est.high, digits)}]'


def grid_value(name: str):
  """``(result, L) -> the grid's primary number averaged over depths`` (None: not scored)."""
  def value(results: dict, L: int):
    g = grids(results).get(name)
    return dict(zip(g['lengths'], mean_over_depths(g))).get(L) if g else None
  return value


def grid_examples(name: str):
  def count(results: dict, L: int) -> int:
    g = grids(results).get(name)
    return dict(zip(g['lengths'], cell_examples(g))).get(L, 0) if g else 0
  return count


def grid_at(name: str):
  """``(result, L) -> Estimate`` of :func:`grid_value` with its Wilson interval."""
  value, count = grid_value(name), grid_examples(name)
  return lambda r, L: sampling.proportion([value(r, L)], count(r, L))


def ruler_value(results: dict, L: int) -> float | None:
  if not results.get('ruler'):
    return None
  lengths, table = ruler.average_table(results['ruler'])
  return dict(zip(lengths, table['average'])).get(L)


def ruler_examples(results: dict, L: int) -> int:
  """Independent examples behind RULER's average at ``L``: tasks x examples per cell."""
  tasks = (results.get('ruler') or {}).values()
  counts = [dict(zip(g['lengths'], cell_examples(g))).get(L, 0) for g in tasks]
  return 0 if not counts or min(counts) == 0 else len(counts) * min(counts)


def ruler_at(results: dict, L: int) -> Estimate | None:
  return sampling.proportion([ruler_value(results, L)], ruler_examples(results, L))
