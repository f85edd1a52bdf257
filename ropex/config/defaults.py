"""The complete experiment config every ``configs/*.py`` file starts from.

Blocks: ``model`` (see :mod:`ropex.model.config`), ``data``, ``train``, ``mesh``,
``checkpoint``, ``eval``. Config files take string args (``configs/prope_2b.py:p=0.25``)
parsed by :func:`ropex.config.loading.parse_arg`; :func:`runlocal` shrinks any ablation to a
CPU-sized run with the same positional encoding. The paper's own experiment definitions are in
:mod:`ropex.experiments.paper`.
"""

from __future__ import annotations

import ml_collections

from ropex.model import config as model_config
from ropex.errors import ConfigError


def base_config(arch: str = 'tiny', pe: ml_collections.ConfigDict | None = None,
                **model_overrides) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.name = 'run'
  c.model = model_config.model_block(arch, pe=pe, **model_overrides)

  c.data = ml_collections.ConfigDict(dict(
      source='synthetic',            # synthetic | tfds | text
      tokenizer='byte',              # byte | sentencepiece | huggingface | gguf
      tokenizer_path='',             # .model (Gemma's works), tokenizer.json or .gguf file
      tfds_name='wikipedia/20230601.en', tfds_data_dir='', text_field='text',
      train_split='train[:90%]', eval_split='train[90%:]',
      text_glob='',                  # '*.txt' or '*.jsonl' files (source=text)
      text_split_blank_lines=False,  # .txt: one document per file, or split at blank lines
      eval_fraction=0.1,             # held-out documents for source=text
      tasks=('copy_offset', 'prev_token', 'assoc_recall', 'induction'),
      synthetic_loss='answers',      # answers: loss only on answer tokens | all
      synthetic_vocab=16,            # content tokens per synthetic task (ids 16..16+vocab-1)
      synthetic_length=(14, 20),     # synthetic example length range, tokens incl. bos/eos
      pack=True, reset_positions=True, add_bos=True, add_eos=True,
      shuffle=True, seed=0, worker_count=0, prefetch=2,
  ))
  c.train = ml_collections.ConfigDict(dict(
      steps=400, batch_size=16, seq_len=128, seed=0,   # tiny: ~1.5 min on 2 CPU cores
      learning_rate=3e-3, schedule='cosine',   # cosine | rsqrt | constant
      warmup_steps=40, end_learning_rate_fraction=0.1,
      b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1, decay_norms_and_embeddings=False,
      grad_clip_norm=1.0, grad_accum_steps=1,
      loss_chunk=0,                  # >0: cross-entropy over chunks of this many tokens
      z_loss=0.0, log_every_steps=10,
      init_from='',                  # WORKDIR[:STEP] or a Gemma checkpoint: start from its weights
  ))
  c.mesh = ml_collections.ConfigDict(dict(
      data=-1, fsdp=1, tensor=1,      # -1: all remaining devices
      axis_rules=(
          ('batch', ('data', 'fsdp')), ('vocab', 'tensor'), ('embed', 'fsdp'),
          ('heads', 'tensor'), ('kv_heads', None), ('head_dim', None), ('mlp', 'tensor'),
          ('norm', None), ('layers', None), ('length', None), ('act_embed', None),
          ('act_heads', 'tensor'), ('act_mlp', 'tensor'),
      ),
  ))
  c.checkpoint = ml_collections.ConfigDict(dict(every_steps=100, keep=3, async_save=True))
  c.eval = ml_collections.ConfigDict(dict(every_steps=100, steps=4, batch_size=0))
  return c


def runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks a config in place to a laptop-CPU run, keeping its positional encodings."""
  tiny = model_config.model_block('tiny')
  for key in ('arch', 'vocab_size', 'num_layers', 'embed_dim', 'num_heads', 'num_kv_heads',
              'head_dim', 'hidden_dim'):
    c.model[key] = tiny[key]
  if c.model.layer_pattern:
    c.model.num_layers = len(c.model.layer_pattern) * max(1, 2 // len(c.model.layer_pattern))
  c.model.remat, c.model.dtype = 'none', 'float32'
  c.data.source, c.data.tokenizer = 'synthetic', 'byte'
  c.train.update(steps=300, batch_size=16, seq_len=128, warmup_steps=30, learning_rate=3e-3,
                 loss_chunk=0)
  c.mesh.update(data=-1, fsdp=1, tensor=1)
  c.checkpoint.every_steps, c.eval.every_steps, c.eval.steps = 100, 100, 4
  return c


_PE_CHOICES = {
    'nope': lambda a: model_config.pe_block('none'),
    'rope': lambda a: model_config.pe_block('rope', max_wavelength=a.theta),
    'prope': lambda a: model_config.pe_block('prope', fraction=a.p, max_wavelength=a.theta),
    'prope_reversed': lambda a: model_config.pe_block('prope_reversed', fraction=a.p,
                                                      max_wavelength=a.theta),
    'partial': lambda a: model_config.pe_block('partial', rotary_fraction=a.p,
                                               max_wavelength=a.theta),
}


def pe_from_args(a: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The ``model.pe`` block for config args ``pe=<choice>``, ``p`` and ``theta``."""
  if a.pe not in _PE_CHOICES:
    raise ConfigError(f'config argument pe={a.pe!r} is not known; allowed: '
                      f'{", ".join(_PE_CHOICES)}')
  return _PE_CHOICES[a.pe](a)
