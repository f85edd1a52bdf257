r"""``python -m ropex.bench [--json] [--configs peer,small]``: how fast ropex trains here.

One run measures, on the local devices:

* the matrix-multiply peak of the machine: jitted ``jnp.dot`` of large square matrices, per
  compute dtype (float32, bfloat16), best median over a few sizes;
* per benchmark config and compute dtype: the project's real train step
  (:func:`ropex.training.loop.make_train_step`, AdamW, donated state) — median step time over
  ``--steps`` steps after warm-up, tokens/s, model FLOPs per step by the formula below, the
  compiler's FLOP count of the same step, MFU = model FLOPs/s / peak of the compute dtype,
  and peak memory (XLA's buffer sizes of the compiled step, and the process's peak RSS from
  the build of the step through its warm-up: ``VmHWM``, reset per config);
  beside it (``--reference``, default on) the plain Flax reference of the same model
  (:mod:`ropex.tools.flax_reference`), its steps alternated with ropex's;
* the positional-encoding overhead: step time of RoPE, p-RoPE 0.25 and 0.75 over NoPE (first
  config, float32), timed round-robin so that load drift hits every encoding alike;
* the input pipeline: tokens/s of :func:`ropex.data.measure_throughput` against the tokens/s
  the train step consumes;
* with ``--scaling``: cost against sequence length per attention implementation (train and
  forward-only), against model size, and the fitted exponents of cost in T
  (:mod:`ropex.tools.scaling`); with ``--out DIR`` the results go to ``DIR/bench.json``,
  ``DIR/scaling.json`` and the figure ``DIR/scaling.png``.

Model FLOPs per step and MFU: the formula of :mod:`ropex.tools.flops` (the one the fit check
uses too; causal attention counts the mean attended keys, (T + 1) / 2).

Speed is measured here, never asserted in tests; ``tests/tools/test_tools_bench.py`` checks the
formula and the harness's output.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from ropex.config import defaults as config_base
from ropex import data
from ropex.training import loop, sharding
from ropex.model import config as model_config
from ropex.errors import ConfigError
from ropex.tools import bench_report
from ropex.tools import flax_reference
from ropex.tools import flops as flops_lib
from ropex.tools import scaling as scaling_lib
from ropex.tools import step_profile


@dataclasses.dataclass(frozen=True)
class BenchConfig:
  arch: str        # a preset of ropex.model.config (d, layers, heads, vocab, ...)
  batch_size: int
  seq_len: int
  dtypes: tuple[str, ...]   # compute dtypes timed by default (parameters stay float32)


BENCH_CONFIGS = {
    'peer': BenchConfig('peer', batch_size=8, seq_len=256, dtypes=('float32',)),
    'small': BenchConfig('small', batch_size=4, seq_len=512, dtypes=('float32', 'bfloat16')),
}
# (label, pe kind, p-RoPE fraction) timed for the positional-encoding overhead.
PE_VARIANTS = (('nope', 'none', None), ('rope', 'rope', None), ('prope_0.25', 'prope', 0.25),
               ('prope_0.75', 'prope', 0.75))
PEAK_SIZES = (1024, 2048, 3072)


def experiment_config(name: str, dtype: str = 'float32', pe: str = 'rope',
                      fraction: float | None = None):
  """The full experiment config of benchmark ``name`` (synthetic data, RoPE θ=10k default)."""
  if name not in BENCH_CONFIGS:
    raise ConfigError(f'--configs entry {name!r} is not a benchmark config; allowed: '
                      f'{", ".join(BENCH_CONFIGS)}')
  if dtype not in model_config.DTYPES:
    raise ConfigError(f'--dtypes entry {dtype!r} is not allowed; allowed: '
                      f'{", ".join(model_config.DTYPES)}')
  b = BENCH_CONFIGS[name]
  fields = {'max_wavelength': 10_000} if pe != 'none' else {}
  if fraction is not None:
    fields['fraction'] = fraction
  c = config_base.base_config(b.arch, pe=model_config.pe_block(pe, **fields), dtype=dtype)
  c.name = f'bench_{name}_{dtype}_{pe}'
  c.train.batch_size, c.train.seq_len = b.batch_size, b.seq_len
  return c


def _median_seconds(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def matmul_peak(dtype: str, sizes=PEAK_SIZES, repeats: int = 10) -> float:
  """FLOP/s of a jitted square ``jnp.dot`` in ``dtype``: the best median over ``sizes``.

  For a low-precision dtype the dot is timed with its default output and with float32
  accumulation (``preferred_element_type``, what :mod:`ropex.model.ops` uses), and the faster counts:
  the peak is the best this machine's compiler offers for that dtype."""
  variants = [None] if jnp.dtype(dtype) == jnp.float32 else [None, jnp.float32]
  best = 0.0
  for n in sizes:
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32).astype(dtype)
    for accumulate in variants:
      dot = jax.jit(functools.partial(jnp.dot, preferred_element_type=accumulate))
      jax.block_until_ready(dot(a, b))
      best = max(best, 2.0 * n ** 3 / _median_seconds(lambda: dot(a, b), repeats))
  return best


