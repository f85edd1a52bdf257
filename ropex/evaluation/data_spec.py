"""What ``ropex.evaluate --data`` reads: the run's own data, or any source the trainer accepts.

- ``auto``: ``synthetic`` for synthetic runs, else ``eval``;
- ``synthetic``: the run's synthetic task mixture (one example per row, answer tokens scored);
- ``eval``: the run's evaluation split (``data`` block of its config);
- ``text:GLOB[:FIELD]``: every document of the files matching ``GLOB`` (``.txt`` / ``.jsonl``
  as for training; ``FIELD``: the JSONL field(s), comma-separated, default ``text``) — all of
  them, not a held-out fraction;
- ``tfds:NAME:SPLIT``: the prepared TFDS dataset ``NAME``, split ``SPLIT`` (e.g.
  ``tfds:wikipedia/20230601.en:train[:1%]``; read from the run's ``data.tfds_data_dir``, never
  downloaded).

Other sources are read with the run's tokenizer and bos/eos settings: :func:`config_for` is
the run's config with its ``data`` block pointed at the source, so the trainer's own document
reader (:func:`ropex.data.sources.documents`, split ``eval``) reads it.
"""

from __future__ import annotations

import copy

import ml_collections

from ropex.errors import ConfigError

NAMED = ('auto', 'synthetic', 'eval')
ALLOWED = 'auto, synthetic, eval, text:GLOB[:FIELD] or tfds:NAME:SPLIT'


def _error(spec: str, why: str) -> ConfigError:
  return ConfigError(f'--data={spec!r} {why}; allowed: {ALLOWED}')


def parse(spec: str) -> dict:
  """``{'kind': 'auto'|'synthetic'|'eval'|'text'|'tfds', ...}`` (``glob``, ``field`` for text,
  ``name``, ``split`` for tfds)."""
  spec = str(spec).strip()
  if spec in NAMED:
    return {'kind': spec}
  kind, sep, rest = spec.partition(':')
  if not sep or not rest:
    raise _error(spec, 'is not a known source')
  if kind == 'text':
    glob, field = rest, 'text'
    head, sep, tail = rest.rpartition(':')
    if sep and head and tail and not tail.startswith('//') and '/' not in tail \
        and '*' not in tail and '.' not in tail:
      glob, field = head, tail
    return {'kind': 'text', 'glob': glob, 'field': field}
  if kind == 'tfds':
    name, sep, split = rest.partition(':')
    if not sep or not name or not split:
      raise _error(spec, 'needs both a dataset name and a split')
    return {'kind': 'tfds', 'name': name, 'split': split}
  raise _error(spec, f'names the source {kind!r}')


def resolve(spec: str, synthetic_run: bool) -> str:
  """``spec`` checked, with ``auto`` replaced by what it means for the run."""
  parsed = parse(spec)
  if parsed['kind'] == 'auto':
    return 'synthetic' if synthetic_run else 'eval'
  if parsed['kind'] == 'synthetic' and not synthetic_run:
    raise _error(spec, 'needs a run trained on the synthetic tasks')
  return str(spec).strip()


def config_for(config: ml_collections.ConfigDict, spec: str) -> ml_collections.ConfigDict:
  """The run's config whose ``data`` block (split ``eval``) reads ``spec``'s documents."""
  parsed = parse(spec)
  c = copy.deepcopy(config)
  if parsed['kind'] == 'text':
    c.data.source, c.data.text_glob, c.data.text_field = 'text', parsed['glob'], parsed['field']
    c.data.eval_fraction = 1.0    # every document of the files
  elif parsed['kind'] == 'tfds':
    c.data.source, c.data.tfds_name, c.data.eval_split = 'tfds', parsed['name'], parsed['split']
  elif parsed['kind'] != 'eval':
    raise _error(spec, 'is not a document source')
  return c


def check(config: ml_collections.ConfigDict, spec: str) -> None:
  """Opens the documents ``spec`` names (files matched and readable, a TFDS split prepared)
  with the run's tokenizer, before any checkpoint is read; a problem is a ConfigError naming
  ``--data``."""
  from ropex import data as data_lib  # pylint: disable=g-import-not-at-top
  from ropex.data import sources  # pylint: disable=g-import-not-at-top
  if parse(spec)['kind'] not in ('text', 'tfds'):
    return
  c = config_for(config, spec)
  try:
    data_lib.validate(c)
    sources.documents(c, 'eval', data_lib.make_tokenizer(c.data))
  except ConfigError as e:
    raise _error(spec, f'cannot be read ({e})') from None
