"""Checks of the ``data`` block (and the ``train``/``eval`` sizes it depends on)."""

from __future__ import annotations

from ropex.data import sources
from ropex.data import synthetic
from ropex.data import text_files
from ropex.data import tokenizers
from ropex import fields
from ropex.errors import ConfigError

MIN_SYNTHETIC_SEQ_LEN = 16
SYNTHETIC_LOSS = ('answers', 'all')


def _int_at_least(value, field: str, low: int) -> None:
  fields.check(value, field, fields.integer(low))


def _boolean(value, field: str) -> None:
  fields.check(value, field, fields.boolean)


def _check_synthetic(config, tok) -> None:
  d = config.data
  tasks = tuple(d.tasks) if isinstance(d.tasks, (tuple, list)) else None
  if not tasks or any(t not in synthetic.TASKS for t in tasks):
    raise ConfigError(f'data.tasks={d.tasks!r} is not allowed; allowed: a non-empty tuple of '
                      f'{", ".join(synthetic.TASKS)}')
  vocab = d.synthetic_vocab
  fields.check(vocab, 'data.synthetic_vocab', fields.integer(2, synthetic.MAX_VOCAB))
  if synthetic.CONTENT + vocab > config.model.vocab_size:
    raise ConfigError(f'model.vocab_size={config.model.vocab_size} is too small for the '
                      f'synthetic tasks; allowed: >= {synthetic.CONTENT + vocab}')
  length = tuple(d.synthetic_length) if isinstance(d.synthetic_length, (tuple, list)) else ()
  shortest = synthetic.MIN_LENGTH + d.add_bos + d.add_eos
  if (len(length) != 2 or not all(isinstance(v, int) for v in length)
      or not shortest <= length[0] <= length[1]):
    raise ConfigError(f'data.synthetic_length={d.synthetic_length!r} is not allowed; allowed: '
                      f'(min, max) integers with {shortest} <= min <= max')
  clash = {tok.bos_id, tok.eos_id} & set(range(min(synthetic.TASK_MARKER.values()),
                                               synthetic.MAX_ID + 1))
  if clash:
    raise ConfigError(f'data.tokenizer={d.tokenizer!r} has bos/eos ids {sorted(clash)} inside '
                      f'the synthetic token range; allowed: special ids below '
                      f'{min(synthetic.TASK_MARKER.values())}')
  if config.train.seq_len < MIN_SYNTHETIC_SEQ_LEN:
    raise ConfigError(f'train.seq_len={config.train.seq_len} is too short for data.source='
                      f"'synthetic'; allowed: >= {MIN_SYNTHETIC_SEQ_LEN}")
  if d.synthetic_loss not in SYNTHETIC_LOSS:
    raise ConfigError(f'data.synthetic_loss={d.synthetic_loss!r} is not allowed; allowed: '
                      f'{", ".join(SYNTHETIC_LOSS)}')


def _check_files(config) -> None:
  d = config.data
  if d.source == 'tfds':
    for field in ('tfds_name', 'train_split', 'eval_split'):
      if not isinstance(d[field], str) or not d[field]:
        raise ConfigError(f'data.{field}={d[field]!r} is not allowed; allowed: a non-empty '
                          'string (e.g. wikipedia/20230601.en, train[:90%])')
  else:
    if not isinstance(d.text_glob, str) or not d.text_glob:
      raise ConfigError(f"data.text_glob={d.text_glob!r} must be a glob of .txt or .jsonl files "
                        "for data.source='text'")
    text_files.matching_files(d.text_glob)
    ef = d.eval_fraction
    if isinstance(ef, bool) or not isinstance(ef, (int, float)) or not 0 <= ef < 1:
      raise ConfigError(f'data.eval_fraction={ef!r} is not allowed; allowed: a number in [0, 1)')
  if not sources.text_fields(d):
    raise ConfigError(f'data.text_field={d.text_field!r} is not allowed; allowed: a field name '
                      'or comma-separated field names (e.g. text or inputs,targets)')


def validate(config) -> None:
  """Raises ConfigError naming the first bad field of ``config.data`` / sizes it depends on."""
  d = config.data
  if d.source not in sources.SOURCES:
    raise ConfigError(f'data.source={d.source!r} is not allowed; allowed: '
                      f'{", ".join(sources.SOURCES)}')
  for field in ('pack', 'reset_positions', 'add_bos', 'add_eos', 'shuffle'):
    _boolean(d[field], f'data.{field}')
  _boolean(d.get('text_split_blank_lines', False), 'data.text_split_blank_lines')
  for field in ('worker_count', 'prefetch'):
    _int_at_least(d[field], f'data.{field}', 0)
  fields.check(d.seed, 'data.seed', fields.integer(0, 2**31 - 1))
  _int_at_least(config.train.seq_len, 'train.seq_len', 2)
  _int_at_least(config.train.batch_size, 'train.batch_size', 1)
  if 'eval' in config and 'batch_size' in config.eval:
    _int_at_least(config.eval.batch_size, 'eval.batch_size', 0)
  tok = tokenizers.make_tokenizer(d)
  if tok.vocab_size > config.model.vocab_size:
    raise ConfigError(f'model.vocab_size={config.model.vocab_size} is smaller than the vocabulary '
                      f'of data.tokenizer={d.tokenizer!r} ({tok.vocab_size}); allowed: >= '
                      f'{tok.vocab_size}')
  if d.source == 'synthetic':
    _check_synthetic(config, tok)
  else:
    _check_files(config)
