r"""Looks inside a model the way the paper looked inside Gemma 7B.

  python -m ropex.analyze --workdir DIR [--step N] [--prompts FILE] [--out DIR/analysis]
  python -m ropex.analyze --model PATH [--tokenizer FILE] --out DIR   # released weights
  (a Hugging Face folder of any family in ropex.model.io, or an official Gemma Flax folder;
  --gemma PATH is an alias of --model)
  python -m ropex.analyze --config configs/tiny.py:pe=rope --out DIR   # a fresh (random) model
  python -m ropex.analyze theory --out DIR

Writes ``report.md`` and ``report.html`` (figures in ``figures/``), ``arrays.npz`` and
``summary.json``; ``theory`` writes ``theory.md`` / ``theory.html`` / ``theory.json``.
"""

from __future__ import annotations

import os

from absl import app, flags, logging
import ml_collections
from ml_collections import config_flags

from ropex import inputs
from ropex.config import loading
from ropex.errors import ConfigError
from ropex.training import distributed, released

_WORKDIR = flags.DEFINE_string('workdir', None, 'Training workdir to analyse (latest or --step '
                               'checkpoint).')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
_MODEL, _GEMMA_DTYPE = released.define_flags(
    'Released weights: a Hugging Face checkpoint folder (config.json + safetensors; Llama, '
    'Qwen 2/3, Gemma 1-4), a GGUF file or an official Gemma (v1-3) Flax checkpoint folder.',
    'gemma_dtype', 'Parameter and compute dtype for --model / --gemma.')
_GEMMA = flags.DEFINE_string('gemma', None, 'Alias of --model.')
_TOKENIZER = flags.DEFINE_string('tokenizer', None, 'Tokenizer for --model: a SentencePiece '
                                 '.model, a tokenizer.json or a .gguf file (its vocabulary '
                                 'rebuilt; default: the one next to the weights).')
_CONFIG = config_flags.DEFINE_config_file('config', None, 'Analyse a freshly initialised model '
                                          'of this config (no --workdir).')
_INIT_SEED = flags.DEFINE_integer('init_seed', 0, 'Seed of the --config initialisation.')
_PROMPTS = flags.DEFINE_string(
    'prompts', None, 'A .txt (blank-line separated) or .jsonl ("text") file of prompts, or '
    '"text" (the built-in ropex paragraphs) or "tasks" (examples of the run\'s synthetic '
    'tasks, loss on answers). Default: "tasks" for runs trained on data.source=synthetic, '
    'else "text".')
_OUT = flags.DEFINE_string('out', None, 'Output folder (default: WORKDIR/analysis; required '
                           'for --gemma, --config and theory).')
_MAX_LEN = flags.DEFINE_integer('max_len', 256, 'Tokens per prompt (BOS included).',
                                 lower_bound=2, upper_bound=1 << 20)
_BATCH = flags.DEFINE_integer('batch_size', 4, 'Prompts per forward pass.', lower_bound=1,
                               upper_bound=4096)
_TOP = flags.DEFINE_integer('top_heads', 4, 'Positional heads to ablate (0: no ablation).',
                             lower_bound=0)
_FRACTION = flags.DEFINE_float('ablate_fraction', 0.25, 'Fraction of a head\'s frequency chunks '
                               'removed per ablation band.', lower_bound=0.0,
                               upper_bound=1.0)
_HTML = flags.DEFINE_bool('html', True, 'Also write report.html.')
distributed.define_flags()   # --coordinator_address, --num_processes, --process_id, --distributed


def _load_workdir():
  from ropex.training import inference  # pylint: disable=g-import-not-at-top
  from ropex.model.config import ModelConfig  # pylint: disable=g-import-not-at-top
  # parameters restored directly into their shards on the run's mesh (config.mesh, all devices)
  config, params, step, placement = inference.load_sharded(_WORKDIR.value, step=_STEP.value)
  meta = {'run': config.get('name', ''), 'workdir': _WORKDIR.value, 'step': step}
  return ModelConfig.from_config(config.model), params, config.data, meta, placement


def _prompts(data_cfg, tokenizer, vocab_size: int):
  """The prompts named by --prompts (see its help) for a run with data block ``data_cfg``."""
  from ropex.analysis import prompts  # pylint: disable=g-import-not-at-top
  choice = _PROMPTS.value or ('tasks' if data_cfg.get('source') == 'synthetic' else 'text')
  if choice == 'tasks':
    if data_cfg.get('source') != 'synthetic':
      raise ConfigError('--prompts=tasks needs a run trained on data.source=synthetic; allowed '
                        'here: text or a prompts file')
    return prompts.task_prompts(data_cfg, tokenizer.bos_id)
  if choice == 'text':
    batch = prompts.tokenize(prompts.DEFAULT_PROMPTS, tokenizer, _MAX_LEN.value, vocab_size)
    batch.description = 'built-in text (ropex.analysis.prompts.DEFAULT_PROMPTS)'
  else:
    batch = prompts.tokenize(prompts.read_prompts(choice), tokenizer, _MAX_LEN.value, vocab_size)
    batch.description = choice
  return batch


