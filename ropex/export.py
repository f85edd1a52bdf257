r"""``python -m ropex.export``: a ropex model out as a Hugging Face checkpoint folder.

  python -m ropex.export --workdir RUN --out DIR [--step N]   # a training run's checkpoint
  python -m ropex.export --model PATH --out DIR                # an imported model (HF, GGUF, Flax)

Writes ``config.json``, ``model.safetensors`` (float32; over ``--max_shard_size``, default
50GB as transformers', shards named and indexed as transformers writes them) and the tokenizer (``tokenizer.model``,
``tokenizer.json``; a run's byte tokenizer as a byte-level ``tokenizer.json`` with the same ids)
so that ``transformers.AutoModelForCausalLM.from_pretrained(DIR)`` gives the same logits
(:mod:`ropex.model.io.hf_export`). A model transformers cannot express is refused in one line
naming the field, never written as something else.
"""

from __future__ import annotations

import os

from absl import flags, logging

from ropex.errors import ConfigError
from ropex.tools.export import export, from_model, from_workdir, shard_bytes

_WORKDIR = flags.DEFINE_string('workdir', None, 'A ropex training workdir.')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step of --workdir (default: the latest).')
_MODEL = flags.DEFINE_string('model', None, 'Released weights ropex imports (Hugging Face '
                             'folder, .gguf file, Gemma Flax checkpoint), local or gs://.')
_OUT = flags.DEFINE_string('out', None, 'The folder to write (new or empty).')
_MAX_SHARD = flags.DEFINE_string(
    'max_shard_size', '50GB', 'Largest safetensors file, as transformers\' save_pretrained '
    'takes it (bytes, or with a unit: 5GB, 500MB, 2GiB, 100KiB); weights beyond it are written '
    'as model-0000i-of-0000n.safetensors shards with model.safetensors.index.json.')


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  if (_WORKDIR.value is None) == (_MODEL.value is None):
    raise ConfigError('give exactly one of --workdir RUN and --model PATH')
  if not _OUT.value:
    raise ConfigError('--out is required: the folder to write')
  if os.path.exists(_OUT.value) and (not os.path.isdir(_OUT.value) or os.listdir(_OUT.value)):
    raise ConfigError(f'--out={_OUT.value!r} exists and is not an empty folder')
  max_shard_bytes = shard_bytes(_MAX_SHARD.value)
  loaded = (from_workdir(_WORKDIR.value, _STEP.value) if _WORKDIR.value
            else from_model(_MODEL.value))
  print('wrote ' + ', '.join(export(*loaded, _OUT.value, max_shard_bytes)))


if __name__ == '__main__':
  from ropex.config import loading  # pylint: disable=g-import-not-at-top
  loading.run(main, 'ropex.export', config_flag=None)
