r"""TPU fit check without a TPU: compile the real sharded train step ahead of time for a TPU
topology from this (CPU) host and report per-chip memory, FLOPs and an estimated run time.

  python -m ropex.compile --config configs/prope_2b.py --topology v5e:16x16 [--json]
  python -m ropex.compile --config configs/rope_2b.py:data=flan --topology v4:8x8x8 --mfu 0.5

Needs libtpu (``pip install -e '.[tpu]'``; it only compiles, nothing runs). Exit status: 0 the
step fits, 1 it does not (the largest consumers are named), 2 bad config or topology.

Numbers reported:

* memory per chip from ``compiled.memory_analysis()``: arguments (parameters, optimizer state,
  batch), outputs, temporaries (activations, gradients, workspace), generated code; the total
  (arguments + outputs - donated/aliased + temporaries + code) is compared with the chip's HBM.
* ``flops_per_step``: matmul FLOPs the step executes on all chips, counted from its jaxpr with
  scan trip counts (:mod:`ropex.tools.flops`; includes backward and rematerialisation).
  ``xla_flops_per_chip`` is XLA's ``cost_analysis()``, which counts each loop body once.
* ``model_flops_per_step``: tokens x [6 x (non-embedding parameters + the tied output
  projection V x D) + causal attention, 12 x heads x head_dim x mean attended keys, per layer];
  MFU is defined against it, so the estimated step time is
  ``model_flops / (chips x peak bf16 FLOP/s x MFU)``.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time

from absl import app, flags
import jax
from ml_collections import config_flags

from ropex import errors
from ropex.training import loop, sharding
from ropex.model import attention, platform
from ropex.tools import flops as step_flops, tpu_topology
from ropex.experiments import sweep
from ropex.model.config import ModelConfig
from ropex.errors import ConfigError

GIB = tpu_topology.GIB
_UNITS = {'': 1, 'B': 1, 'K': 2 ** 10, 'M': 2 ** 20, 'G': 2 ** 30, 'T': 2 ** 40}
EXIT_FITS, EXIT_DOES_NOT_FIT, EXIT_CONFIG = (errors.EXIT_OK, errors.EXIT_DOES_NOT_FIT,
                                             errors.EXIT_USAGE)


def model_flops_per_step(config) -> float:
  """Model FLOPs of one train step of ``config`` (:func:`ropex.tools.flops.model_flops_per_step`)."""
  return step_flops.model_flops_per_step(ModelConfig.from_config(config.model),
                                         int(config.train.batch_size), int(config.train.seq_len))


def attention_impls(config, on: str) -> list[str]:
  """The attention implementation each layer type of ``config`` runs on platform ``on``."""
  cfg = ModelConfig.from_config(config.model)
  seq_len = int(config.train.seq_len)
  out = []
  for spec in cfg.pattern:
    opts = attention.Options(window=spec.window, softcap=cfg.attn_logit_softcap,
                             chunk=cfg.attention_chunk)
    impl = attention.resolve(cfg.attention_impl, seq_len, opts, on=on, dtype=cfg.dtype,
                             head_dim=cfg.head_dim)
    if impl not in out:
      out.append(impl)
  return out


def per_chip_bytes_of(tree) -> float:
  """Bytes one chip holds of a tree of sharded ShapeDtypeStructs."""
  total = 0
  for leaf in jax.tree_util.tree_leaves(tree):
    shard = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
    total += math.prod(shard) * leaf.dtype.itemsize
  return total


def _bytes(number: str, unit: str) -> int:
  return int(float(number) * _UNITS[unit])


def parse_oom(message: str) -> dict:
  """What XLA's RESOURCE_EXHAUSTED message says: bytes needed / available, largest buffers."""
  out = {'required_bytes': None, 'available_bytes': None, 'allocations': []}
  m = (re.search(r'HLO temporaries \(([\d.]+)([KMGT]?)\) exceeds available HBM '
                 r'\(([\d.]+)([KMGT]?)\)', message) or
       re.search(r'Used ([\d.]+)([KMGT]?) of ([\d.]+)([KMGT]?) hbm', message))
  if m:
    out['required_bytes'] = _bytes(m.group(1), m.group(2))
    out['available_bytes'] = _bytes(m.group(3), m.group(4))
  for block in re.split(r'\n\s*\d+\. Size: ', message)[1:]:
    size = re.match(r'([\d.]+)([KMGT]?)', block)
    operator = re.search(r'op_name="([^"]+)"', block)
    shape = re.search(r'Shape: (\S+)', block)
    out['allocations'].append({
        'bytes': _bytes(size.group(1), size.group(2)) if size else None,
        'operator': operator.group(1) if operator else '',
        'shape': shape.group(1) if shape else ''})
  return out


