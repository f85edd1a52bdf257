"""Every config block is validated up front; each bad value gets one sentence naming the
field and what is allowed."""

import pytest

from ropex.config import defaults as config_base
from ropex.training import validation
from ropex.errors import ConfigError


def _check(path, value, num_devices=8):
  c = config_base.base_config('tiny')
  block, key = path.rsplit('.', 1)
  node = c
  for part in block.split('.'):
    node = node[part]
  with node.ignore_type():
    node[key] = value
  validation.validate(c, num_devices)


def test_default_config_is_valid():
  c = config_base.base_config('tiny')
  assert validation.validate(c, 8).vocab_size == c.model.vocab_size


@pytest.mark.parametrize('path, value, message', [
    ('train.schedule', 'linear', "train.schedule='linear' is not allowed; it must be one of "
                                 'cosine, rsqrt, constant'),
    ('train.steps', 0, 'train.steps=0 is not allowed; it must be an integer in [1, 2147483647]'),
    ('train.learning_rate', -1.0, 'train.learning_rate=-1.0 is not allowed'),
    ('train.b2', 1.0, 'train.b2=1.0 is not allowed; it must be a number in [0, 1)'),
    ('train.decay_norms_and_embeddings', 'yes', 'must be True or False'),
    ('train.grad_accum_steps', 3, 'train.batch_size=16 must be a multiple of 3'),
    ('train.loss_chunk', 100, 'train.seq_len=128 must be a multiple of 100'),
    ('train.batch_size', 4, 'train.batch_size=4 must be a multiple of 8'),
    ('mesh.tensor', 0, 'mesh.tensor=0 must be an integer >= 1 or -1'),
    ('mesh.axis_rules', (('batch', 'model'),), "maps 'batch' to 'model'; allowed: None"),
    ('checkpoint.keep', 0, 'checkpoint.keep=0 is not allowed'),
    ('checkpoint.async_save', 1, 'checkpoint.async_save=1 is not allowed; it must be True'),
    ('eval.steps', -1, 'eval.steps=-1 is not allowed; it must be an integer >= 0'),
    ('eval.batch_size', 12, 'eval.batch_size=12 must be a multiple of 8'),
    ('model.num_kv_heads', 3, 'model.num_kv_heads=3 must divide model.num_heads=4'),
    ('model.remat', 'some', "model.remat='some' is not allowed; it must be one of none, full"),
    ('data.source', 'foo', "data.source='foo'"),
])
def test_bad_values_name_the_field(path, value, message):
  with pytest.raises(ConfigError) as e:
    _check(path, value)
  assert message in str(e.value)
  assert '\n' not in str(e.value)


def test_unknown_and_missing_fields():
  c = config_base.base_config('tiny')
  c.train.lr = 0.1
  with pytest.raises(ConfigError, match='train.lr is not a train field; allowed: steps'):
    validation.validate(c)
  c = config_base.base_config('tiny')
  del c.eval
  with pytest.raises(ConfigError, match="config block 'eval' is missing"):
    validation.validate(c)
