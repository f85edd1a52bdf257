"""Device mesh, logical-axis rules, and the shardings of parameters, optimizer state and batches.

The mesh has three axes, ``('data', 'fsdp', 'tensor')``, sized from ``config.mesh`` (-1 = all
remaining devices). Parameters and activations carry *logical* axis names (``embed``, ``heads``,
``batch``, ...); ``config.mesh.axis_rules`` maps each logical name to a mesh axis, a tuple of
mesh axes, or ``None`` (replicated).
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator, Mapping

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from ropex.errors import ConfigError

MESH_AXES = ('data', 'fsdp', 'tensor')
BATCH_AXES = ('batch', 'length')  # logical axes of every [B, T] batch field


def mesh_shape(mesh_cfg: Mapping[str, Any], num_devices: int) -> tuple[int, int, int]:
  """Resolves ``mesh.data/fsdp/tensor`` (one of them may be -1) against ``num_devices``."""
  sizes = [mesh_cfg[axis] for axis in MESH_AXES]
  for axis, size in zip(MESH_AXES, sizes):
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or (
        size < 1 and size != -1):
      raise ConfigError(f'mesh.{axis}={size!r} must be an integer >= 1 or -1 (all remaining '
                        f'devices)')
  if sizes.count(-1) > 1:
    raise ConfigError(f'mesh sizes {dict(zip(MESH_AXES, sizes))} may use -1 for at most one '
                      f'axis; allowed: one of data, fsdp, tensor = -1')
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if num_devices % known:
      raise ConfigError(f'mesh sizes {dict(zip(MESH_AXES, sizes))} need the device count '
                        f'({num_devices}) to be a multiple of {known}')
    sizes[sizes.index(-1)] = num_devices // known
  if math.prod(sizes) != num_devices:
    raise ConfigError(f'mesh sizes {dict(zip(MESH_AXES, sizes))} multiply to '
                      f'{math.prod(sizes)}, which must equal the device count ({num_devices})')
  return tuple(int(s) for s in sizes)


def make_mesh(config, devices=None) -> Mesh:
  """The ``('data', 'fsdp', 'tensor')`` mesh over ``devices`` (default: all devices)."""
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(config.mesh, len(devices))
  try:
    device_grid = mesh_utils.create_device_mesh(shape, devices, allow_split_physical_axes=True)
  except (ValueError, NotImplementedError, AssertionError):
    device_grid = np.asarray(devices).reshape(shape)
  return Mesh(device_grid, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES))


def axis_rules(config) -> tuple[tuple[str, Any], ...]:
  """``config.mesh.axis_rules`` as hashable tuples (JSON round trips turn tuples into lists)."""
  def axis(value):
    return tuple(value) if isinstance(value, (list, tuple)) else value
  return tuple((str(name), axis(value)) for name, value in config.mesh.axis_rules)


@contextlib.contextmanager
def activation_rules(mesh: Mesh, rules) -> Iterator[None]:
  """Context in which the model's ``nn.with_logical_constraint`` calls take effect; usable
  while tracing inside ``jax.jit``."""
  with jax.sharding.use_abstract_mesh(mesh.abstract_mesh), nn.logical_axis_rules(rules):
    yield


def logical_to_sharding(logical_specs, mesh: Mesh, rules):
  """A tree of logical PartitionSpecs -> a tree of NamedShardings on ``mesh``."""
  return nn.logical_to_mesh_sharding(logical_specs, mesh, rules)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def batch_sharding(mesh: Mesh, rules) -> NamedSharding:
  """Sharding of every ``[B, T]`` batch field (``batch`` over its mesh axes)."""
  return NamedSharding(mesh, nn.logical_to_mesh_axes(BATCH_AXES, rules))


def batch_shards(mesh: Mesh, rules) -> int:
  """How many ways the batch dimension is split (the batch must be divisible by it)."""
  spec = batch_sharding(mesh, rules).spec
  axes = spec[0] if len(spec) else None
  axes = () if axes is None else (axes,) if isinstance(axes, str) else axes
  return math.prod(mesh.shape[a] for a in axes)


def check_divisible(abstract_tree, shardings, what: str = 'parameter') -> None:
  """Raises ConfigError if some array dimension is not divisible by its mesh axes."""
  leaves = jax.tree_util.tree_leaves_with_path(abstract_tree)
  for (path, leaf), sharding in zip(leaves, jax.tree_util.tree_leaves(shardings)):
    for dim, axes in zip(leaf.shape, sharding.spec):
      axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
      ways = math.prod(sharding.mesh.shape[a] for a in axes)
      if dim % ways:
        name = jax.tree_util.keystr(path, simple=True, separator='/')
        raise ConfigError(
            f'{what} {name} has a dimension of size {dim} that mesh axes {axes} split '
            f'{ways} ways, which does not divide it; change mesh sizes or mesh.axis_rules')


def global_batch(local_batch: Mapping[str, np.ndarray], sharding: NamedSharding,
                 global_rows: int, dtypes: Mapping[str, Any]) -> dict[str, jax.Array]:
  """Process-local numpy rows -> global ``jax.Array``s of ``global_rows`` rows."""
  out = {}
  for key, dtype in dtypes.items():
    local = np.asarray(local_batch[key], dtype=dtype)
    out[key] = jax.make_array_from_process_local_data(
        sharding, local, (global_rows,) + local.shape[1:])
  return out