def _batch(config, abstract_batch):
  """The first batch of the config's real input pipeline, placed like the step expects."""
  it = data.make_iterator(config, 'train')
  local = next(it)
  if hasattr(it, 'close'):
    it.close()
  return {k: jax.device_put(np.asarray(local[k], v.dtype), v.sharding)
          for k, v in abstract_batch.items()}


@dataclasses.dataclass
class StepRunner:
  """A compiled train step and its state, timed one step at a time."""
  config: object
  compiled: object
  state: object
  batch: dict

  @classmethod
  def build(cls, config) -> 'StepRunner':
    mesh = sharding.make_mesh(config)
    train_step, abstract_state, abstract_batch = loop.make_train_step(config, mesh)
    compiled = train_step.lower(abstract_state, abstract_batch).compile()
    return cls(config, compiled, loop.init_state(config, mesh), _batch(config, abstract_batch))

  def run(self, steps: int) -> list[float]:
    times = []
    for _ in range(steps):
      start = time.perf_counter()
      self.state, metrics = self.compiled(self.state, self.batch)
      jax.block_until_ready((self.state, metrics))
      times.append(time.perf_counter() - start)
    loss = float(metrics['loss'])
    if not np.isfinite(loss):
      raise FloatingPointError(f'{self.config.name}: non-finite loss {loss} while timing')
    return times


def compiler_flops(config) -> float:
  """XLA's cost-analysis FLOPs of the whole train step, compiled with unrolled layers (XLA
  counts a loop body once, so the scanned step would be under-counted by the layer count).
  XLA reports the program of one device: times the mesh size for all devices together."""
  config = config.copy_and_resolve_references()
  config.model.scan_layers = False
  mesh = sharding.make_mesh(config)
  train_step, abstract_state, abstract_batch = loop.make_train_step(config, mesh)
  cost = train_step.lower(abstract_state, abstract_batch).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get('flops', float('nan'))) * mesh.devices.size


def _memory(compiled) -> dict:
  """XLA's buffers of the compiled step and the process's peak RSS since the last
  :func:`ropex.tools.scaling.reset_peak_rss` (``VmHWM``)."""
  out = {'peak_rss_bytes': scaling_lib.peak_rss_bytes()}
  try:
    m = compiled.memory_analysis()
    out['xla_buffers_bytes'] = int(m.argument_size_in_bytes + m.output_size_in_bytes
                                   + m.temp_size_in_bytes - m.alias_size_in_bytes)
    out['xla_temp_bytes'] = int(m.temp_size_in_bytes)
  except (AttributeError, NotImplementedError, TypeError):
    pass
  return out


class _Reference:
  """The plain Flax reference of a benchmark config (:mod:`ropex.tools.flax_reference`),
  compiled and warmed up, timed one step at a time."""

  def __init__(self, config, dtype: str, warmup: int):
    shape = flax_reference.Shape.of(config.model)
    self.step, self.state, self.tokens = flax_reference.make(
        shape, dtype, config.train.batch_size, config.train.seq_len)
    for _ in range(max(warmup, 1)):
      self.time_step()

  def time_step(self) -> float:
    start = time.perf_counter()
    self.state, loss = self.step(self.state, self.tokens)
    jax.block_until_ready((self.state, loss))
    return time.perf_counter() - start


