"""TPU chips and topologies for ahead-of-time compilation from a host without TPUs.

``describe('v5e:16x16')`` parses a topology name (``<chip>:<AxB[xC]>``) and returns the chip's
specs; :func:`compile_devices` builds compile-only devices for it with libtpu (the ``tpu``
extra: ``pip install -e '.[tpu]'``), which needs no TPU attached. Chip figures (HBM per chip,
peak dense bf16 FLOP/s) are Google's published numbers.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re

from ropex import fields
from ropex.errors import ConfigError

GIB = 2 ** 30


@dataclasses.dataclass(frozen=True)
class Chip:
  name: str
  hbm_bytes: int
  peak_bf16_flops: float    # per chip, per second
  dims: int                 # topology dimensions: 2 (AxB) or 3 (AxBxC)
  chips_per_host: int
  compile_kwargs: tuple = ()


CHIPS = {
    'v4': Chip('v4', 32 * GIB, 275e12, 3, 4, (('chip_config_name', 'megacore'),)),
    'v5e': Chip('v5e', 16 * GIB, 197e12, 2, 4),
    'v5p': Chip('v5p', 95 * GIB, 459e12, 3, 4),
    'v6e': Chip('v6e', 32 * GIB, 918e12, 2, 4),
}


@dataclasses.dataclass(frozen=True)
class Topology:
  name: str                 # e.g. 'v5e:16x16'
  chip: Chip
  shape: tuple[int, ...]
  num_slices: int = 1

  @property
  def num_chips(self) -> int:
    return math.prod(self.shape) * self.num_slices


def describe(name: str, num_slices: int = 1) -> Topology:
  """``'v5e:16x16'`` -> :class:`Topology`; raises ConfigError naming what is allowed."""
  chip_name, _, shape_text = name.partition(':')
  if chip_name not in CHIPS:
    raise ConfigError(f'--topology={name!r} names an unknown TPU; allowed chips: '
                      f'{", ".join(CHIPS)} (e.g. v5e:16x16, v4:8x8x8)')
  chip = CHIPS[chip_name]
  pattern = r'\d+' + r'x\d+' * (chip.dims - 1)
  if not re.fullmatch(pattern, shape_text) or '0' in shape_text.split('x'):
    example = 'x'.join(['4'] * chip.dims)
    raise ConfigError(f'--topology={name!r} must look like {chip_name}:{example} '
                      f'({chip.dims} positive chip counts)')
  fields.check(num_slices, '--num_slices', fields.integer(1))
  return Topology(name, chip, tuple(int(s) for s in shape_text.split('x')), num_slices)


def compile_devices(topology: Topology) -> list:
  """Compile-only devices of ``topology`` (one per chip), built by libtpu on any host."""
  # Without these libtpu probes the (absent) TPU metadata server and logs errors.
  os.environ.setdefault('TPU_WORKER_HOSTNAMES', 'localhost')
  os.environ.setdefault('TPU_ACCELERATOR_TYPE', f'{topology.chip.name}-{topology.num_chips}')
  # Compiling opens no TPU, so several fit checks (or one beside a training run) may load
  # libtpu at once; otherwise the second one fails on /tmp/libtpu_lockfile.
  os.environ.setdefault('ALLOW_MULTIPLE_LIBTPU_LOAD', '1')
  try:
    from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
    kwargs = dict(topology.chip.compile_kwargs)
    if topology.num_slices > 1:
      kwargs['num_slices'] = topology.num_slices
    desc = topologies.get_topology_desc(topology_name=topology.name, platform='tpu', **kwargs)
  except Exception as e:  # pylint: disable=broad-except  (missing plugin, unknown topology)
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    raise ConfigError(
        f'--topology={topology.name!r} could not be built ({text}); AOT compilation needs '
        f'libtpu: pip install -e ".[tpu]" (a separate venv is fine)') from None
  devices = list(desc.devices)
  if len(devices) != topology.num_chips:
    raise ConfigError(f'--topology={topology.name!r} gave {len(devices)} devices for '
                      f'{topology.num_chips} chips; allowed: one device per chip')
  return devices


def process_count(devices) -> int:
  """Number of hosts (JAX processes) that drive ``devices``."""
  return len({(getattr(d, 'slice_index', 0), d.process_index) for d in devices})