def _out_of_memory(result: dict, message: str, seconds: float) -> dict:
  """``result`` for a step that does not fit: the bytes XLA asked for and its largest buffers."""
  oom = parse_oom(message)
  arguments = sum(result[f'{k}_bytes_per_chip'] for k in ('parameter', 'optimizer', 'batch'))
  needed = None if oom['required_bytes'] is None else oom['required_bytes'] + arguments
  result.update(fits=False, compile_seconds=seconds,
                per_chip_bytes=needed, xla_temporaries_bytes=oom['required_bytes'],
                xla_message=message.splitlines()[0],
                xla_available_bytes=oom['available_bytes'],
                largest_allocations=oom['allocations'][:10], memory=None)
  return result


def _memory(compiled, hbm_bytes: int) -> dict:
  """Per-chip memory and FLOPs of a compiled step (XLA's memory and cost analyses)."""
  mem = compiled.memory_analysis()
  memory = {'arguments': mem.argument_size_in_bytes, 'outputs': mem.output_size_in_bytes,
            'aliased': mem.alias_size_in_bytes, 'temporaries': mem.temp_size_in_bytes,
            'generated_code': mem.generated_code_size_in_bytes}
  per_chip = (memory['arguments'] + memory['outputs'] - memory['aliased'] +
              memory['temporaries'] + memory['generated_code'])
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return dict(memory=memory, per_chip_bytes=per_chip, fits=per_chip <= hbm_bytes,
              xla_flops_per_chip=float((cost or {}).get('flops', float('nan'))),
              largest_allocations=[])


def fit_check(config, topology: tpu_topology.Topology, mfu: float = 0.4,
              devices=None) -> dict:
  """Compiles ``config``'s train step for ``topology`` and returns the figures (see module
  doc). ``devices`` defaults to libtpu's compile-only devices of the topology."""
  if not 0 < mfu <= 1:
    raise ConfigError(f'--mfu={mfu} must be in (0, 1]')
  devices = tpu_topology.compile_devices(topology) if devices is None else list(devices)
  target = devices[0].platform
  # The compiled step reads no data: the tokenizer and dataset files need not exist here.
  sweep.validate_except_data(config, len(devices), tpu_topology.process_count(devices))
  mesh = sharding.make_mesh(config, devices)
  train_step, abstract_state, abstract_batch = loop.make_train_step(config, mesh)
  chip, chips = topology.chip, len(devices)
  result = {
      'config': config.get('name', 'run'), 'topology': topology.name,
      'num_slices': topology.num_slices, 'num_chips': chips, 'chip': chip.name,
      'mesh': dict(zip(mesh.axis_names, (int(s) for s in mesh.devices.shape))),
      'batch_size': int(config.train.batch_size), 'seq_len': int(config.train.seq_len),
      'steps': int(config.train.steps), 'hbm_bytes': chip.hbm_bytes,
      'parameter_bytes_per_chip': per_chip_bytes_of(abstract_state.params),
      'optimizer_bytes_per_chip': per_chip_bytes_of(abstract_state.opt_state),
      'batch_bytes_per_chip': per_chip_bytes_of(abstract_batch),
      'attention_impl': '+'.join(attention_impls(config, target)),
      'remat': str(config.model.remat), 'dtype': str(config.model.dtype),
  }
  started = time.perf_counter()
  with platform.target(target):  # trace the code paths of the devices, not of this host
    traced = train_step.trace(abstract_state, abstract_batch)
  result['flops_per_step'] = step_flops.jaxpr_flops(traced.jaxpr)
  result['model_flops_per_step'] = model_flops_per_step(config)
  peak = chips * chip.peak_bf16_flops * mfu
  result.update(mfu=mfu, peak_flops_per_chip=chip.peak_bf16_flops,
                step_seconds=result['model_flops_per_step'] / peak)
  result['hours_to_finish'] = result['step_seconds'] * result['steps'] / 3600
  try:
    compiled = traced.lower().compile()
  except Exception as e:  # pylint: disable=broad-except
    if 'RESOURCE_EXHAUSTED' not in str(e):
      raise
    return _out_of_memory(result, str(e), time.perf_counter() - started)
  result['compile_seconds'] = time.perf_counter() - started
  result.update(_memory(compiled, chip.hbm_bytes))
  return result


def _gib(n) -> str:
  return 'n/a' if n is None else f'{n / GIB:.2f} GiB'


