"""Document sources as grain ``MapDataset``s indexed by a global document number ``g``.

``documents(config, split, tokenizer)[g]`` is a :class:`Document`: its prediction pairs
(tokens with bos/eos, shifted by one) with a loss weight and a task id per target. Finite
sources (TFDS, text files) are shuffled by grain (a fresh deterministic permutation every epoch)
and repeated forever, so every ``g >= 0`` is valid. The synthetic source generates document
``g`` from ``(data.seed, split, g)``: a bundle of examples (lengths in ``data.synthetic_length``,
content tokens ``data.synthetic_vocab``, loss on answers only unless
``data.synthetic_loss='all'``) that exactly fills one row when ``data.pack``. Random access by
``g`` lets every batch row own a disjoint, process-count-independent share of documents (see
:mod:`ropex.data.packing`).
"""

from __future__ import annotations

import dataclasses
import sys
from typing import NamedTuple

import grain
import numpy as np

from ropex.data import synthetic
from ropex.data import text_files
from ropex.errors import ConfigError

SOURCES = ('synthetic', 'tfds', 'text')
_SPLIT_SALT = {'train': 0, 'eval': 1}


class Document(NamedTuple):
  """A document as prediction pairs ``inputs_P[i] -> targets_P[i]``.

  ``starts_S`` (optional, sorted, starting at 0) splits it into independent examples (own
  segment, positions from 0): the synthetic source bundles several examples that exactly fill
  a row this way."""
  inputs_P: np.ndarray                  # int32
  targets_P: np.ndarray                 # int32
  weights_P: np.ndarray | None = None   # float32 loss weight per target; None: all 1
  task_ids_P: np.ndarray | None = None  # int32 task id per target; None: all -1
  starts_S: np.ndarray | None = None    # int64 first pair of each example; None: one example

  @classmethod
  def from_tokens(cls, tokens_N: np.ndarray) -> 'Document':
    return cls(tokens_N[:-1], tokens_N[1:])


@dataclasses.dataclass(frozen=True)
class SyntheticDocs:
  """Document ``g`` of the synthetic mixture: examples of tasks drawn uniformly from ``tasks``.

  With ``pack`` the examples' pair counts (each in ~[min_pairs, max_pairs]) sum to exactly
  ``row`` so the document fills one row with no padding; without, it is one example."""
  tasks: tuple[str, ...]
  seed: int
  split: str
  row: int                      # pairs per row (train.seq_len)
  min_pairs: int
  max_pairs: int
  pack: bool
  bos_id: int | None
  eos_id: int | None
  answers_only: bool
  vocab: int

  def _pair_counts(self, rng: np.random.Generator) -> list[int]:
    if not self.pack:
      return [int(rng.integers(self.min_pairs, self.max_pairs + 1))]
    counts, rem = [], self.row
    while rem >= 2 * self.min_pairs and rem > self.max_pairs:
      p = int(rng.integers(self.min_pairs, min(self.max_pairs, rem - self.min_pairs) + 1))
      counts.append(p)
      rem -= p
    return counts + [rem]

  def __call__(self, g: int) -> Document:
    rng = np.random.default_rng((self.seed, _SPLIT_SALT[self.split], int(g)))
    head, tail = int(self.bos_id is not None), int(self.eos_id is not None)
    counts = self._pair_counts(rng)
    starts_S = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    total = int(starts_S[-1])
    inputs_P, targets_P = np.empty(total, np.int32), np.empty(total, np.int32)
    answer_P, task_ids_P = np.zeros(total, bool), np.full(total, -1, np.int32)
    for start, pairs in zip(starts_S, counts):
      t = int(rng.integers(len(self.tasks)))
      tokens_n, answer_n = synthetic.generate(self.tasks[t], rng, pairs + 1 - head - tail,
                                              vocab=self.vocab)
      tokens_N = np.empty(pairs + 1, np.int32)
      tokens_N[head:pairs + 1 - tail] = tokens_n
      if head:
        tokens_N[0] = self.bos_id
      if tail:
        tokens_N[-1] = self.eos_id
      sl = slice(start, start + pairs)
      inputs_P[sl], targets_P[sl] = tokens_N[:-1], tokens_N[1:]
      answer_P[start + head - 1 if head else start:start + pairs - tail] = (
          answer_n if head else answer_n[1:])
      task_ids_P[sl][answer_P[sl]] = t
    weights_P = (answer_P.astype(np.float32) if self.answers_only
                 else np.ones(total, np.float32))
    return Document(inputs_P, targets_P, weights_P, task_ids_P, starts_S[:-1])


