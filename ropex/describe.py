r"""``python -m ropex.describe --config CONFIG [--json]``: what a config builds, allocating nothing.
``python -m ropex.describe --model PATH [--json]``: the same for a released checkpoint (a Hugging
Face folder), from its ``config.json`` alone, reading no weights.

Prints parameter counts (from ``jax.eval_shape``) and, per layer, the attention shape and the
positional encoding: kind, θ, which frequency chunks rotate (0 = highest frequency), window or
chunked-local attention, RoPE scaling, logit bias and learned PE parameters. ``--json`` adds,
per layer, ``inv_freq`` (radians per position of every one of the head_dim/2 chunks after
scaling, 0 = unrotated; ``null`` where the encoding declares no rotation frequencies, e.g. ALiBi)
and ``attention_factor``; length-dependent scalings (``dynamic_ntk``, ``longrope``) are shown
at ``--seq_len`` (default ``train.seq_len``).
"""

from __future__ import annotations

import json

from absl import app, flags
from ml_collections import config_flags

from ropex.model.config import ModelConfig
from ropex.tools.describe import describe, format_table
from ropex.config import loading

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.',
                                          lock_config=True)
_JSON = flags.DEFINE_bool('json', False, 'Print one JSON object instead of a table.')
_MODEL = flags.DEFINE_string('model', None, 'Released weights (a Hugging Face checkpoint '
                              'folder, a .gguf file, a Gemma Flax checkpoint): describe the '
                              'model they build (no weights are read; of a gs:// URL a Hugging '
                              'Face folder\'s config.json alone is copied, a .gguf file or a '
                              'Flax folder whole, to a local temporary folder first).')
_SEQ_LEN = flags.DEFINE_integer('seq_len', None, 'Sequence length for length-dependent RoPE '
                                'scalings (dynamic_ntk, longrope); default train.seq_len.',
                                lower_bound=1)


def _from_model(path: str):
  from ropex.model import io  # pylint: disable=g-import-not-at-top
  block, source = io.read_model(path)
  return ModelConfig.from_config(block), path, source


def main(argv):
  del argv
  config = _CONFIG.value
  if (config is None) == (_MODEL.value is None):
    raise app.UsageError('give one of --config (e.g. --config configs/prope_2b.py:p=0.25) or '
                         '--model (a Hugging Face checkpoint folder)')
  source = None
  if _MODEL.value:
    model_cfg, name, source = _from_model(_MODEL.value)
  else:
    model_cfg, name = ModelConfig.from_config(config.model), config.get('name', '')
  seq_len = _SEQ_LEN.value
  if seq_len is None and config is not None and config.get('train') is not None:
    seq_len = int(config.train.seq_len)
  d = describe(model_cfg, name, seq_len)
  if source is not None:
    d['source'] = source
  print(json.dumps(d, indent=1) if _JSON.value else format_table(d))
  return 0


if __name__ == '__main__':
  loading.run(main, 'ropex.describe')
