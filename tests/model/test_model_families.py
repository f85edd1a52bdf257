"""Released-family presets (ropex.model.families): published parameter counts, the published
schedules, every encoding on every block, and a from-scratch training step of a tiny version of
each family, sharded over 8 devices equal to one device."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from ropex import model as model_lib
from ropex.config import defaults
from ropex.model import families
from ropex.model.config import ModelConfig, model_block, pe_block

PUBLISHED = [a for a in families.PRESETS if families.PRESETS[a]['published'] is not None]


@pytest.mark.parametrize('arch', PUBLISHED)
def test_parameter_count_equals_the_published_one(arch):
  counts = model_lib.count_params(ModelConfig.from_config(model_block(arch)))
  assert counts['params_total'] == families.expected_count(arch)


def test_describe_cli_prints_the_published_count_and_block_fields():
  out = subprocess.run([sys.executable, '-m', 'ropex.describe', '--config',
                        'configs/family.py:arch=qwen2_5_0_5b', '--json'],
                       capture_output=True, text=True, check=True).stdout
  d = json.loads(out)
  assert d['params_total'] == 494_032_768
  assert d['block']['qkv_bias'] and d['block']['hidden_activation'] == 'silu'


def _layers(arch):
  return ModelConfig.from_config(model_block(arch)).layers


def test_presets_carry_the_published_schedules():
  """Facts of the model cards / config.json (DESIGN.md, 'Released model families')."""
  g3 = _layers('gemma3_270m')
  assert [i for i, s in enumerate(g3) if s.window == 0] == [5, 11, 17]
  assert {s.window for s in g3 if s.window} == {512}
  assert {(s.pe.max_wavelength, s.pe.scaling.type) for s in g3} == {(1e4, 'none'), (1e6, 'none')}
  g34 = _layers('gemma3_4b')     # linear x8 on the global layers only
  assert {s.pe.scaling.type for s in g34 if s.window} == {'none'}
  assert {(s.pe.scaling.type, s.pe.scaling.factor) for s in g34 if not s.window} == {
      ('linear', 8.0)}
  g2 = _layers('gemma2_2b')      # sliding window 4096 on alternating layers from layer 0
  assert [s.window for s in g2[:4]] == [4096, 0, 4096, 0]
  e2b = ModelConfig.from_config(model_block('gemma4_e2b'))
  assert [i for i, s in enumerate(e2b.layers) if not s.window][:2] == [4, 9]
  globals_ = [s for s in e2b.layers if not s.window]
  assert {(s.pe.kind, s.head_dim, len(s.pe.rotated_chunks())) for s in globals_} == {
      ('proportional', 512, 64)}
  # layers 15-34 reuse K/V: sliding ones layer 13's, global ones layer 14's
  assert [s.kv_source for s in e2b.layers[14:20]] == [-1, 13, 13, 13, 13, 14]
  assert e2b.layers[15].hidden_dim == 2 * 6144 and e2b.layers[14].hidden_dim == 0
  l8 = ModelConfig.from_config(model_block('llama3_1_8b'))
  assert not l8.tie_word_embeddings and l8.hidden_activation == 'silu'
  assert l8.layers[0].pe.scaling.type == 'llama3' and l8.rms_norm_eps == 1e-5


@pytest.mark.parametrize('kind', ['none', 'prope', 'alibi', 'fire'])
def test_every_encoding_replaces_the_schedule_on_a_family_block(kind):
  cfg = ModelConfig.from_config(model_block('llama3_2_1b', pe=pe_block(kind)))
  assert {s.pe.kind for s in cfg.layers} == {'prope' if kind == 'prope' else kind}
  g3 = ModelConfig.from_config(model_block('gemma3_1b', pe=pe_block(kind)))
  assert {s.pe.kind for s in g3.layers} == {kind} and {s.window for s in g3.layers} == {0, 512}


def _train_sharded_and_on_one_device(c):
  """Losses of two training steps on a 2x2x2 mesh and on one device."""
  from ropex import data  # pylint: disable=g-import-not-at-top
  from ropex.training import sharding, step  # pylint: disable=g-import-not-at-top
  c.train.update(batch_size=8, seq_len=32, warmup_steps=1, learning_rate=1e-2)
  c.data.prefetch = 0
  it = data.make_iterator(c, 'train')
  batches = [next(it) for _ in range(2)]

  def run(mesh):
    setup = step.make_setup(c, mesh)
    train_step, state = step.make_train_step(setup), step.init_state(setup)
    losses = []
    for b in batches:
      state, m = train_step(state, sharding.global_batch(b, setup.batch_sharding, 8,
                                                         step.BATCH_DTYPES))
      losses.append(float(m['loss']))
    return losses

  c.mesh.update(data=2, fsdp=2, tensor=2)
  losses_8 = run(sharding.make_mesh(c))
  c.mesh.update(data=1, fsdp=1, tensor=1)
  losses_1 = run(sharding.make_mesh(c, jax.devices()[:1]))
  return losses_8, losses_1


def test_every_block_field_at_once_trains_sharded_like_on_one_device():
  """The union of the families' features in one tiny model (Gemma 4 E2B's per-layer inputs, K/V
  sharing and double-wide MLP, 31B's keys-as-values global layers with their own head dim and
  KV heads, plus Qwen's biases, Llama's SwiGLU and untied head): one compile, every new
  parameter sharded (the per-family runs below are marked slow)."""
  c = defaults.base_config('gemma4_e2b')
  families.shrink(c.model)
  c.model.layer_pattern = ('sliding_attention', 'full_attention')
  c.model.layer_types.full_attention.update(k_eq_v=True, num_kv_heads=1)
  c.model.update(num_layers=4, num_kv_shared_layers=2, num_kv_heads=2, qkv_bias=True,
                 hidden_activation='silu', tie_word_embeddings=False)
  losses_8, losses_1 = _train_sharded_and_on_one_device(c)
  assert np.isfinite(losses_8).all() and losses_8[1] != losses_8[0]
  np.testing.assert_allclose(losses_8, losses_1, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize('arch', ['llama3_1_8b', 'qwen2_5_0_5b', 'qwen3_0_6b', 'gemma2_2b',
                                  'gemma3_4b', 'gemma4_e2b', 'gemma4_31b'])
def test_tiny_family_trains_sharded_like_on_one_device(arch):
  c = defaults.base_config(arch)
  families.shrink(c.model)
  losses_8, losses_1 = _train_sharded_and_on_one_device(c)
  assert np.isfinite(losses_8).all() and losses_8[1] != losses_8[0]
  np.testing.assert_allclose(losses_8, losses_1, rtol=1e-5)