@dataclasses.dataclass(frozen=True)
class TextToDocument:
  """Record (str or dict of fields) -> tokenized :class:`Document`."""
  tokenizer: object
  fields: tuple[str, ...]
  add_bos: bool
  add_eos: bool

  def text(self, record) -> str:
    if isinstance(record, str):
      return record
    parts = []
    for f in self.fields:
      if f not in record:
        raise ConfigError(f'data.text_field={",".join(self.fields)!r}: field {f!r} is not in the '
                          f'records; available: {", ".join(map(str, record))}')
      v = record[f]
      parts.append(v.decode('utf-8', errors='replace') if isinstance(v, bytes) else str(v))
    return '\n'.join(parts)

  def __call__(self, record) -> Document:
    ids_n = self.tokenizer.encode_array(self.text(record))
    head = [self.tokenizer.bos_id] if self.add_bos else []
    tail = [self.tokenizer.eos_id] if self.add_eos else []
    return Document.from_tokens(np.concatenate([head, ids_n, tail]).astype(np.int32))


def synthetic_pairs(data_cfg, seq_len: int) -> tuple[int, int]:
  """Range of pairs (= tokens - 1, bos/eos included) per synthetic example, at most a row."""
  lo, hi = data_cfg.synthetic_length
  return min(int(lo) - 1, seq_len), min(int(hi) - 1, seq_len)


def text_fields(data_cfg) -> tuple[str, ...]:
  return tuple(f.strip() for f in str(data_cfg.text_field).split(',') if f.strip())


def _tfds_records(data_cfg, split: str):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  tfds_split = data_cfg.train_split if split == 'train' else data_cfg.eval_split
  try:
    # download=False: never fetch or prepare anything at run time.
    return tfds.data_source(data_cfg.tfds_name, split=tfds_split,
                            data_dir=data_cfg.tfds_data_dir or None, download=False)
  except ImportError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if not _tfds_prepared(tfds, data_cfg):
      reason = 'it is not prepared there (ropex never downloads at run time)'
    raise ConfigError(
        f'data.tfds_name={data_cfg.tfds_name!r} (split {tfds_split!r}) could not be opened from '
        f'data.tfds_data_dir={data_cfg.tfds_data_dir!r}: {reason}; prepare it with: tfds build '
        f'{data_cfg.tfds_name} --file_format=array_record --data_dir=DIR') from e


def _tfds_prepared(tfds, data_cfg) -> bool:
  try:
    return tfds.builder(data_cfg.tfds_name, data_dir=data_cfg.tfds_data_dir or None).is_prepared()
  except Exception:  # pylint: disable=broad-except
    return False


def _records(config, split: str):
  d = config.data
  if d.source == 'tfds':
    return _tfds_records(d, split)
  if d.source == 'text':
    return text_files.TextFiles(d.text_glob, split, d.eval_fraction, text_fields(d),
                                bool(d.get('text_split_blank_lines', False)))
  raise ConfigError(f'data.source={d.source!r} is not allowed; allowed: {", ".join(SOURCES)}')


def record_count(config, split: str) -> int | None:
  """How many documents one pass over ``split`` holds (None: synthetic, endless). The
  :func:`documents` dataset repeats them; readers that must not count a document twice (the
  evaluation's independent units) stop after this many."""
  return None if config.data.source == 'synthetic' else len(_records(config, split))


def documents(config, split: str, tokenizer) -> grain.MapDataset:
  """Infinite ``MapDataset`` of :class:`Document` for ``split`` ('train' or 'eval'): one pass
  holds :func:`record_count` documents, then they repeat."""
  d = config.data
  if d.source == 'synthetic':
    lo, hi = synthetic_pairs(d, config.train.seq_len)
    make = SyntheticDocs(tuple(d.tasks), int(d.seed), split, int(config.train.seq_len), lo, hi,
                         bool(d.pack),
                         tokenizer.bos_id if d.add_bos else None,
                         tokenizer.eos_id if d.add_eos else None,
                         d.synthetic_loss == 'answers', int(d.synthetic_vocab))
    return grain.MapDataset.range(sys.maxsize).map(make)
  records = _records(config, split)
  if len(records) == 0:  # pylint: disable=g-explicit-length-test
    raise ConfigError(f'data.source={d.source!r} has no documents in the {split} split; check '
                      'data.train_split/eval_split, data.text_glob or data.eval_fraction')
  ds = grain.MapDataset.source(records)
  if d.shuffle:
    ds = ds.shuffle(seed=int(d.seed) * 2 + _SPLIT_SALT[split])
  return ds.repeat().map(TextToDocument(tokenizer, text_fields(d), d.add_bos, d.add_eos))
