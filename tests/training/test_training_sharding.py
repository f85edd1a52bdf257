"""Mesh sizing, parameter shardings from the logical rules, and process-local -> global batches
(8 virtual CPU devices from conftest)."""

import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from ropex.config import defaults as config_base
from ropex.training import sharding, step
from ropex.errors import ConfigError


def _config(**mesh):
  c = config_base.base_config('tiny')
  c.mesh.update(mesh)
  return c


def test_mesh_shape_fills_minus_one_and_rejects_bad_sizes():
  assert sharding.mesh_shape({'data': -1, 'fsdp': 2, 'tensor': 1}, 8) == (4, 2, 1)
  assert sharding.mesh_shape({'data': 2, 'fsdp': 2, 'tensor': 2}, 8) == (2, 2, 2)
  with pytest.raises(ConfigError, match='mesh.fsdp=0'):
    sharding.mesh_shape({'data': -1, 'fsdp': 0, 'tensor': 1}, 8)
  with pytest.raises(ConfigError, match='at most one'):
    sharding.mesh_shape({'data': -1, 'fsdp': -1, 'tensor': 1}, 8)
  with pytest.raises(ConfigError, match='must equal the device count'):
    sharding.mesh_shape({'data': 2, 'fsdp': 2, 'tensor': 1}, 8)
  with pytest.raises(ConfigError, match='multiple of 3'):
    sharding.mesh_shape({'data': -1, 'fsdp': 3, 'tensor': 1}, 8)


def test_parameter_shardings_follow_axis_rules():
  c = _config(data=2, fsdp=2, tensor=2)
  mesh = sharding.make_mesh(c)
  assert mesh.axis_names == ('data', 'fsdp', 'tensor') and mesh.devices.shape == (2, 2, 2)
  setup = step.make_setup(c, mesh)
  params = setup.state_shardings.params
  # ('vocab', 'embed') -> ('tensor', 'fsdp'); scanned ('layers', 'heads', 'embed', 'head_dim').
  assert params['embedder']['input_embedding'].spec == P('tensor', 'fsdp')
  assert params['layers']['layer_0']['attn']['q_einsum']['w'].spec == P(
      None, 'tensor', 'fsdp', None)
  # Adam moments are sharded like their parameters.
  mu = setup.state_shardings.opt_state[1][0].mu
  assert mu['embedder']['input_embedding'].spec == P('tensor', 'fsdp')
  abstract = setup.abstract_state.params['embedder']['input_embedding']
  assert abstract.sharding.spec == P('tensor', 'fsdp') and abstract.shape == (512, 128)
  assert setup.batch_sharding.spec[0] == ('data', 'fsdp')


def test_indivisible_parameter_is_a_config_error():
  c = _config(data=1, fsdp=1, tensor=8)  # tiny has 4 query heads: 8-way split impossible
  with pytest.raises(ConfigError, match=r'attn.*has a dimension of size 4 .*tensor'):
    step.make_setup(c, sharding.make_mesh(c))


def test_global_batch_from_process_local_rows():
  c = _config(data=4, fsdp=2, tensor=1)
  mesh = sharding.make_mesh(c)
  rules = sharding.axis_rules(c)
  local = {'inputs': np.arange(32, dtype=np.int64).reshape(8, 4),
           'weights': np.ones((8, 4), np.float64)}
  out = sharding.global_batch(local, sharding.batch_sharding(mesh, rules), 8,
                              {'inputs': np.int32, 'weights': np.float32})
  assert out['inputs'].dtype == np.int32 and out['weights'].dtype == np.float32
  np.testing.assert_array_equal(np.asarray(out['inputs']), local['inputs'])
  assert len(out['inputs'].addressable_shards) == 8
  for shard in out['inputs'].addressable_shards:  # each device holds one row
    assert shard.data.shape == (1, 4)
  assert sharding.batch_shards(mesh, rules) == 8