def _load_model():
  """Released weights (--model, or its alias --gemma) placed on the default mesh, each tensor
  as it is read."""
  from ropex.model.io import tokenizer as tokenizer_io  # pylint: disable=g-import-not-at-top
  path = _MODEL.value or _GEMMA.value
  imported, placement = released.load(path, _GEMMA_DTYPE.value,
                                      '--model' if _MODEL.value else '--gemma')
  tokenizer_path = _TOKENIZER.value or imported.tokenizer_source   # a URL's, not its copy's
  if not tokenizer_path:
    why = imported.source.get('tokenizer')   # a GGUF's: why its vocabulary was not rebuilt
    raise ConfigError('--tokenizer is not set and ' + (
        f'--model={path!r} has no tokenizer ({why})' if why else
        f'no tokenizer.model / tokenizer.json lies next to --model={path!r}') +
        '; give the tokenizer file')
  data_cfg = ml_collections.ConfigDict({
      'source': 'text', 'tokenizer_path': tokenizer_path,
      'tokenizer': tokenizer_io.kind(tokenizer_path)})
  meta = {'weights': path, 'format': imported.source['format'],
          'family': imported.source['family'], 'arch': imported.model.arch,
          'tokenizer': tokenizer_path, 'source': imported.source}
  return imported.cfg, imported.params, data_cfg, meta, placement


def _load_config():
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from ropex import model as model_lib  # pylint: disable=g-import-not-at-top
  from ropex.model.config import ModelConfig  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value
  cfg = ModelConfig.from_config(config.model)
  init = jax.jit(model_lib.Transformer(cfg).init)
  params = nn.unbox(init(jax.random.key(_INIT_SEED.value), jnp.zeros((1, 8), jnp.int32))['params'])
  meta = {'run': config.get('name', ''), 'weights': f'random init (seed {_INIT_SEED.value})'}
  return cfg, params, config.data, meta, _placement(config)


def _placement(config):
  """The config's ``mesh`` block and axis rules over all devices (as training lays them out)."""
  from ropex.training.placement import Placement  # pylint: disable=g-import-not-at-top
  return Placement.from_config(config)


def _token_label(tokenizer, token: int, as_text: bool) -> str:
  if token == tokenizer.bos_id:
    return '<bos>'
  text = tokenizer.decode([token]) if as_text else ''
  return text if text.strip() and text.isprintable() else f'#{token}'


def analyze_main() -> str:
  from ropex import model as model_lib  # pylint: disable=g-import-not-at-top
  from ropex.analysis import pipeline  # pylint: disable=g-import-not-at-top
  from ropex.data import tokenizers  # pylint: disable=g-import-not-at-top
  sources = [s for s in (_WORKDIR.value, _MODEL.value, _GEMMA.value, _CONFIG.value) if s]
  if len(sources) != 1:
    raise ConfigError('give exactly one of --workdir, --model (alias --gemma) or --config (or '
                      'the command "theory")')
  if not (_WORKDIR.value or _OUT.value):
    raise ConfigError('--out is required with --model or --config')
  out = _OUT.value or os.path.join(_WORKDIR.value, 'analysis')
  inputs.output(out, '--out')   # before any weights are read
  if _WORKDIR.value:
    cfg, params, data_cfg, meta, placement = _load_workdir()
  else:
    cfg, params, data_cfg, meta, placement = (
        _load_config() if _CONFIG.value else _load_model())
  counts = model_lib.count_params(cfg)
  meta.update(layers=cfg.num_layers, d_model=cfg.embed_dim,
              heads=f'{cfg.num_heads} query / {cfg.num_kv_heads} KV, head dim {cfg.head_dim}',
              params=f"{counts['params_total']:,} ({counts['params_non_embedding']:,} "
                     'non-embedding)',
              mesh=' x '.join(f'{k}={v}' for k, v in placement.mesh.shape.items()))
  tokenizer = tokenizers.make_tokenizer(data_cfg)
  batch = _prompts(data_cfg, tokenizer, cfg.vocab_size)
  labels = [_token_label(tokenizer, int(t), batch.scored_PT is None)
            for t in batch.tokens_PT[0, :batch.lengths_P[0]]]
  result = pipeline.analyze(cfg, params, batch, out, title=f"ropex analysis: "
                            f"{meta.get('run') or meta.get('weights') or 'model'}", meta=meta,
                            top_heads=_TOP.value, ablate_fraction=_FRACTION.value,
                            batch_size=_BATCH.value, token_labels=labels, html=_HTML.value,
                            placement=placement, write=distributed.is_primary())
  if not distributed.is_primary():   # every process analysed; process 0 wrote the report
    return ''
  print(f'{len(batch.texts)} prompts ({batch.description}): loss {result.loss:.4f}')
  for row in result.head_scores.top(3):
    print(f"  L{row['layer']}H{row['head']}: {row['kind']} {row['positional']:.3f}")
  print(f"report: {result.files['report']}")
  return result.files['report']


def theory_main() -> str:
  from ropex.analysis import theory  # pylint: disable=g-import-not-at-top
  if not _OUT.value:
    raise ConfigError('--out is required for "theory"')
  inputs.output(_OUT.value, '--out')
  for result in theory.run_all(_OUT.value, html=_HTML.value):
    print(f'{result.title}: ' + '; '.join(theory.summary_lines(result)))
  path = os.path.join(_OUT.value, 'theory.md')
  print(f'report: {path}')
  return path


def main(argv):
  logging.set_verbosity(logging.WARNING)  # orbax logs every file it reads at INFO
  distributed.initialize_from_flags()
  commands = argv[1:]
  if commands not in ([], ['theory']):
    raise app.UsageError(f'unknown command {" ".join(commands)!r}; allowed: theory (or none)')
  try:
    theory_main() if commands else analyze_main()
  except FileNotFoundError as e:
    raise ConfigError(str(e)) from None


if __name__ == '__main__':
  loading.run(main, 'ropex.analyze')
