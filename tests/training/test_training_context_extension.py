"""Context-extension recipes (configs/context_extension.py): the new run is the source's config
with only the recipe's fields changed; its data reaches the new length; a source the recipe does
not apply to is refused in one line; and a YaRN run evaluated at 4x the source's length beats the
unextended source on the same held-out data."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cli_runs

from ropex import data
from ropex.config import defaults, loading
from ropex.errors import ConfigError
from ropex.model.config import pe_block
from ropex.training import context_extension, inference, loop, metrics, resume, sharding, step

CONFIG = os.path.join(cli_runs.ROOT, 'configs', 'context_extension.py')
# What each recipe may change besides name, train.init_from/steps/warmup_steps and the cadence.
OPERATIONAL = {'name', 'train.init_from', 'train.steps', 'train.warmup_steps',
               'checkpoint.every_steps', 'eval.every_steps'}
LENGTH = {'train.seq_len', 'data.synthetic_length'}


def _source_config(pe=None, steps=120):
  """A demo-like source: assoc_recall only, 16-32-token examples, small θ."""
  c = defaults.base_config('tiny', pe=pe or pe_block('rope', max_wavelength=100.0))
  c.name = 'src'
  c.data.update(tasks=('assoc_recall',), synthetic_length=(16, 32))
  c.train.update(steps=steps, batch_size=16, seq_len=64, warmup_steps=10, log_every_steps=20)
  c.checkpoint.update(every_steps=steps, keep=1)
  c.eval.update(steps=0)
  return c


@pytest.fixture(scope='module')
def source(tmp_path_factory):
  """A trained source: the 4-task mixture at its default 14-20-token examples, θ = 100."""
  c = _source_config(steps=100)
  c.data.update(tasks=defaults.base_config().data.tasks, synthetic_length=(14, 20))
  workdir = str(tmp_path_factory.mktemp('ctx') / 'source')
  loop.train(c, workdir)
  return workdir


def _fake_source(tmp_path, config) -> str:
  """A workdir with the source's config.json (the recipes read nothing else)."""
  workdir = str(tmp_path / 'fake')
  os.makedirs(os.path.join(workdir, 'checkpoints'))
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json())
  return workdir


def _flat(config) -> dict:
  def walk(block, prefix):
    for key, value in block.items():
      name = f'{prefix}{key}'
      if isinstance(value, dict):
        yield from walk(value, name + '.')
      else:
        yield name, value
  return dict(walk(json.loads(config.to_json()), ''))


def _changed(a, b) -> set:
  fa, fb = _flat(a), _flat(b)
  return {k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k)}


@pytest.mark.parametrize('recipe, changes', [
    ('yarn', {'model.pe.scaling.type', 'model.pe.scaling.factor',
              'model.pe.scaling.original_max_position'} | LENGTH),
    ('pi', {'model.pe.scaling.type', 'model.pe.scaling.factor'} | LENGTH),
    ('theta', {'model.pe.max_wavelength'} | LENGTH),
    ('drope', {'model.pe.kind', 'model.pe.max_wavelength'}),
])
def test_the_new_run_is_the_source_except_the_recipes_fields(recipe, changes, tmp_path):
  src_config = _source_config()
  src = _fake_source(tmp_path, src_config)
  new = loading.load(f'{CONFIG}:src={src},recipe={recipe},steps=30')
  changed = _changed(src_config, new)
  assert changes <= changed <= changes | OPERATIONAL, changed - OPERATIONAL
  assert new.train.init_from == src and new.train.steps == 30
  L0 = context_extension.trained_length(src_config)
  assert L0 == 31  # examples of at most 32 tokens: 31 prediction pairs
  if recipe == 'yarn':
    assert new.model.pe.scaling.original_max_position == L0 and new.model.pe.scaling.factor == 4
  if recipe == 'theta':
    assert new.model.pe.max_wavelength == 100.0 * 100  # Code Llama's 10^4 -> 10^6
  if recipe == 'drope':
    assert new.model.pe.kind == 'none' and new.train.seq_len == 64
  else:  # frozen fields of a resume (model aside) are the source's but for the length
    assert new.data.synthetic_length == (4 * L0 + 1, 4 * L0 + 1)
    assert new.train.seq_len % (4 * L0) == 0


def test_drope_budget_is_relative_to_the_source(tmp_path):
  src = _fake_source(tmp_path, _source_config(steps=500))
  assert loading.load(f'{CONFIG}:src={src},recipe=drope').train.steps == 10  # 2% of 500
  assert loading.load(f'{CONFIG}:src={src},recipe=drope,budget=0.1').train.steps == 50
  assert loading.load(f'{CONFIG}:src={src},recipe=yarn').train.steps == 400  # the paper's