def bench_step(name: str, dtype: str, peak: float, steps: int, warmup: int,
               count_compiler_flops: bool = True, profile: bool = False,
               with_reference: bool = False) -> dict:
  """Times the real train step of benchmark ``name`` in compute ``dtype`` (and, with
  ``with_reference``, the plain Flax reference of the same model, steps alternated)."""
  config = experiment_config(name, dtype)
  b = BENCH_CONFIGS[name]
  scaling_lib.reset_peak_rss()   # the peak of this config's step alone
  start = time.perf_counter()
  runner = StepRunner.build(config)
  compile_s = time.perf_counter() - start
  runner.run(max(warmup, 1))     # one step at least, so that the peak includes a step
  memory = _memory(runner.compiled)   # before the reference allocates anything
  reference = _Reference(config, dtype, warmup) if with_reference else None
  times, reference_times = [], []
  for _ in range(steps):   # alternated, so that both see the same machine
    times += runner.run(1)
    if reference is not None:
      reference_times.append(reference.time_step())
  step_s = statistics.median(times)
  tokens = b.batch_size * b.seq_len
  flops = flops_lib.model_flops_per_step(model_config.ModelConfig.from_config(config.model),
                                         b.batch_size, b.seq_len)
  result = {
      'config': name, 'dtype': dtype, 'batch_size': b.batch_size, 'seq_len': b.seq_len,
      'steps_timed': steps, 'step_s_median': step_s, 'step_s_min': min(times),
      'step_s_max': max(times), 'tokens_per_s': tokens / step_s,
      'model_flops_per_step': flops, 'peak_flops': peak,
      'mfu': flops_lib.mfu(flops, step_s, peak), 'compile_s': compile_s, **memory}
  if reference is not None:
    ref_s = statistics.median(reference_times)
    result.update(reference_step_s_median=ref_s, reference_tokens_per_s=tokens / ref_s,
                  reference_mfu=flops_lib.mfu(flops, ref_s, peak), over_reference=ref_s / step_s)
  if profile:
    result['profile'] = step_profile.profile(lambda: runner.run(1), runner.compiled.as_text())
  if count_compiler_flops:
    result['compiler_flops_per_step'] = compiler_flops(config)
    result['compiler_over_model_flops'] = result['compiler_flops_per_step'] / flops
  return result


def pe_overhead(name: str, rounds: int, steps_per_round: int, warmup: int) -> dict:
  """Median step time per encoding (float32), timed round-robin, and the ratios to NoPE."""
  runners = {}
  for label, kind, fraction in PE_VARIANTS:
    runners[label] = StepRunner.build(experiment_config(name, 'float32', kind, fraction))
    runners[label].run(warmup)
  times = {label: [] for label in runners}
  for _ in range(rounds):
    for label, runner in runners.items():
      times[label].extend(runner.run(steps_per_round))
  median = {label: statistics.median(t) for label, t in times.items()}
  return {'config': name, 'dtype': 'float32', 'steps_timed': rounds * steps_per_round,
          'step_s_median': median,
          'over_nope': {label: median[label] / median['nope'] for label in median}}


def pipeline_vs_trainer(name: str, trainer_tokens_per_s: float, seconds: float) -> dict:
  config = experiment_config(name)
  produced = data.measure_throughput(config, seconds)
  return {'config': name, 'data_source': config.data.source,
          'pipeline_tokens_per_s': produced, 'trainer_tokens_per_s': trainer_tokens_per_s,
          'ratio': produced / trainer_tokens_per_s}


def machine() -> dict:
  cpu = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo') as f:
      cpu = next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
  except (OSError, StopIteration):
    pass
  try:
    ram = os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')
  except (ValueError, OSError):
    ram = None
  return {'cpu': cpu, 'cores': os.cpu_count(), 'ram_bytes': ram,
          'load_average': os.getloadavg(), 'jax': jax.__version__,
          'backend': jax.default_backend(), 'devices': jax.device_count(),
          'xla_flags': os.environ.get('XLA_FLAGS', ''),
          'glibc_tunables': os.environ.get('GLIBC_TUNABLES', '')}


# glibc's malloc hands XLA:CPU every large buffer as fresh mmap'ed memory, faulted in 4 KiB at a
# time on every step (~250k page faults per peer step, a quarter of its CPU time). Backing
# malloc with transparent huge pages (kernel THP mode 'madvise' or 'always') removes them.
# glibc reads tunables only at process start, so main() re-executes itself once with them.
MALLOC_TUNABLES = 'glibc.malloc.hugetlb=1'


def _reexec_with_malloc_tunables(argv) -> None:
  current = os.environ.get('GLIBC_TUNABLES', '')
  if MALLOC_TUNABLES in current or os.environ.get('ROPEX_BENCH_REEXEC'):
    return
  env = dict(os.environ, ROPEX_BENCH_REEXEC='1',
             GLIBC_TUNABLES=':'.join(filter(None, [current, MALLOC_TUNABLES])))
  os.execve(sys.executable, [sys.executable, '-m', 'ropex.bench', *argv[1:]], env)