def consumers(result: dict) -> list[tuple[str, float]]:
  """Per-chip memory consumers, largest first."""
  items = [('parameters', result['parameter_bytes_per_chip']),
           ('optimizer state', result['optimizer_bytes_per_chip']),
           ('batch', result['batch_bytes_per_chip'])]
  if result.get('memory'):
    items.append(('temporaries (activations, gradients, workspace)',
                  result['memory']['temporaries']))
  elif result.get('xla_temporaries_bytes'):
    items.append(('temporaries (activations, gradients, workspace; XLA total)',
                  result['xla_temporaries_bytes']))
  for a in result.get('largest_allocations') or []:
    items.append((f'  XLA buffer {a["shape"]} from {a["operator"][:90]}', a['bytes'] or 0))
  return sorted(items, key=lambda kv: -kv[1])


def format_result(r: dict) -> str:
  head = (f'{r["config"]} on {r["topology"]}'
          + (f' x {r["num_slices"]} slices' if r['num_slices'] > 1 else '')
          + f' ({r["num_chips"]} chips, mesh {r["mesh"]}, batch {r["batch_size"]} x '
          f'{r["seq_len"]}, HBM {_gib(r["hbm_bytes"])} per chip)')
  lines = [head, f'  attention: {r["attention_impl"]}, remat {r["remat"]}, compute {r["dtype"]}']
  if r.get('memory'):
    m = r['memory']
    lines.append(f'  memory per chip: arguments {_gib(m["arguments"])}, outputs '
                 f'{_gib(m["outputs"])} (aliased with arguments {_gib(m["aliased"])}), '
                 f'temporaries {_gib(m["temporaries"])}, code {_gib(m["generated_code"])}')
  at_least = '' if r.get('memory') else 'at least '
  verdict = 'FITS' if r['fits'] else 'DOES NOT FIT'
  lines.append(f'  total per chip: {at_least}{_gib(r["per_chip_bytes"])} of '
               f'{_gib(r["hbm_bytes"])} -> {verdict}')
  if not r['fits']:
    if r.get('xla_message'):
      lines.append(f'  XLA: {r["xla_message"]}')
    lines.append('  largest consumers per chip:')
    lines += [f'    {name}: {_gib(size)}' for name, size in consumers(r)[:8]]
    lines.append('  knobs: model.attention_impl=splash (TPU), model.remat=full, train.loss_chunk (e.g. 1024), '
                 'train.grad_accum_steps > 1, a smaller train.batch_size, more chips')
  lines.append(f'  FLOPs per step: executed {r["flops_per_step"]:.3e} (matmuls, all chips, incl.'
               f' remat), model {r["model_flops_per_step"]:.3e}')
  lines.append(f'  at {r["mfu"]:.0%} MFU ({r["peak_flops_per_chip"] / 1e12:.0f} TFLOP/s bf16 '
               f'peak per chip): {r["step_seconds"]:.2f} s/step, {r["hours_to_finish"]:.1f} h '
               f'for {r["steps"]} steps ({r["hours_to_finish"] * r["num_chips"]:.0f} chip-hours)')
  lines.append(f'  compiled in {r["compile_seconds"]:.0f} s')
  return '\n'.join(lines)


FLAGS = flags.FLAGS


def define_flags():
  """The CLI flags (defined only when run as a program, so the module imports cleanly)."""
  config_flags.DEFINE_config_file('config', None, 'config file (configs/X.py[:args])')
  flags.DEFINE_string('topology', 'v5e:16x16', 'TPU topology <chip>:<AxB[xC]>; chips: '
                      + ', '.join(tpu_topology.CHIPS))
  flags.DEFINE_integer('num_slices', 1, 'multislice: number of identical slices')
  flags.DEFINE_float('mfu', 0.4, 'model FLOPs utilisation assumed for the time estimate')
  flags.DEFINE_bool('json', False, 'print one JSON object instead of text')
  flags.mark_flags_as_required(['config'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if 'JAX_PLATFORMS' not in os.environ:
    # The command line only compiles: never claim an attached device (importing this module
    # leaves the platform of the importing process alone).
    jax.config.update('jax_platforms', 'cpu')
  topology = tpu_topology.describe(FLAGS.topology, FLAGS.num_slices)  # a ConfigError: the
  result = fit_check(FLAGS.config, topology, FLAGS.mfu)                # runner's one line, 2
  print(json.dumps(result) if FLAGS.json else format_result(result), flush=True)
  sys.exit(EXIT_FITS if result['fits'] else EXIT_DOES_NOT_FIT)
