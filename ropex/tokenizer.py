r"""Trains a SentencePiece tokenizer on local text files.

  python -m ropex.tokenizer --input 'corpus/*.txt' --vocab_size 8000 --output tok/my.model

``.txt`` files are read line by line; ``.jsonl`` files contribute ``--text_field`` (comma-
separated fields are joined with a newline) of every record. The model uses Gemma's special ids
(pad 0, eos 1, bos 2, unk 3), so it plugs into ``data.tokenizer='sentencepiece'``,
``data.tokenizer_path=<output>``; remember ``model.vocab_size >= --vocab_size``.
"""

from __future__ import annotations

import sys
from typing import Sequence

from absl import app
from absl import flags

from ropex.config import loading
from ropex.tools.tokenizer_training import pieces, train

_INPUT = flags.DEFINE_string('input', None, 'Glob of .txt / .jsonl files (** recurses).',
                            required=True)
_VOCAB = flags.DEFINE_integer('vocab_size', 8000, 'Number of pieces, special ids included.',
                            lower_bound=16, upper_bound=1 << 20)
_OUTPUT = flags.DEFINE_string('output', None, 'Output path ending in .model (a .vocab file is '
                              'written next to it).', required=True)
_MODEL_TYPE = flags.DEFINE_enum('model_type', 'unigram', ['unigram', 'bpe', 'char', 'word'],
                                'SentencePiece algorithm.')
_TEXT_FIELD = flags.DEFINE_string('text_field', 'text', 'Field(s) of .jsonl records.')
_COVERAGE = flags.DEFINE_float('character_coverage', 0.9995, 'Characters covered by pieces; the '
                               'rest fall back to bytes.')
_MAX_SENTENCES = flags.DEFINE_integer('max_sentences', 2_000_000, 'Lines sampled for training '
                                      '(0: all).')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of SentencePiece\'s sentence sampling.')


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  path = train(_INPUT.value, _VOCAB.value, _OUTPUT.value, _MODEL_TYPE.value, _TEXT_FIELD.value,
               _COVERAGE.value, _MAX_SENTENCES.value, _SEED.value)
  size = pieces(path)
  if size < _VOCAB.value:  # SentencePiece stops where the corpus has no more pieces to give
    print(f'ropex.tokenizer: --vocab_size={_VOCAB.value} is more than this corpus yields: the '
          f'model has {size} pieces (model.vocab_size >= {size} suffices; a larger corpus gives '
          'more)', file=sys.stderr, flush=True)
  print(f'wrote {path} ({size} pieces); use --config.data.tokenizer=sentencepiece '
        f'--config.data.tokenizer_path={path}')


if __name__ == '__main__':
  loading.run(main, 'ropex.tokenizer', config_flag=None)