def define_flags() -> None:
  """The CLI's flags (defined only when run, so other ropex CLIs can share a process)."""
  flags.DEFINE_bool('json', False, 'Print one JSON object per line instead of a table.')
  flags.DEFINE_list('configs', ['peer', 'small'], 'Benchmark configs to time.')
  flags.DEFINE_list('dtypes', None, 'Compute dtypes (default: per config, peer float32, '
                    'small float32 and bfloat16).')
  flags.DEFINE_integer('steps', 10, 'Timed steps per config (median reported).')
  flags.DEFINE_integer('warmup', 2, 'Untimed steps after compilation.')
  flags.DEFINE_integer('pe_rounds', 5, 'Round-robin rounds of the PE overhead (0 skips it); '
                       'each round times every encoding.')
  flags.DEFINE_integer('pe_steps', 2, 'Steps per encoding per round.')
  flags.DEFINE_bool('malloc_hugepages', True, f'Re-run under GLIBC_TUNABLES={MALLOC_TUNABLES} '
                    '(see MALLOC_TUNABLES).')
  flags.DEFINE_float('pipeline_seconds', 5.0, 'Seconds of input-pipeline measurement '
                     '(0 skips it).')
  flags.DEFINE_bool('profile', False, 'Also trace two steps of every config and report the '
                    'time by op category (ropex.tools.step_profile).')
  flags.DEFINE_bool('reference', True, 'Also time the plain Flax reference of each config '
                    '(ropex.tools.flax_reference), steps alternated with ropex\'s.')
  scaling_lib.define_flags()   # --scaling and its plan
  flags.DEFINE_string('out', None, 'Directory for bench.json, scaling.json and scaling.png.')
  flags.DEFINE_string('markdown', None, 'Also write the results as Markdown tables to this file '
                      '(ropex.tools.bench_report; the performance page includes them).')


def run(configs, dtypes=None, steps=10, warmup=2, pe_rounds=5, pe_steps=2,
        pipeline_seconds=5.0, emit=lambda r: None, scaling: scaling_lib.ScalingPlan | None = None,
        out: str | None = None, profile: bool = False, reference: bool = True) -> list[dict]:
  """Runs every measurement; ``emit`` gets each result dict as soon as it is ready."""
  for name in configs:
    experiment_config(name)  # validates the names before anything is compiled
  results = []
  start = time.perf_counter()

  def add(kind, r):   # elapsed_s: when the result was ready, seconds after the run started
    r = {'kind': kind, **r, 'elapsed_s': time.perf_counter() - start}
    results.append(r)
    emit(r)

  add('machine', machine())
  needed = sorted({d for n in configs for d in (dtypes or BENCH_CONFIGS[n].dtypes)})
  peaks = {d: matmul_peak(d) for d in needed}
  add('peak', {'peak_flops': peaks})
  for name in configs:
    for dtype in dtypes or BENCH_CONFIGS[name].dtypes:
      r = bench_step(name, dtype, peaks[dtype], steps, warmup, profile=profile,
                     with_reference=reference)
      r['peak_flops'] = peaks[dtype]
      add('step', r)
  if pe_rounds:
    add('pe_overhead', pe_overhead(configs[0], pe_rounds, pe_steps, warmup))
  if pipeline_seconds:
    for name in configs:
      trainer = max(r['tokens_per_s'] for r in results
                    if r['kind'] == 'step' and r['config'] == name)
      add('pipeline', pipeline_vs_trainer(name, trainer, pipeline_seconds))
  if scaling is not None:
    peak = peaks.get('float32') or matmul_peak('float32')
    progress = lambda p: emit({'kind': 'scaling_point', **p})
    add('scaling', scaling_lib.run(scaling, peak, progress))
  if out:
    _write(results, out)
  return results


def _write(results: list[dict], out: str) -> None:
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, 'bench.json'), 'w') as f:
    json.dump([r for r in results if r['kind'] != 'scaling'], f, indent=1)
  machine_info = next(r for r in results if r['kind'] == 'machine')
  for r in results:
    if r['kind'] == 'scaling':
      scaling_lib.write({k: v for k, v in r.items() if k != 'kind'}, out, machine_info)


def main(argv):
  f = flags.FLAGS
  if f.malloc_hugepages:
    _reexec_with_malloc_tunables(sys.argv)
  del argv
  emit = (lambda r: print(json.dumps(r), flush=True)) if f.json else (lambda r: None)
  results = run(f.configs, f.dtypes, f.steps, f.warmup, f.pe_rounds, f.pe_steps,
                f.pipeline_seconds, emit, scaling_lib.plan_from_flags(f),
                f.out, f.profile, f.reference)
  if f.markdown:
    bench_report.write_markdown(results, f.markdown,
                                ' '.join(['python -m ropex.bench'] + sys.argv[1:]))
  if not f.json:
    bench_report.print_table(results)
    bench_report.print_elapsed(results)
