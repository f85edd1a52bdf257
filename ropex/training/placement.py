"""Parameters and batches of evaluation and analysis placed on the training mesh.

A :class:`Placement` is the ``mesh`` block and logical axis rules of a config (the same ones
training uses) over some devices. Evaluation and analysis restore parameters directly into
their shards (:func:`ropex.training.inference.load_sharded`), or place imported (host numpy)
parameters on the mesh once (:meth:`Placement.place`); batches are split over the batch axes
(:meth:`Placement.batch`); traced steps run inside :meth:`Placement.rules` so the model's
logical sharding constraints and the splash kernel's ``shard_map`` see the mesh.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from typing import Iterator

import flax.linen as nn
import jax
from jax.experimental import multihost_utils
import numpy as np

from ropex import model as model_lib
from ropex.model.config import ModelConfig
from ropex.training import sharding


@dataclasses.dataclass(frozen=True)
class Placement:
  mesh: jax.sharding.Mesh
  rules: tuple

  @staticmethod
  def from_config(config, devices=None) -> 'Placement':
    """The config's ``mesh`` block and ``mesh.axis_rules`` over ``devices`` (default: all)."""
    return Placement(sharding.make_mesh(config, devices), sharding.axis_rules(config))

  def param_shardings(self, cfg: ModelConfig):
    """NamedShardings of the model's (scanned or unscanned) parameter tree."""
    specs = nn.get_partition_spec(model_lib.abstract_params(cfg))
    shardings = sharding.logical_to_sharding(specs, self.mesh, self.rules)
    sharding.check_divisible(nn.unbox(model_lib.abstract_params(cfg)), shardings)
    return shardings

  def place(self, params: dict, cfg: ModelConfig) -> dict:
    """``params`` (host or device arrays, the tree of ``cfg``) split over the mesh, once."""
    return jax.device_put(nn.unbox(params), self.param_shardings(cfg))

  @property
  def batch_shards(self) -> int:
    return sharding.batch_shards(self.mesh, self.rules)

  def rows(self, rows: int) -> int:
    """``rows`` rounded up to a multiple of the batch shards."""
    return math.ceil(rows / self.batch_shards) * self.batch_shards

  def batch(self, x: np.ndarray) -> jax.Array:
    """A [B, ...] host array split over the batch axes (B a multiple of :attr:`batch_shards`).
    Every process passes the same ``x`` and places only the rows of its own devices."""
    x = np.asarray(x)
    spec = sharding.batch_sharding(self.mesh, self.rules).spec
    spec = jax.sharding.PartitionSpec(*spec[:1], *([None] * (x.ndim - 1)))
    return jax.make_array_from_callback(x.shape, jax.sharding.NamedSharding(self.mesh, spec),
                                        lambda index: x[index])

  @staticmethod
  def to_host(x: jax.Array) -> np.ndarray:
    """The whole value of a (possibly multi-process) array on every process: rows held by
    other processes' devices are gathered (a collective: every process calls it)."""
    if x.is_fully_addressable:
      return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))

  @contextlib.contextmanager
  def rules_context(self) -> Iterator[None]:
    with sharding.activation_rules(self.mesh, self.rules):
      yield
