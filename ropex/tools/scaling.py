r"""Scaling curves of ``python -m ropex.bench --scaling``: how cost grows with sequence length and
model size, on one local device.

* **length** (train step): a fixed number of tokens per batch (``batch = tokens // T``) over
  lengths ``T``, per attention implementation; time per sequence, tokens/s, MFU (model FLOPs
  of :mod:`ropex.tools.flops`, causal) and peak memory: XLA's temporary buffers of the compiled
  step and the process's peak RSS while the point ran (``VmHWM``, reset per point through
  ``/proc/self/clear_refs``).
* **eval** (forward only): the same at lengths up to 16x the training length.
* **size**: the train step of several model presets at one length.

The exponent of cost in ``T``: slopes of ``log(time per sequence)`` against ``log(T)``, fitted
over the low and the high half of the lengths (:func:`fit_exponents`). A sequence's cost is
``a T + b T^2`` (matmuls, attention), so the slope is ~1 while the matmuls dominate and tends
to 2 once attention does. ``splash`` runs only in Pallas interpret mode on a CPU (an emulation,
not a speed) and ``cudnn`` only on a GPU: the curves cover the implementations that run natively
on the backend (:func:`native_impls`).

The ``python -m ropex.bench`` side: :func:`define_flags` (``--scaling`` and the plan's flags),
:func:`plan_from_flags` and :func:`print_result` (the table it prints).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import resource
import statistics
import time

from absl import flags
import jax
import numpy as np

from ropex.config import defaults
from ropex.errors import ConfigError
from ropex.model import config as model_config
from ropex.training import loop, sharding, step as step_lib
from ropex.tools import flops as flops_lib

_NATIVE = {'cpu': ('xla', 'dense', 'chunked'), 'gpu': ('xla', 'dense', 'chunked', 'cudnn'),
           'tpu': ('xla', 'dense', 'chunked', 'splash')}


@dataclasses.dataclass(frozen=True)
class ScalingPlan:
  """What ``--scaling`` measures (defaults sized for a few minutes on 2 CPU cores)."""
  length_arch: str = 'tiny'
  train_lens: tuple[int, ...] = (256, 512, 1024, 2048, 4096)
  tokens_per_batch: int = 4096
  train_len: int = 256           # the training length the eval lengths are multiples of
  eval_factors: tuple[int, ...] = (1, 2, 4, 8, 16)
  attention_chunk: int = 256     # chunked attention's query block
  size_archs: tuple[str, ...] = ('tiny', 'peer', 'small')
  size_len: int = 256
  size_tokens: int = 2048
  steps: int = 2
  warmup: int = 1
  impls: tuple[str, ...] | None = None   # None: every native implementation of the backend


def native_impls(backend: str | None = None) -> tuple[str, ...]:
  """Attention implementations that run natively (not emulated) on ``backend``."""
  return _NATIVE.get(backend or jax.default_backend(), ('xla', 'dense', 'chunked'))


def point_config(arch: str, impl: str, seq_len: int, tokens: int, chunk: int,
                 dtype: str = 'float32'):
  """The experiment config of one point: synthetic data, RoPE θ=10k, ``tokens // seq_len`` rows."""
  if tokens % seq_len:
    raise ConfigError(f'scaling: tokens per batch {tokens} is not a multiple of length {seq_len}')
  c = defaults.base_config(arch, pe=model_config.pe_block('rope', max_wavelength=10_000),
                           dtype=dtype, attention_impl=impl, attention_chunk=chunk)
  c.name = f'scaling_{arch}_{impl}_{seq_len}'
  c.train.batch_size, c.train.seq_len = tokens // seq_len, seq_len
  return c


def reset_peak_rss() -> bool:
  """Resets the process's peak RSS (Linux ``clear_refs`` 5); False where that is not possible."""
  try:
    with open('/proc/self/clear_refs', 'w') as f:
      f.write('5')
    return True
  except OSError:
    return False


def peak_rss_bytes() -> int:
  """``VmHWM`` of this process (the peak since the last reset), else ``ru_maxrss``."""
  try:
    with open('/proc/self/status') as f:
      for line in f:
        if line.startswith('VmHWM:'):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _timed(fn, steps: int, warmup: int) -> float:
  for _ in range(warmup):
    jax.block_until_ready(fn())
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def _temp_bytes(compiled) -> int | None:
  try:
    return int(compiled.memory_analysis().temp_size_in_bytes)
  except (AttributeError, NotImplementedError, TypeError):
    return None


def _batch(config, abstract):
  from ropex.tools import bench  # the real input pipeline's first batch, placed for the step
  return bench._batch(config, abstract)  # pylint: disable=protected-access


