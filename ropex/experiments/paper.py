"""The paper's experiments: Table 2 of Barbero et al. (ICLR 2025), "Round and Round We Go!".

:func:`paper_config` builds every Table-2 run (``configs/{nope,rope,prope,prope_reversed,
partial}_2b.py`` call it; ``configs/paper_table2.py`` sweeps them); :data:`PAPER_TABLE2` holds the
paper's reported perplexities, which ``ropex.experiments.report`` prints beside a sweep's own.
:func:`gemma_run` is its builder with the schedule, data and model fields as arguments
(``configs/gpu_1x.py`` uses it too).
"""

from __future__ import annotations

import ml_collections

from ropex.config import defaults
from ropex.errors import ConfigError

# Table 2 of Barbero et al. (ICLR 2025): validation perplexity of Gemma 2B trained from scratch.
PAPER_TABLE2 = {
    'NoPE': {'wiki': 4.8594, 'flan': 6.6429},
    'RoPE θ=10k': {'wiki': 4.4627, 'flan': 6.4429},
    'RoPE θ=500k': {'wiki': 4.4485, 'flan': 6.4593},
    '0.75-RoPE reversed': {'wiki': 4.4592, 'flan': 6.4683},
    '0.75 partial (NeoX)': {'wiki': 4.4537, 'flan': 6.4562},
    '0.25-RoPE': {'wiki': 4.5302, 'flan': 6.5111},
    '0.75-RoPE': {'wiki': 4.4414, 'flan': 6.4422},
}
DATASET_TITLES = {'wiki': 'Wiki', 'flan': 'FlanV2'}


_GEMMA_TOKENIZER = dict(tokenizer='sentencepiece', tokenizer_path='tokenizer/gemma_tokenizer.model')
PAPER_DATA = {
    # Wikipedia (TFDS), 10% held out; FlanV2 as local jsonl files (inputs + targets fields).
    'wiki': dict(source='tfds', tfds_name='wikipedia/20230601.en', text_field='text',
                 train_split='train[:90%]', eval_split='train[90%:]', **_GEMMA_TOKENIZER),
    'flan': dict(source='text', text_glob='data/flan_v2/*.jsonl', text_field='inputs,targets',
                 **_GEMMA_TOKENIZER),
}
# Table 2's schedule: config block -> its fields (see paper_config).
PAPER_SCHEDULE = dict(
    train=dict(steps=10_000, batch_size=512, seq_len=8192, learning_rate=3e-4,
               warmup_steps=1000, loss_chunk=1024, log_every_steps=50),
    mesh=dict(data=1, fsdp=-1, tensor=1),
    checkpoint=dict(every_steps=500, keep=3),
    eval=dict(every_steps=1000, steps=20))


def paper_config(pe: ml_collections.ConfigDict, args: ml_collections.ConfigDict,
                 name: str) -> ml_collections.ConfigDict:
  """Table 2 of the paper: Gemma 2B from scratch, context 8192, batch 512, 10k steps.

  The paper does not state optimizer, schedule or hardware; these are Gemma-style defaults
  (AdamW 0.9/0.95, peak 3e-4, 1k warmup, cosine to 10%, weight decay 0.1, clip 1.0,
  bfloat16 compute with float32 parameters, FSDP over all chips)."""
  return gemma_run(pe, args, name, PAPER_SCHEDULE)


def gemma_run(pe: ml_collections.ConfigDict, args: ml_collections.ConfigDict, name: str,
              schedule: dict, data: dict = PAPER_DATA,
              **model) -> ml_collections.ConfigDict:
  """A run of the Gemma 2B preset (``model``: its overridden fields) in bfloat16 with full
  rematerialisation on ``data[args.data]`` (data block fields), trained by ``schedule``
  (config block -> its fields); named ``<name>_<data>``, or with ``args.runlocal`` the
  CPU-sized ``<name>_local`` (:func:`ropex.config.defaults.runlocal`)."""
  if args.data not in data:
    raise ConfigError(f'config argument data={args.data!r} is not known; allowed: '
                      f'{", ".join(data)}')
  c = defaults.base_config('gemma_2b', pe=pe, dtype='bfloat16', remat='full')
  c.model.update(model)
  c.name = f'{name}_{args.data}'
  c.data.update(data[args.data])
  for block, fields in schedule.items():
    c[block].update(fields)
  if args.runlocal:
    defaults.runlocal(c)
    c.name = f'{name}_local'
  return c