@pytest.mark.parametrize('pe, recipe, message', [
    (pe_block('none'), 'yarn', "model.pe.kind='none' rotates nothing"),
    (pe_block('none'), 'drope', "model.pe.kind='none' has no positional encoding to drop"),
    (pe_block('alibi'), 'theta', "model.pe.kind='alibi' rotates nothing"),
    (pe_block('rope', scaling={'type': 'linear', 'factor': 2.0}), 'yarn',
     "already has scaling.type='linear'"),
])
def test_a_source_the_recipe_does_not_apply_to_is_refused_in_one_line(pe, recipe, message,
                                                                      tmp_path):
  src = _fake_source(tmp_path, _source_config(pe=pe))
  with pytest.raises(ConfigError, match=f'recipe={recipe} does not apply to the source') as e:
    loading.load(f'{CONFIG}:src={src},recipe={recipe},steps=5')
  assert message in str(e.value) and '\n' not in str(e.value)


def test_theta_needs_steps_and_src_must_be_a_ropex_run(tmp_path):
  src = _fake_source(tmp_path, _source_config())
  with pytest.raises(ConfigError, match='steps is required for recipe=theta'):
    loading.load(f'{CONFIG}:src={src},recipe=theta')
  with pytest.raises(ConfigError, match='src is required'):
    loading.load(f'{CONFIG}:recipe=yarn')


def test_the_extended_data_reaches_the_new_length(tmp_path):
  """Every example of the extended run spans 4 x L0 positions (checked on the batches)."""
  src_config = _source_config()
  new = loading.load(f'{CONFIG}:src={_fake_source(tmp_path, src_config)},recipe=yarn,steps=5')
  L1 = 4 * context_extension.trained_length(src_config)
  src_max, new_max = [], []
  for config, out in ((src_config, src_max), (new, new_max)):
    it = data.make_iterator(config, 'train', 0, 1)
    for _ in range(3):
      batch = next(it)
      out.append(int(jax.device_get(step.max_position(batch))))
      if config is new:
        for row_seg, row_pos in zip(batch['segment_ids'], batch['positions']):
          for s in set(row_seg[row_seg > 0].tolist()):
            assert row_pos[row_seg == s].max() == L1 - 1  # each example spans L1 positions
  assert max(src_max) == 30 and max(new_max) == L1 - 1 == 123


def _eval_loss(params, config, batches: int = 4) -> float:
  """Mean answer loss of ``params`` under ``config``'s model on its first eval batches."""
  setup = step.make_setup(config, sharding.make_mesh(config))
  it = data.make_iterator(config, 'eval', 0, 1)
  params = jax.device_put(jax.device_get(params), setup.state_shardings.params)
  loss_sums = jax.jit(lambda p, b: step.loss_sums(setup.model, p, b, 0))
  ce, weight = 0.0, 0.0
  for _ in range(batches):
    batch = sharding.global_batch(next(it), setup.batch_sharding, config.train.batch_size,
                                  step.BATCH_DTYPES)
    ce += float(loss_sums(params, batch).ce_sum)
    weight += float(jnp.sum(batch['weights']))
  return ce / weight


@pytest.mark.slow
def test_yarn_at_4x_beats_the_unextended_source_on_the_same_held_out_data(source, tmp_path):
  """Source: 100 steps at L0 = 25 (examples of 14-20 tokens, packed remainders up to 25 pairs).
  YaRN x4: 30 steps on examples of exactly 100 pairs. Both are scored on the same held-out
  100-pair examples (answer tokens). Measured (2 CPU cores): source 2.05, YaRN 1.23 (the source
  at its own length: 1.30)."""
  new = loading.load(f'{CONFIG}:src={source},recipe=yarn,steps=30')
  L0 = context_extension.trained_length(inference.load_for_inference(source)[0])
  assert L0 == 25 and new.model.pe.scaling.original_max_position == 25
  workdir = str(tmp_path / 'yarn')
  loop.train(new, workdir)
  assert metrics.read_metrics(workdir)[-1]['train/max_position'] == 4 * L0 - 1
  src_config, src_params, _ = inference.load_for_inference(source)
  _, yarn_params, _ = inference.load_for_inference(workdir)
  unextended = new.copy_and_resolve_references()
  unextended.model.pe = src_config.model.pe  # the source's model on the same long data
  src_loss = _eval_loss(src_params, unextended)
  yarn_loss = _eval_loss(yarn_params, new)
  print(f'held-out answer loss at 4x ({4 * L0} positions): source {src_loss:.4f}, '
        f'yarn {yarn_loss:.4f}')
  assert yarn_loss < src_loss - 0.3