class InitialStates:
  """The initial train state of each (arch, dtype), made once and kept on the host: every point
  of one arch has the same parameters (the attention implementation and the length change no
  parameter), so a point places a copy instead of compiling and running the init again."""

  def __init__(self):
    self._host = {}

  def _host_state(self, config, mesh):
    key = (config.model.arch, config.model.dtype, int(config.train.seed))
    if key not in self._host:
      self._host[key] = jax.device_get(loop.init_state(config, mesh))
    return self._host[key]

  def train_state(self, config, mesh, abstract_state):
    """The initial state placed like ``abstract_state`` (ShapeDtypeStructs with shardings)."""
    shardings = jax.tree.map(lambda a: a.sharding, abstract_state)
    return jax.device_put(self._host_state(config, mesh), shardings)

  def params(self, config, mesh, abstract_params):
    """The initial parameters alone, placed like ``abstract_params``."""
    shardings = jax.tree.map(lambda a: a.sharding, abstract_params)
    return jax.device_put(self._host_state(config, mesh).params, shardings)


def measure_train(config, steps: int, warmup: int, peak: float,
                  states: InitialStates | None = None) -> dict:
  """One train-step point of ``config``."""
  reset_peak_rss()
  mesh = sharding.make_mesh(config, jax.local_devices()[:1])
  train_step, abstract_state, abstract_batch = loop.make_train_step(config, mesh)
  compiled = train_step.lower(abstract_state, abstract_batch).compile()
  holder = {'state': (states or InitialStates()).train_state(config, mesh, abstract_state)}
  batch = _batch(config, abstract_batch)

  def one():
    holder['state'], metrics = compiled(holder['state'], batch)
    return metrics
  seconds = _timed(one, steps, warmup)
  cfg = model_config.ModelConfig.from_config(config.model)
  b, t = int(config.train.batch_size), int(config.train.seq_len)
  flops = flops_lib.model_flops_per_step(cfg, b, t)
  return _point(config, 'train', seconds, flops, peak, compiled)


def measure_eval(config, steps: int, warmup: int, peak: float,
                 states: InitialStates | None = None) -> dict:
  """One forward-only point of ``config`` (the evaluator's step: loss and accuracy sums)."""
  reset_peak_rss()
  mesh = sharding.make_mesh(config, jax.local_devices()[:1])
  setup = step_lib.make_setup(config, mesh)
  eval_step = step_lib.make_eval_step(setup, len(config.data.tasks))
  abstract = step_lib.abstract_batch(setup, int(config.train.batch_size))
  compiled = eval_step.lower(setup.abstract_state.params, abstract).compile()
  params = (states or InitialStates()).params(config, mesh, setup.abstract_state.params)
  batch = _batch(config, abstract)
  seconds = _timed(lambda: compiled(params, batch), steps, warmup)
  cfg = model_config.ModelConfig.from_config(config.model)
  flops = flops_lib.forward_flops(cfg, int(config.train.batch_size), int(config.train.seq_len))
  return _point(config, 'eval', seconds, flops, peak, compiled)


def _point(config, mode: str, seconds: float, flops: float, peak: float, compiled) -> dict:
  b, t = int(config.train.batch_size), int(config.train.seq_len)
  return {'mode': mode, 'arch': config.model.arch, 'impl': config.model.attention_impl,
          'dtype': config.model.dtype, 'seq_len': t, 'batch_size': b, 'step_s': seconds,
          'seconds_per_sequence': seconds / b, 'tokens_per_s': b * t / seconds,
          'model_flops': flops, 'mfu': flops_lib.mfu(flops, seconds, peak),
          'xla_temp_bytes': _temp_bytes(compiled), 'peak_rss_bytes': peak_rss_bytes()}


def fit_exponents(seq_lens, seconds) -> dict:
  """Slopes of ``log(seconds)`` against ``log(seq_lens)``: over all points, the lower half and
  the upper half of the lengths (the middle point, with an odd count, belongs to both)."""
  t, y = np.asarray(seq_lens, float), np.log(np.asarray(seconds, float))
  order = np.argsort(t)
  t, y = t[order], y[order]
  x = np.log(t)
  n = len(x)
  if n < 3:
    raise ValueError(f'fit_exponents needs at least 3 lengths, got {n}')
  half = math.ceil(n / 2)
  slope = lambda sl: float(np.polyfit(x[sl], y[sl], 1)[0])
  return {'all': slope(slice(None)), 'low': slope(slice(0, half)),
          'high': slope(slice(n - half, n)),
          'low_range': [float(t[0]), float(t[half - 1])],
          'high_range': [float(t[n - half]), float(t[-1])]}


def exponents(points: list[dict], key: str = 'seconds_per_sequence') -> dict:
  """``{mode: {impl: fit_exponents(...)}}`` of the length points, per mode and impl."""
  out = {}
  for mode in sorted({p['mode'] for p in points}):
    for impl in sorted({p['impl'] for p in points if p['mode'] == mode}):
      pts = [p for p in points if p['mode'] == mode and p['impl'] == impl]
      if len(pts) >= 3:
        out.setdefault(mode, {})[impl] = fit_exponents([p['seq_len'] for p in pts],
                                                       [p[key] for p in pts])
  return out


