"""The whole evaluation of one model: perplexity by length, loss by position, retrieval and the
synthetic tasks over length x depth, and the RULER-style suite, as one JSON-ready dict
(:func:`evaluate`), written with its figures by :func:`write`. ``Options.suite`` picks the
parts: ``perplexity``, ``retrieval``, ``tasks``, ``ruler`` (``default``: the first three;
``all``: every part).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import logging
import time
from typing import Any, Sequence

import ml_collections
import tqdm

from ropex import data
from ropex import fields, inputs, paths
from ropex.data import sources
from ropex.errors import ConfigError
from ropex.evaluation import (data_spec, grid, intervals, overrides as overrides_lib,
                              perplexity, retrieval, rows as rows_lib, ruler as ruler_lib,
                              ruler_tasks, sampling, scoring,
                              tasks as tasks_lib, words)
from ropex.evaluation.reporting import figures, values

FORMAT = 'ropex.eval/1'
RESULTS_FILE = 'results.json'
PARTS = ('perplexity', 'retrieval', 'tasks', 'ruler')
SUITES = {'default': ('perplexity', 'retrieval', 'tasks'), 'all': PARTS}


def parse_suite(suite: Sequence[str] | str) -> tuple[str, ...]:
  """``'default'``, ``'all'``, or parts (comma-separated or a sequence) -> the parts, in order."""
  names = suite.split(',') if isinstance(suite, str) else list(suite)
  out: list[str] = []
  for name in (n.strip() for n in names if n.strip()):
    if name not in PARTS and name not in SUITES:
      raise ConfigError(f'--suite names {name!r}; allowed: {", ".join(PARTS)} (comma-separated),'
                        f' {", ".join(SUITES)}')
    out += SUITES.get(name, (name,))
  if not out:
    raise ConfigError(f'--suite is empty; allowed: {", ".join(PARTS)}, {", ".join(SUITES)}')
  return tuple(p for p in PARTS if p in out)


@dataclasses.dataclass
class Options:
  """What to evaluate. ``None`` / ``'auto'`` fields are resolved from the run's config."""
  lengths: Sequence[int] | None = None        # default: trained positions x (1/2, 1, 2, 4, 8)
  depths: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0)
  data: str = 'auto'                          # perplexity data: see ropex.evaluation.data_spec
  text_mode: str = 'documents'                # eval split: documents | stream
  examples: int | str = 'auto'                # rows per length (perplexity); auto: see below
  target_se: float = 0.01                     # auto: the loss's SE (nats) to reach per length
  max_examples: int = 256                     # auto: at most this many rows per length
  task_examples: int = 16                     # examples per (length, depth) cell
  tasks: Sequence[str] | None = None          # default: the run's synthetic tasks
  retrieval: Sequence[str] | str = 'auto'     # needle, passkey; auto: by the run's data
  overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
  seed: int = 0
  attention_chunk: int = 512
  loss_chunk: int = 512
  tokens_per_batch: int = 16_384
  position_bucket: int = 0                    # 0: a quarter of the trained positions
  suite: Sequence[str] | str = 'default'      # parts: see parse_suite
  ruler: Sequence[str] | str = 'all'          # RULER tasks (when the suite has ``ruler``)
  haystack: str = 'noise'                     # RULER haystack for text runs: noise | eval


def train_positions(config: ml_collections.ConfigDict, batches: int = 4) -> int:
  """How many positions training rows showed: ``train.seq_len``, except when positions restart
  per document (synthetic examples are short), where it is read off the first ``batches``
  training batches of the run's own data pipeline."""
  seq_len = int(config.train.seq_len)
  if config.data.source != 'synthetic' or not config.data.get('reset_positions', True):
    return seq_len
  c = copy.deepcopy(config)
  c.data.prefetch, c.data.worker_count = 0, 0
  it = data.make_iterator(c, 'train')
  return max(int(next(it)['positions'].max()) + 1 for _ in range(batches))


def task_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """Keyword arguments the run's synthetic data used (its content vocabulary)."""
  vocab = config.data.get('synthetic_vocab')
  return {} if vocab is None else {'vocab': int(vocab)}


