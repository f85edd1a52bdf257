"""validate(): every bad value raises ConfigError naming its field."""
import pytest

from ropex import data
from ropex.errors import ConfigError


def test_default_and_small_configs_are_valid(small_config):
  data.validate(small_config())


@pytest.mark.parametrize('field,value,named', [
    ('data.source', 'foo', 'data.source'),
    ('data.tokenizer', 'wordpiece', 'data.tokenizer'),
    ('data.tokenizer', 'sentencepiece', 'data.tokenizer_path'),
    ('data.tasks', ('copy_offset', 'sorting'), 'data.tasks'),
    ('data.tasks', (), 'data.tasks'),
    ('data.prefetch', -1, 'data.prefetch'),
    ('data.worker_count', -2, 'data.worker_count'),
    ('data.seed', -3, 'data.seed'),
    ('data.synthetic_loss', 'some', 'data.synthetic_loss'),
    ('data.synthetic_vocab', 1, 'data.synthetic_vocab'),
    ('data.synthetic_vocab', 193, 'data.synthetic_vocab'),
    ('data.synthetic_length', (13, 20), 'data.synthetic_length'),
    ('data.synthetic_length', (20, 14), 'data.synthetic_length'),
    ('data.synthetic_length', (14,), 'data.synthetic_length'),
    ('train.seq_len', 8, 'train.seq_len'),
    ('train.batch_size', 0, 'train.batch_size'),
    ('model.vocab_size', 200, 'model.vocab_size'),
    ('model.vocab_size', 256, 'model.vocab_size'),  # byte tokenizer needs 259
])
def test_bad_values_name_the_field(small_config, field, value, named):
  c = small_config()
  block, key = field.split('.')
  c[block][key] = value
  with pytest.raises(ConfigError, match=named.replace('.', r'\.')) as e:
    data.validate(c)
  assert str(e.value).count('.') >= 1 and '\n' not in str(e.value)


@pytest.mark.parametrize('overrides,named', [
    (dict(source='text', text_glob=''), 'data.text_glob'),
    (dict(source='text', text_glob='/no/such/*.txt'), 'data.text_glob'),
    (dict(source='text', eval_fraction=1.0), 'data.eval_fraction'),
    (dict(source='text', text_field=' , '), 'data.text_field'),
    (dict(source='tfds', tfds_name=''), 'data.tfds_name'),
    (dict(source='tfds', eval_split=''), 'data.eval_split'),
])
def test_file_source_fields(small_config, text_corpus, overrides, named):
  c = small_config(text_glob=str(text_corpus / '*.txt'))
  c.data.update(overrides)
  with pytest.raises(ConfigError, match=named.replace('.', r'\.')):
    data.validate(c)


def test_wrong_extension_and_indivisible_batch(small_config, tmp_path):
  (tmp_path / 'a.csv').write_text('x')
  with pytest.raises(ConfigError, match=r'data\.text_glob.*allowed extensions'):
    data.validate(small_config(source='text', text_glob=str(tmp_path / '*')))
  with pytest.raises(ConfigError, match=r'train\.batch_size=8 is not divisible'):
    data.make_iterator(small_config(), 'train', 0, 3)
  c = small_config()
  c.eval.batch_size = 6
  with pytest.raises(ConfigError, match=r'eval\.batch_size=6'):
    data.make_iterator(c, 'eval', 0, 4)
  with pytest.raises(ConfigError, match='split'):
    data.make_iterator(c, 'test')


def test_empty_eval_split_is_a_config_error(small_config, text_corpus):
  c = small_config(source='text', text_glob=str(text_corpus / '*.txt'), eval_fraction=0.0)
  data.make_iterator(c, 'train')
  with pytest.raises(ConfigError, match='eval split'):
    data.make_iterator(c, 'eval')
