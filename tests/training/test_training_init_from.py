"""``train.init_from``: a run started from another run's weights (context extension, DroPE)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cli_runs

from ropex import data
from ropex.config import defaults
from ropex.errors import ConfigError
from ropex.model.config import pe_block
from ropex.training import inference, init_from, loop, metrics, sharding, step


def _config(steps=4, seq_len=64, **train):
  c = defaults.base_config('tiny')
  c.train.update(steps=steps, batch_size=8, seq_len=seq_len, warmup_steps=1, log_every_steps=1,
                 **train)
  c.checkpoint.update(every_steps=4, keep=2)
  c.eval.update(steps=0)
  return c


@pytest.fixture(scope='module')
def source(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('init') / 'source')
  loop.train(_config(), workdir)
  return workdir


def _loss_of(params, config) -> float:
  """The mean loss of ``params`` on the first training batch of ``config``."""
  setup = step.make_setup(config, sharding.make_mesh(config))
  it = data.make_iterator(config, 'train', 0, 1)
  batch = sharding.global_batch(next(it), setup.batch_sharding, config.train.batch_size,
                                step.BATCH_DTYPES)
  params = jax.device_put(jax.device_get(params), setup.state_shardings.params)
  sums = jax.jit(lambda p, b: step.loss_sums(setup.model, p, b, 0))(params, batch)
  return float(sums.ce_sum / jnp.sum(batch['weights']))


def test_seq_len_change_starts_from_exactly_the_source_parameters(source, tmp_path):
  _, params, src_step = inference.load_for_inference(source)
  new = _config(steps=1, seq_len=32, init_from=f'{source}:{src_step}')
  workdir = str(tmp_path / 'longer')
  loop.train(new, workdir)
  first = metrics.read_metrics(workdir)[0]
  assert first['step'] == 1
  want = _loss_of(params, new)
  np.testing.assert_allclose(first['train/loss'], want, rtol=1e-5)
  fresh = _config(steps=1, seq_len=32)
  loop.train(fresh, str(tmp_path / 'fresh'))
  fresh_loss = metrics.read_metrics(str(tmp_path / 'fresh'))[0]['train/loss']
  assert abs(fresh_loss - want) > 0.5  # a fresh init would not give the source's loss
  record = json.loads(open(os.path.join(workdir, 'init_from.json')).read())
  assert record == {'path': os.path.abspath(source), 'step': src_step, 'format': 'workdir'}
  config = json.loads(open(os.path.join(workdir, 'config.json')).read())
  assert config['train']['init_from'] == f'{source}:{src_step}'


def test_drope_rope_to_none_loads_every_parameter(source):
  _, params, _ = inference.load_for_inference(source)
  drope = _config(init_from=source)
  drope.model.pe = pe_block('none')
  setup = step.make_setup(drope, sharding.make_mesh(drope))
  pretrained = init_from.load(drope, setup)
  got = jax.device_get(pretrained.params)
  assert jax.tree.structure(got) == jax.tree.structure(params)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(jax.device_get(params))):
    np.testing.assert_array_equal(a, b)


def test_shape_mismatch_is_one_sentence_and_writes_nothing(source, tmp_path):
  wider = _config(init_from=source)
  wider.model.hidden_dim = 256
  workdir = str(tmp_path / 'wider')
  with pytest.raises(ConfigError, match=r"train.init_from=.*parameter \['layers'\]\['layer_0'\]"
                     r"\['mlp'\]\['gating_einsum'\] has shape \(2, 2, 128, 512\) there and "
                     r"\(2, 2, 128, 256\) in this model"):
    loop.train(wider, workdir)
  assert not os.path.exists(workdir)


@pytest.mark.parametrize('spec, message', [
    ('/nonexistent/run', 'does not exist'),
])
def test_bad_source_is_a_clear_error(spec, message, tmp_path):
  with pytest.raises(ConfigError, match=message):
    loop.train(_config(init_from=spec), str(tmp_path / 'x'))
  assert not os.path.exists(tmp_path / 'x')


@pytest.mark.parametrize('recipe', ['theta', 'yarn', 'pi', 'drope'])
def test_context_extension_recipes_train_from_the_source_at_the_new_length(recipe, source,
                                                                           tmp_path):
  """The source (examples of 14-20 tokens: L0 = 25 with packed remainders) continued by each
  recipe: extending recipes train on examples reaching 2 x L0 positions (train/max_position),
  DroPE at the source's own length."""
  from ropex.config import loading  # pylint: disable=g-import-not-at-top
  path = os.path.join(cli_runs.ROOT, 'configs', 'context_extension.py')
  c = loading.load(f'{path}:src={source},recipe={recipe},factor=2,steps=1')
  summary = loop.train(c, str(tmp_path / recipe))
  assert summary['step'] == 1 and np.isfinite(summary['train/loss'])
  record = json.loads(open(tmp_path / recipe / 'init_from.json').read())
  assert record['path'] == os.path.abspath(source) and record['step'] == 4
  max_position = metrics.read_metrics(str(tmp_path / recipe))[-1]['train/max_position']
  if recipe == 'drope':
    assert c.train.seq_len == 64 and max_position <= 24
  else:
    assert c.train.seq_len == 100 and max_position == 2 * 25 - 1
