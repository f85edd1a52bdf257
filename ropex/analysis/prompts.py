"""Prompts for the analysis: built-in text written for ropex, or a file of your own.

A ``--prompts`` file is either ``.jsonl`` (one JSON object per line, text in ``"text"``) or
plain text, where prompts are separated by blank lines.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from ropex import paths
from ropex.errors import ConfigError

DEFAULT_PROMPTS = (
    'The lighthouse keeper climbed the spiral stairs every evening at six. He wound the '
    'clockwork, trimmed the wick and wrote the weather in a small green book: wind from the '
    'west, a low grey sky, three fishing boats returning before dark. In forty years the '
    'light had failed only once, on the night of the great storm, and he still remembered '
    'the sound of the sea against the door.',

    'To make bread, mix five hundred grams of flour with ten grams of salt and seven grams of '
    'yeast. Add three hundred and fifty grams of warm water and knead for ten minutes, until '
    'the dough is smooth. Leave it to rise for one hour, shape it into a loaf, let it rise '
    'again, then bake it at two hundred and twenty degrees for thirty-five minutes.',

    'A rotation turns a vector without changing its length. Rotary positional encodings use '
    'this: every pair of dimensions of a query or a key turns by an angle proportional to the '
    'position of its token, each pair at its own speed. Fast pairs change a lot from one '
    'token to the next; slow pairs barely move over thousands of tokens, and so they can '
    'carry meaning that does not depend on where a word appears.',

    'Alice gave the red key to Bob. Bob gave the blue key to Carol. Carol gave the green key '
    'to Dave. Later, Dave returned the green key to Carol, Carol returned the blue key to '
    'Bob, and Bob returned the red key to Alice. Who holds the red key now? Alice holds the '
    'red key. Who holds the blue key now? Bob holds the blue key.',

    'one two three four five six seven eight nine ten eleven twelve, one two three four five '
    'six seven eight nine ten eleven twelve. Monday Tuesday Wednesday Thursday Friday '
    'Saturday Sunday, Monday Tuesday Wednesday Thursday Friday Saturday Sunday. a b c d e f '
    'g h i j k l m n o p, a b c d e f g h i j k l m n o p.',

    'The river starts as snow on the mountain. In spring it runs fast and cold through the '
    'pine forest, slows in the wide valley where the farms are, and passes under seven '
    'bridges in the old town before it reaches the estuary. There the fresh water meets the '
    'tide, and the herons wait on the mud for the small fish that the current brings.',
)


@dataclasses.dataclass
class Prompts:
  """Token rows right-padded with 0; ``lengths_P`` real tokens per row (BOS included).

  ``scored_PT`` (optional, bool) marks the tokens the loss is measured on (predicted from the
  token before); by default every real token after the first."""
  texts: list[str]
  tokens_PT: np.ndarray
  lengths_P: np.ndarray
  scored_PT: np.ndarray | None = None
  description: str = 'text'

  @property
  def num_tokens(self) -> int:
    return int(self.lengths_P.sum())


def read_prompts(path: str) -> list[str]:
  """Prompts from a ``.jsonl`` (field ``text``) or a plain-text file (blank-line separated)."""
  if not paths.path(path, '--prompts').is_file():
    raise ConfigError(f'--prompts={path!r} is not a file; give a .txt (prompts separated by '
                      f'blank lines) or .jsonl (field "text") file')
  content = paths.path(path).read_text(encoding='utf-8')
  if path.endswith('.jsonl'):
    texts = [json.loads(line)['text'] for line in content.splitlines() if line.strip()]
  else:
    texts = [' '.join(p.split()) for p in content.split('\n\n')]
  texts = [t for t in texts if t.strip()]
  if not texts:
    raise ConfigError(f'--prompts={path!r} holds no text; give at least one prompt')
  return texts


def tokenize(texts, tokenizer, max_len: int, vocab_size: int | None = None) -> Prompts:
  """BOS + ``tokenizer.encode(text)``, truncated to ``max_len`` tokens, right-padded."""
  rows = [[int(tokenizer.bos_id)] + list(tokenizer.encode(t))[:max_len - 1] for t in texts]
  lengths = np.asarray([len(r) for r in rows], np.int32)
  tokens = np.zeros((len(rows), int(lengths.max())), np.int32)
  for i, row in enumerate(rows):
    tokens[i, :len(row)] = row
  if vocab_size is not None and tokens.max() >= vocab_size:
    raise ConfigError(f'the tokenizer produced id {int(tokens.max())} but model.vocab_size='
                      f'{vocab_size}; use the tokenizer the model was trained with')
  return Prompts(list(texts), tokens, lengths)


def task_prompts(data_cfg, bos_id: int, per_task: int = 4, seed: int = 0) -> Prompts:
  """Examples of the run's synthetic tasks (``data.tasks``), as long as the longest training
  example, each after a BOS; the loss is scored on the answer tokens only."""
  from ropex.data import synthetic  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  length = int(data_cfg.synthetic_length[1]) - 2     # room for BOS and EOS, as in training
  rows, scored, texts = [], [], []
  for task in data_cfg.tasks:
    for i in range(per_task):
      tokens, answer = synthetic.generate(task, rng, length, vocab=int(data_cfg.synthetic_vocab))
      rows.append(np.concatenate([[bos_id], tokens]))
      scored.append(np.concatenate([[False], answer]))
      texts.append(f'{task} #{i}')
  return Prompts(texts, np.stack(rows).astype(np.int32), np.full(len(rows), length + 1, np.int32),
                 np.stack(scored), f'synthetic tasks ({", ".join(data_cfg.tasks)}), {per_task} '
                 f'examples each, loss on answer tokens')