def run(plan: ScalingPlan, peak: float, emit=lambda r: None) -> dict:
  """Every point of ``plan`` (float32); ``emit`` gets each point as it is measured."""
  impls = plan.impls or native_impls()
  load_start = os.getloadavg()
  length, size, states = [], [], InitialStates()
  for impl in impls:
    for t in plan.train_lens:
      c = point_config(plan.length_arch, impl, t, plan.tokens_per_batch, plan.attention_chunk)
      length.append(measure_train(c, plan.steps, plan.warmup, peak, states))
      emit(length[-1])
    for factor in plan.eval_factors:
      t = plan.train_len * factor
      c = point_config(plan.length_arch, impl, t, max(plan.tokens_per_batch, t),
                       plan.attention_chunk)
      length.append(measure_eval(c, plan.steps, plan.warmup, peak, states))
      emit(length[-1])
  for arch in plan.size_archs:
    c = point_config(arch, 'auto', plan.size_len, plan.size_tokens, 1024)
    r = measure_train(c, plan.steps, plan.warmup, peak, states)
    r['params'] = model_lib_params(c)
    size.append(r)
    emit(r)
  return {'plan': dataclasses.asdict(plan), 'impls': list(impls), 'peak_flops': peak,
          'skipped_impls': {i: 'Pallas interpret mode on CPU: an emulation, not a speed'
                            if i == 'splash' else 'GPU only'
                            for i in ('splash', 'cudnn') if i not in native_impls()},
          'length': length, 'size': size, 'exponents': exponents(length),
          'load_average': {'start': load_start, 'end': os.getloadavg()}}


def model_lib_params(config) -> int:
  from ropex import model as model_lib
  return int(model_lib.count_params(model_config.ModelConfig.from_config(config.model))['params_total'])


def write(result: dict, out_dir: str, machine: dict | None = None) -> dict:
  """Writes ``scaling.json`` and ``scaling.png`` into ``out_dir``; returns their paths."""
  os.makedirs(out_dir, exist_ok=True)
  paths = {'json': os.path.join(out_dir, 'scaling.json'),
           'png': os.path.join(out_dir, 'scaling.png')}
  with open(paths['json'], 'w') as f:
    json.dump({'machine': machine or {}, **result}, f, indent=1)
  from ropex.tools import scaling_plot
  scaling_plot.figure(result, paths['png'])
  return paths


def define_flags() -> None:
  """``--scaling`` and the plan's flags (``python -m ropex.bench`` defines them when run)."""
  flags.DEFINE_bool('scaling', False, 'Also measure cost against sequence length (per '
                    'attention implementation, train and forward-only) and model size.')
  plan = ScalingPlan()
  flags.DEFINE_list('scaling_lens', [str(t) for t in plan.train_lens],
                    'Train lengths of the --scaling curves.')
  flags.DEFINE_integer('scaling_tokens', plan.tokens_per_batch,
                       'Tokens per batch of the --scaling length curves.')
  flags.DEFINE_list('scaling_archs', list(plan.size_archs), 'Model presets of the size curve.')


def plan_from_flags(f) -> ScalingPlan | None:
  """The plan of the flags of :func:`define_flags` (``f``: the parsed flags); None without
  ``--scaling``."""
  if not f.scaling:
    return None
  try:
    lens = tuple(int(t) for t in f.scaling_lens)
  except ValueError:
    raise ConfigError(f'--scaling_lens {",".join(f.scaling_lens)} must be integers') from None
  return ScalingPlan(train_lens=lens, tokens_per_batch=f.scaling_tokens,
                     size_archs=tuple(f.scaling_archs))


def print_result(r: dict) -> None:
  """The table of a :func:`run` result: every point, the fitted exponents, what was skipped."""
  print(f'{"mode":5s} {"attention":9s} {"T":>6s} {"batch":>5s} {"s/seq":>9s} {"tokens/s":>9s} '
        f'{"MFU":>6s} {"XLA tmp GiB":>11s} {"peakRSS GiB":>11s}')
  for p in r['length'] + r['size']:
    tmp = (p['xla_temp_bytes'] or float('nan')) / 2**30
    print(f'{p["mode"]:5s} {p["impl"]:9s} {p["seq_len"]:6d} {p["batch_size"]:5d} '
          f'{p["seconds_per_sequence"]:9.4f} {p["tokens_per_s"]:9.0f} {p["mfu"]:6.1%} '
          f'{tmp:11.3f} {p["peak_rss_bytes"] / 2**30:11.2f}' +
          (f'  ({p["arch"]}, {p["params"] / 1e6:.1f}M params)' if 'params' in p else ''))
  for mode, fits in r['exponents'].items():
    for impl, e in fits.items():
      print(f'exponent of {mode} time per sequence in T, {impl}: {e["low"]:.2f} over '
            f'T={e["low_range"][0]:.0f}..{e["low_range"][1]:.0f}, {e["high"]:.2f} over '
            f'T={e["high_range"][0]:.0f}..{e["high_range"][1]:.0f}')
  for impl, why in r['skipped_impls'].items():
    print(f'not measured: {impl} ({why})')