def default_lengths(trained: int) -> tuple[int, ...]:
  """From half the trained positions to 8x beyond them (at least 16 tokens)."""
  return tuple(dict.fromkeys(max(16, int(trained * f)) for f in (0.5, 1, 2, 4, 8)))


def resolve(config: ml_collections.ConfigDict, options: Options,
            trained: int | None = None) -> Options:
  """``options`` with every automatic field filled in and checked (``trained``: the positions
  seen in training, :func:`train_positions` if not given)."""
  o = dataclasses.replace(options)
  synthetic_run = config.data.source == 'synthetic'
  o.suite = parse_suite(o.suite)
  if isinstance(o.ruler, str):
    o.ruler = ruler_lib.TASKS if o.ruler == 'all' else tuple(
        t for t in o.ruler.split(',') if t and t != 'none')
  o.ruler = ruler_tasks.check(tuple(o.ruler)) if 'ruler' in o.suite else ()
  if o.haystack not in words.HAYSTACKS:
    raise ConfigError(f'--haystack={o.haystack!r} is not allowed; allowed: '
                      f'{", ".join(words.HAYSTACKS)}')
  if o.haystack == 'eval' and synthetic_run and o.ruler:
    raise ConfigError('--haystack=eval needs a text run; synthetic runs have no eval text '
                      '(allowed for them: noise)')
  if trained is None and (not o.lengths or not o.position_bucket):
    trained = train_positions(config)
  o.lengths = perplexity.check_lengths(o.lengths or default_lengths(trained))
  o.data = data_spec.resolve(o.data, synthetic_run)
  if o.text_mode not in rows_lib.TEXT_MODES:
    raise ConfigError(f'--text_mode={o.text_mode!r} is not allowed; allowed: '
                      f'{", ".join(rows_lib.TEXT_MODES)}')
  if 'tasks' not in o.suite:
    o.tasks = ()
  elif o.tasks is None:
    o.tasks = tuple(config.data.tasks) if synthetic_run else ()
  for task in o.tasks:
    tasks_lib.supports_depth(task)   # validates the name
  if 'retrieval' not in o.suite:
    o.retrieval = ()
  elif o.retrieval == 'auto':
    o.retrieval = ('needle',) if synthetic_run else ('passkey',)
  elif isinstance(o.retrieval, str):
    o.retrieval = tuple(k for k in o.retrieval.split(',') if k and k != 'none')
  for kind in o.retrieval:
    if kind not in retrieval.KINDS:
      raise ConfigError(f'--retrieval names {kind!r}; allowed: {", ".join(retrieval.KINDS)}, '
                        'auto, none')
  if 'perplexity' not in o.suite and not (o.retrieval or o.tasks or o.ruler):
    raise ConfigError(f'--suite={",".join(o.suite)} with --ruler, --retrieval and --tasks as given '
                      'leaves nothing to evaluate; allowed: a suite part with at least one '
                      f'task (RULER: {", ".join(ruler_lib.TASKS)})')
  o.depths = tuple(float(d) for d in o.depths)
  if not o.depths or any(not 0 <= d <= 1 for d in o.depths):
    raise ConfigError(f'--depths={o.depths!r} must be numbers in [0, 1]')
  if o.examples != 'auto':
    fields.check(o.examples, '--examples', fields.integer(1))
  for name in ('task_examples', 'max_examples', 'loss_chunk', 'tokens_per_batch'):
    fields.check(getattr(o, name), f'--{name}', fields.integer(1))
  if isinstance(o.target_se, bool) or not isinstance(o.target_se, (int, float)) \
      or not o.target_se > 0:
    raise ConfigError(f'--target_se={o.target_se!r} must be a positive number (nats)')
  if o.attention_chunk < 0 or o.position_bucket < 0:
    raise ConfigError('--attention_chunk and --position_bucket must be >= 0 (0: automatic)')
  o.position_bucket = o.position_bucket or max(1, trained // 4)
  return o


def evaluate(config: ml_collections.ConfigDict, params: dict, options: Options,
             step: int | None = None, workdir: str | None = None,
             progress: bool = False, placement=None) -> dict:
  """Every number of the evaluation, as a JSON-ready dict (see the README for its layout);
  ``progress`` shows a tqdm bar over the evaluated cells; ``placement``
  (:class:`ropex.training.placement.Placement`) runs it on a mesh."""
  start = time.time()
  trained = train_positions(config)
  o = resolve(config, options, trained)
  cfg = overrides_lib.model_config(config, o.overrides, params)
  scorer = scoring.Scorer(cfg, params, o.attention_chunk, o.loss_chunk, o.tokens_per_batch,
                          placement=placement)
  tokenizer = data.make_tokenizer(config.data)
  bos = tokenizer.bos_id if config.data.get('add_bos', True) else None
  bar = tqdm.tqdm(total=_cells(o), desc=f'evaluate {config.get("name", "run")}',
                  disable=not progress, leave=False)

  def log(msg: str) -> None:
    logging.info('%s', msg)
    bar.update(1)
    bar.set_postfix_str(msg, refresh=False)

  results = _header(config, cfg, o, step, workdir, trained)
  if 'perplexity' in o.suite:
    results['perplexity'] = _perplexity(config, o, scorer, tokenizer, bos, log)
  sweep = functools.partial(grid.sweep, scorer, lengths=o.lengths, depths=o.depths,
                            count=o.task_examples, seed=o.seed, bos_id=bos, progress=log)
  kw = task_kwargs(config)
  results['retrieval'] = sweep([retrieval.task(k, tokenizer, **kw) for k in o.retrieval])
  results['tasks'] = sweep([tasks_lib.task(t, **kw) for t in o.tasks])
  if o.ruler:
    lex = words.for_run(config, o.haystack)
    results['ruler'] = sweep(ruler_lib.tasks(lex, o.ruler), label='ruler ')
    for g in results['ruler'].values():
      g['lexicon'] = {'style': lex.style, 'haystack': lex.haystack}
  for part in ('retrieval', 'tasks', 'ruler'):
    for g in (results.get(part) or {}).values():
      g['interval'] = proportion_intervals(g)
  bar.close()
  results['seconds'] = round(time.time() - start, 2)
  return results


def _cells(o: Options) -> int:
  """(length, depth) cells the evaluation scores: the progress bar's total."""
  return len(o.lengths) * (('perplexity' in o.suite) + len(o.retrieval) * len(o.depths) + sum(
      len(o.depths) if tasks_lib.supports_depth(t) else 1 for t in o.tasks) + sum(
          len(o.depths) if ruler_tasks.has_depth(t) else 1 for t in o.ruler))


def _header(config, cfg, o: Options, step, workdir, trained) -> dict:
  """What was evaluated: the run, its per-layer encodings, the overrides and the settings."""
  applied = overrides_lib.apply(config, o.overrides)
  return {
      'format': FORMAT,
      'run': {'name': str(config.get('name', 'run')), 'workdir': workdir, 'step': step,
              'data_source': config.data.source, 'tokenizer': config.data.tokenizer,
              'train_seq_len': int(config.train.seq_len),
              'train_positions': trained,
              'layers': [dict(spec.pe.summary(), window=spec.window, type=spec.type_name)
                         for spec in cfg.pattern],
              'model': applied.model.to_dict(),
              'seeds': intervals.seeds_of(config.to_dict()),
              'group': intervals.group_key(config.to_dict())},
      'overrides': {k: overrides_lib.lookup(applied, k) for k in o.overrides},
      'settings': {k: (list(v) if isinstance(v, tuple) else v)
                   for k, v in dataclasses.asdict(o).items() if k != 'overrides'},
  }


def reusable(results: dict, config: ml_collections.ConfigDict, options: Options,
             step: int) -> str | None:
  """Why an earlier ``results`` cannot stand for evaluating ``config`` at ``step`` with
  ``options`` (the first field that differs), or None when it can: the step, every resolved
  setting (lengths, depths, suite, data, examples and sizing, seeds, ...) and the overrides
  must all match. The one rule for reusing an evaluation (``ropex.demo``, ``ropex.study``)."""
  if results['run'].get('step') != step:
    return f'step {results["run"].get("step")} != {step}'
  header = _header(config, overrides_lib.model_config(config, options.overrides),
                   resolve(config, options, results['run']['train_positions']), step, None,
                   results['run']['train_positions'])
  norm = lambda v: json.loads(json.dumps(v, default=str))
  if norm(header['overrides']) != norm(results.get('overrides', {})):
    return 'overrides differ'
  old = results.get('settings', {})
  for key, value in norm(header['settings']).items():
    if old.get(key) != value:
      return f'{key} {old.get(key)!r} != {value!r}'
  return None


def _perplexity(config, o: Options, scorer, tokenizer, bos, log) -> dict:
  """Perplexity by length: synthetic rows, the same documents' prefixes at every length
  (``documents`` mode, with their count), or rows of the eval stream; ``--examples auto``
  grows the rows to the target SE (:class:`ropex.evaluation.perplexity.Sizing`)."""
  chosen = {}
  if o.data == 'synthetic':
    all_tokens = config.data.get('synthetic_loss', 'answers') != 'answers'
    rows_fn = lambda L, n: rows_lib.synthetic(tuple(config.data.tasks), L, n, (o.seed, 1), bos,
                                              all_tokens=all_tokens, **task_kwargs(config))
  elif o.text_mode == 'documents':
    source = data_spec.config_for(config, o.data)
    docs = sources.documents(source, 'eval', tokenizer)
    held = sources.record_count(source, 'eval')   # one pass: no document counted twice

    def rows_fn(L, n):
      if chosen.get('asked') != n:
        chosen.update(rows_lib.same_documents(docs, max(o.lengths) + 1, n, held), asked=n)
      return rows_lib.prefixes(chosen, L)
  else:
    source = data_spec.config_for(config, o.data)
    held = sources.record_count(source, 'eval')
    rows_fn = lambda L, n: rows_lib.eval_split(source, L, n, o.text_mode, held)
  if o.examples == 'auto':
    sweep = perplexity.length_sweep(scorer, rows_fn, o.lengths, o.position_bucket, log,
                                    perplexity.Sizing(float(o.target_se), int(o.max_examples)))
  else:
    sweep = perplexity.length_sweep(scorer, lambda L: rows_fn(L, o.examples), o.lengths,
                                    o.position_bucket, log)
  out = dict(sweep, data=o.data, text_mode=None if o.data == 'synthetic' else o.text_mode)
  if chosen:
    out['documents'] = {'count': len(chosen['ids']), 'min_tokens': chosen['min_tokens'],
                        'scanned': chosen['scanned']}
  return out


def proportion_intervals(grid: dict) -> dict:
  """Wilson bounds of a grid's primary number per (depth, length) cell, over the cell's
  examples (:func:`ropex.evaluation.sampling.proportion`)."""
  key = grid.get('primary', 'accuracy')
  low, high = [], []
  for values, counts in zip(grid[key], grid['examples']):
    cells = [None if v is None or not n else sampling.proportion([v], n)
             for v, n in zip(values, counts)]
    low.append([None if c is None else c.low for c in cells])
    high.append([None if c is None else c.high for c in cells])
  return {'of': key, 'method': 'wilson', 'level': sampling.LEVEL, 'low': low, 'high': high}


label = values.label   # a run's name in tables and legends


def write(results: dict, out_dir: str) -> list[str]:
  """Writes ``results.json`` and the figures into ``out_dir``; returns the paths written."""
  root = paths.path(out_dir, '--out')
  root.mkdir(parents=True, exist_ok=True)
  (root / RESULTS_FILE).write_text(json.dumps(results, indent=1))
  return [str(root / RESULTS_FILE)] + figures.all_figures([results], [label(results)], out_dir)


def load(path: str) -> dict:
  """Results from a ``results.json`` file or a folder holding one (``DIR`` or ``DIR/eval``)."""
  root = paths.path(path)
  for candidate in (root, root / RESULTS_FILE, root / 'eval' / RESULTS_FILE):
    if candidate.is_file():
      with inputs.reading(f'{path}: results file', candidate, f'a ropex evaluation ({FORMAT})'):
        results = json.loads(candidate.read_text())
      if not isinstance(results, dict) or results.get('format') != FORMAT:
        found = results.get('format') if isinstance(results, dict) else type(results).__name__
        raise ConfigError(f'{candidate} is not a ropex evaluation (format {found!r}; allowed: '
                          f'{FORMAT})')
      return results
  raise FileNotFoundError(f'no {RESULTS_FILE} in {path} or {path}/eval')
