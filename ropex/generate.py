r"""``python -m ropex.generate``: a model talks. Greedy by default, nucleus sampling with
``--temperature`` / ``--top_p`` / ``--seed``; cached decoding (:mod:`ropex.model.generation`)
with parameters and batch split over the mesh like evaluation::

  python -m ropex.generate --model WORKDIR_OR_FOLDER --prompt "Once upon a time" --max_new_tokens 32
  python -m ropex.generate --model DIR --prompts_file prompts.txt --json   # one prompt a line

``--model`` is a ropex training workdir (its latest verified checkpoint, or ``--step``; its
tokenizer) or released weights that :func:`ropex.model.io.load_model` reads (a Hugging Face
folder, an official Gemma Flax checkpoint) with the tokenizer that ships with them.

The length limit (prompt + new tokens): ``--max_length``, or by default
:data:`LENGTH_FACTOR` x the run's ``train.seq_len`` for a workdir (the farthest length
``ropex.evaluate`` sweeps by default) and the released model's ``max_position_embeddings``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from typing import Any

from absl import flags, logging

from ropex import inputs, paths
from ropex.errors import ConfigError

LENGTH_FACTOR = 8

_MODEL = flags.DEFINE_string('model', None, 'A ropex training workdir or released weights '
                             '(Hugging Face folder, .gguf file, Gemma Flax checkpoint), local '
                             'or gs://.')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step of a workdir (default: the latest).')
_PROMPT = flags.DEFINE_string('prompt', None, 'The prompt text.')
_PROMPTS_FILE = flags.DEFINE_string('prompts_file', None, 'A text file, one prompt per line, '
                                    'generated as one batch.')
_MAX_NEW = flags.DEFINE_integer('max_new_tokens', 32, 'Tokens to generate (at most; generation '
                                'stops at the end-of-sequence token).')
_TEMPERATURE = flags.DEFINE_float('temperature', 0.0, 'Sampling temperature (0: greedy).')
_TOP_P = flags.DEFINE_float('top_p', 1.0, 'Nucleus sampling: keep the most likely tokens up to '
                            'this probability mass.')
_SEED = flags.DEFINE_integer('seed', 0, 'Sampling seed.')
_MAX_LENGTH = flags.DEFINE_integer('max_length', 0, 'Longest prompt + new tokens allowed (0: '
                                   f'{LENGTH_FACTOR} x train.seq_len of a workdir, '
                                   'max_position_embeddings of released weights).')
_ADD_BOS = flags.DEFINE_enum('add_bos', 'auto', ['auto', 'true', 'false'], 'Begin each prompt '
                             'with the bos token (auto: as the run\'s data did, or as the '
                             'released tokenizer does).')
_JSON = flags.DEFINE_bool('json', False, 'Print one JSON object per prompt: prompt, prompt_ids, '
                          'ids (generated), text.')


@dataclasses.dataclass
class Loaded:
  """A model ready to generate: its config, parameters (placed), tokenizer and limits."""
  cfg: Any
  params: Any
  tokenizer: Any
  placement: Any
  limit: int
  add_bos: bool
  name: str


def _is_workdir(path: str) -> bool:
  config = paths.path(path, '--model') / 'config.json'
  if not config.is_file():
    return False
  try:
    return {'model', 'train'} <= set(json.loads(config.read_text()))
  except json.JSONDecodeError:
    raise ConfigError(f'--model={path!r}: config.json is not JSON') from None


def load(path: str, step: int | None = None) -> Loaded:
  """A workdir or released weights at ``path``, local or a URL (every problem a one-line
  ConfigError)."""
  with inputs.reading('--model', path, 'a ropex workdir or released weights'):
    if not path or not paths.path(path, '--model').exists():
      raise ConfigError(f'--model={path!r} does not exist; give a ropex workdir or a folder of '
                        'released weights')
    workdir = _is_workdir(path)
  if workdir:
    return _load_workdir(path, step)
  return _load_released(path)


def _load_workdir(path: str, step: int | None) -> Loaded:
  from ropex.data import tokenizers  # pylint: disable=g-import-not-at-top
  from ropex.model.config import ModelConfig  # pylint: disable=g-import-not-at-top
  from ropex.training import inference  # pylint: disable=g-import-not-at-top
  config, params, step, placement = inference.load_sharded(path, step)
  return Loaded(ModelConfig.from_config(config.model), params,
                tokenizers.make_tokenizer(config.data), placement,
                LENGTH_FACTOR * int(config.train.seq_len), bool(config.data.add_bos),
                f'{config.get("name") or os.path.basename(path)} step {step}')


def _load_released(path: str) -> Loaded:
  from ropex.model import io  # pylint: disable=g-import-not-at-top
  from ropex.training import released  # pylint: disable=g-import-not-at-top
  io.detect_format(path)   # an unknown kind of file: one line, before anything is read
  imported, placement = released.load(path)
  if imported.tokenizer_path is None and imported.source.get('tokenizer'):   # a GGUF's reason
    raise ConfigError(f'--model={path!r} has no tokenizer: {imported.source["tokenizer"]}')
  if imported.tokenizer_path is None:
    raise ConfigError(f'--model={path!r} has no tokenizer (tokenizer.model or tokenizer.json '
                      'beside the weights, or in the folder above); add the one the weights '
                      'were released with')
  return Loaded(imported.cfg, imported.params, imported.tokenizer, placement,
                _released_limit(io.local_copy(path), imported.source['format']),
                imported.tokenizer.adds_bos,
                os.path.basename(os.path.normpath(path)))


def _released_limit(path: str, fmt: str) -> int:
  """``max_position_embeddings`` of config.json (GGUF: ``<arch>.context_length``); 0: none."""
  if fmt == 'gguf':
    from ropex.model.io import gguf  # pylint: disable=g-import-not-at-top
    return int(gguf.hf_config(gguf.Reader(path)).get('max_position_embeddings') or 0)
  hf_config = os.path.join(path, 'config.json')
  if not os.path.isfile(hf_config):
    return 0
  with open(hf_config) as f:
    c = json.load(f)
  return int((c.get('text_config') or c).get('max_position_embeddings') or 0)


def read_prompts(prompt: str | None, prompts_file: str | None) -> list[str]:
  if (prompt is None) == (prompts_file is None):
    raise ConfigError('give exactly one of --prompt TEXT and --prompts_file FILE')
  if prompt is not None:
    if not prompt.strip():
      raise ConfigError('--prompt is empty; give some text')
    return [prompt]
  if not os.path.isfile(prompts_file):
    raise ConfigError(f'--prompts_file={prompts_file!r} is not a file')
  with open(prompts_file, encoding='utf-8') as f:
    lines = f.read().splitlines()
  for i, line in enumerate(lines):
    if not line.strip():
      raise ConfigError(f'--prompts_file={prompts_file!r} line {i + 1} is an empty prompt; '
                        'allowed: one non-empty prompt per line')
  if not lines:
    raise ConfigError(f'--prompts_file={prompts_file!r} holds no prompt')
  return lines


def encode(loaded: Loaded, texts: list[str], add_bos: str, max_new_tokens: int,
           max_length: int) -> list[list[int]]:
  """Token ids of every prompt, each checked against the length limit."""
  bos = loaded.add_bos if add_bos == 'auto' else add_bos == 'true'
  limit = max_length or loaded.limit
  if not limit:
    raise ConfigError('the model states no length limit (no max_position_embeddings); give '
                      '--max_length')
  out = []
  for i, text in enumerate(texts):
    ids = ([loaded.tokenizer.bos_id] if bos else []) + list(loaded.tokenizer.encode(text))
    if len(ids) + max_new_tokens > limit:
      raise ConfigError(f'prompt {i + 1} has {len(ids)} tokens; with --max_new_tokens='
                        f'{max_new_tokens} that is {len(ids) + max_new_tokens} > the limit '
                        f'{limit} (--max_length, default {LENGTH_FACTOR} x train.seq_len of a '
                        'workdir or max_position_embeddings)')
    out.append(ids)
  return out


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  from ropex.model import generation  # pylint: disable=g-import-not-at-top
  texts = read_prompts(_PROMPT.value, _PROMPTS_FILE.value)   # checked before loading anything
  sampling = generation.Sampling(_TEMPERATURE.value, _TOP_P.value, _SEED.value).check()
  if _MAX_NEW.value < 1:
    raise ConfigError(f'--max_new_tokens={_MAX_NEW.value} must be >= 1')
  loaded = load(_MODEL.value, _STEP.value)
  prompt_ids = encode(loaded, texts, _ADD_BOS.value, _MAX_NEW.value, _MAX_LENGTH.value)
  new_ids = generation.generate(loaded.cfg, loaded.params, prompt_ids, _MAX_NEW.value,
                                eos_id=loaded.tokenizer.eos_id, sampling=sampling,
                                placement=loaded.placement)
  for text, ids, new in zip(texts, prompt_ids, new_ids):
    out = loaded.tokenizer.decode(new)
    if _JSON.value:
      print(json.dumps({'prompt': text, 'prompt_ids': ids, 'ids': new, 'text': out}))
    else:
      print(text + out)
  sys.stdout.flush()


if __name__ == '__main__':
  from ropex.config import loading  # pylint: disable=g-import-not-at-top
  loading.run(main, 'ropex.generate', config_flag=None)
