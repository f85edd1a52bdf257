r"""``python -m ropex.evaluate``: length generalisation and retrieval of trained runs.

One run (writes ``results.json`` and figures to ``--out``, default ``WORKDIR/eval``, or
``WORKDIR/eval_<overrides>`` when ``--override`` is given)::

  python -m ropex.evaluate --workdir DIR [--step N] [--lengths 64,128,...] [--depths 0,0.5,1]
      [--data auto|synthetic|eval|text:GLOB[:FIELD]|tfds:NAME:SPLIT] [--override model.pe.max_wavelength=500000] [--out DIR]
      [--suite default|all|perplexity,retrieval,tasks,ruler] [--ruler all|niah_single,...]
      [--haystack noise|eval] [--examples auto|N] [--target_se 0.01] [--max_examples 256]

Several runs in one table (``comparison.md``) and one set of figures; each argument is a
workdir (evaluated with the flags above unless it already holds ``eval/results.json``), an
evaluation folder or a ``results.json``::

  python -m ropex.evaluate compare RUN_A RUN_B RUN_C --out DIR
"""

from __future__ import annotations

import re

from absl import app, flags, logging

from ropex import inputs, paths
from ropex.errors import ConfigError
from ropex.training import distributed, released

_WORKDIR = flags.DEFINE_string('workdir', None, 'Training workdir (config.json + checkpoints).')
_STEP = flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
_MODEL, _MODEL_DTYPE = released.define_flags(
    'Released weights instead of --workdir: a Hugging Face checkpoint folder (any family ropex '
    'reads), a GGUF file or an official Gemma Flax folder; evaluated with its own tokenizer '
    '(--out needed).', 'model_dtype', 'Parameter and compute dtype for --model.')
_MODEL_SEQ_LEN = flags.DEFINE_integer('model_seq_len', 8192, 'For --model: the context length '
                                      'it was trained to (sets the default --lengths).')
_OUT = flags.DEFINE_string('out', None, 'Output folder (default WORKDIR/eval[_<overrides>]; '
                           'required for compare).')
_LENGTHS = flags.DEFINE_list('lengths', None, 'Context lengths, evaluated exactly as given '
                             '(default: train.seq_len x 1/2, 1, 2, 4, 8).')
_DEPTHS = flags.DEFINE_list('depths', ['0', '0.25', '0.5', '0.75', '1'],
                            'Needle / query depths in [0, 1] (0: start of the context).')
_DATA = flags.DEFINE_string('data', 'auto', 'Perplexity data: synthetic (the task mixture), eval '
                            '(the run\'s eval split), text:GLOB[:FIELD] or tfds:NAME:SPLIT (any '
                            'corpus, the run\'s tokenizer); auto: synthetic for synthetic runs, '
                            'else eval.')
_TEXT_MODE = flags.DEFINE_enum('text_mode', 'documents', ['documents', 'stream'],
                               'Eval split rows: one long-enough document per row, or a stream '
                               'of concatenated documents.')
_EXAMPLES = flags.DEFINE_string('examples', 'auto', 'Rows (units: documents, stream rows or '
                                'examples) per length for perplexity: a count, or auto (as '
                                'many as --target_se needs, at most --max_examples).')
_TARGET_SE = flags.DEFINE_float('target_se', 0.01, '--examples auto: the standard error of the '
                                'loss (nats per token) to reach at every length.')
_MAX_EXAMPLES = flags.DEFINE_integer('max_examples', 256, '--examples auto: at most this many '
                                     'rows per length.')
_TASK_EXAMPLES = flags.DEFINE_integer('task_examples', 16,
                                      'Examples per (length, depth) cell of retrieval / tasks.')
_TASKS = flags.DEFINE_string('tasks', 'auto', 'Synthetic tasks to sweep, comma-separated '
                             '(auto: the run\'s tasks for synthetic runs, none otherwise).')
_RETRIEVAL = flags.DEFINE_string('retrieval', 'auto', 'needle, passkey (comma-separated), none, '
                                 'or auto (needle for synthetic runs, passkey otherwise).')
_OVERRIDE = flags.DEFINE_multi_string('override', [], 'Evaluation-time model override, e.g. '
                                      'model.pe.max_wavelength=500000 or '
                                      'model.pe.position_scale=4 (repeatable).')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the generated examples.')
_ATTENTION_CHUNK = flags.DEFINE_integer('attention_chunk', 512, 'Query block of the chunked '
                                        'attention used beyond this length (0: always dense).')
_LOSS_CHUNK = flags.DEFINE_integer('loss_chunk', 512, 'Positions per logits block.')
_TOKENS_PER_BATCH = flags.DEFINE_integer('tokens_per_batch', 16_384, 'Tokens per forward pass.')
_POSITION_BUCKET = flags.DEFINE_integer('position_bucket', 0, 'Width of the loss-by-position '
                                        'buckets (0: a quarter of the trained positions).')
_SUITE = flags.DEFINE_string('suite', 'default', 'What to evaluate: perplexity, retrieval, '
                             'tasks, ruler (comma-separated); default: the first three; all.')
_RULER = flags.DEFINE_string('ruler', 'all', 'RULER tasks when --suite has ruler: all or '
                             'comma-separated niah_single, niah_multikey, niah_multivalue, '
                             'niah_multiquery, vt, cwe, fwe.')
_HAYSTACK = flags.DEFINE_string('haystack', 'noise', 'RULER haystack for text runs: noise '
                                '(repeated filler sentences) or eval (the run\'s eval text).')
MAX_LENGTH = 1 << 20  # tokens: far beyond any run here, and still a sane allocation
_REUSE = flags.DEFINE_bool('reuse', True, 'compare: use a workdir\'s existing eval/results.json '
                           'instead of evaluating it again.')
distributed.define_flags()   # --coordinator_address, --num_processes, --process_id, --distributed


def _options():
  """The evaluation options from the flags, checked (before any checkpoint is read)."""
  from ropex.evaluation import (  # pylint: disable=g-import-not-at-top
      data_spec, overrides, perplexity, suite)
  try:
    lengths = [int(x) for x in _LENGTHS.value] if _LENGTHS.value else None
    depths = [float(x) for x in _DEPTHS.value]
  except ValueError:
    raise ConfigError('--lengths must be integers and --depths numbers in [0, 1]') from None
  if lengths is not None:
    perplexity.check_lengths(lengths)
    if max(lengths) > MAX_LENGTH:
      raise ConfigError(f'--lengths has {max(lengths)}; allowed: lengths up to {MAX_LENGTH} '
                        'tokens')
  data_spec.parse(_DATA.value)
  examples = _EXAMPLES.value.strip()
  if examples != 'auto':
    try:
      examples = int(examples)
    except ValueError:
      raise ConfigError(f'--examples={examples!r}; allowed: a positive integer or auto') from None
  tasks = None if _TASKS.value == 'auto' else tuple(
      t for t in _TASKS.value.split(',') if t and t != 'none')
  return suite.Options(
      lengths=lengths, depths=depths, data=_DATA.value, text_mode=_TEXT_MODE.value,
      examples=examples, target_se=_TARGET_SE.value, max_examples=_MAX_EXAMPLES.value,
      task_examples=_TASK_EXAMPLES.value, tasks=tasks,
      retrieval=_RETRIEVAL.value, overrides=overrides.parse(_OVERRIDE.value), seed=_SEED.value,
      attention_chunk=_ATTENTION_CHUNK.value, loss_chunk=_LOSS_CHUNK.value,
      tokens_per_batch=_TOKENS_PER_BATCH.value, position_bucket=_POSITION_BUCKET.value,
      suite=suite.parse_suite(_SUITE.value), ruler=_RULER.value, haystack=_HAYSTACK.value)


def default_out(workdir: str, override_texts) -> str:
  if not override_texts:
    return paths.join(workdir, 'eval')
  slug = re.sub(r'[^A-Za-z0-9_.=+-]+', '_', '_'.join(t.removeprefix('model.')
                                                     for t in override_texts))
  return paths.join(workdir, f'eval_{slug}')


def evaluate_workdir(workdir: str, out: str | None) -> tuple[dict, list[str]]:
  from ropex.training import inference, workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  from ropex.evaluation import data_spec, suite  # pylint: disable=g-import-not-at-top
  options = _options()  # validate flags before reading the checkpoint
  if not (paths.path(workdir, '--workdir') / 'config.json').is_file():
    raise ConfigError(f'--workdir={workdir!r} holds no config.json; allowed: a training workdir '
                      '(python -m ropex.train --workdir ...)')
  config = workdir_lib.load_config(workdir)
  suite.resolve(config, options)
  data_spec.check(config, options.data)   # --data opens, before the checkpoint is read
  out = out or default_out(workdir, _OVERRIDE.value)
  inputs.output(out, '--out')
  # parameters restored directly into their shards on the run's mesh (config.mesh, all devices)
  config, params, step, placement = inference.load_sharded(workdir, _STEP.value)
  results = suite.evaluate(config, params, options, step=step, workdir=workdir, progress=True,
                           placement=placement)
  if not distributed.is_primary():   # every process evaluated; process 0 writes the files
    return results, []
  return results, suite.write(results, out)


def evaluate_model(path: str, out: str) -> tuple[dict, list[str]]:
  """Released weights (:func:`ropex.model.io.load_model`) placed on the default mesh and
  evaluated like a run; the results record the source."""
  from ropex.evaluation import suite  # pylint: disable=g-import-not-at-top
  from ropex.model import io  # pylint: disable=g-import-not-at-top
  options = _options()
  if not out:
    raise ConfigError('--out is required with --model')
  inputs.output(out, '--out')          # before any weight is read
  block, _ = io.read_model(path)     # config.json checked before any weight is read
  del block
  imported, placement = released.load(path, _MODEL_DTYPE.value)
  config = io.experiment_config(imported, _MODEL_SEQ_LEN.value)
  suite.resolve(config, options)
  results = suite.evaluate(config, imported.params, options, progress=True, placement=placement)
  results['run']['imported_from'] = imported.source
  if not distributed.is_primary():
    return results, []
  return results, suite.write(results, out)


def _summary(results: dict) -> str:
  lines = [f'{results["run"]["name"]} step {results["run"]["step"]} '
           f'({results["seconds"]:.0f} s); positions seen in training: '
           f'{results["run"]["train_positions"]}']
  from ropex.evaluation.reporting import values  # pylint: disable=g-import-not-at-top
  if 'perplexity' in results:
    p = results['perplexity']
    lines.append('  perplexity (± 95% interval over rows): ' + ', '.join(
        f'L={L}: {values.perplexity_text(values.loss_at(results, L))}' for L in p['lengths']))
    lines.append('  ' + rows_line(p))
  for name, g in values.grids(results).items():
    metric = values.primary(g).replace('_', ' ')
    at = values.grid_at(name)
    lines.append(f'  {name}, {metric} (mean over depths) [95% Wilson]: ' + ', '.join(
        f'L={L}: {values.proportion_text(at(results, L))}' for L in g['lengths']))
  if results.get('ruler'):
    from ropex.evaluation import ruler  # pylint: disable=g-import-not-at-top
    lengths, table = ruler.average_table(results['ruler'])
    lines.append('  RULER average recall %: ' + ', '.join(
        f'L={L}: {100 * v:.1f}' if v is not None else f'L={L}: -'
        for L, v in zip(lengths, table['average'])))
  return '\n'.join(lines)


def rows_line(p: dict) -> str:
  """How many rows perplexity used per length, and why that many."""
  rows = ', '.join(f'L={L}: {n}' for L, n in zip(p['lengths'], p['rows']))
  sizing = p.get('sizing')
  if not sizing:
    return f'rows (--examples): {rows}'
  why = {'target': f'the SE target {sizing["target_se"]} nats was reached at every length',
         'data': 'the data holds no more rows', 'max_examples':
             f'--max_examples {sizing["max_examples"]} reached before the SE target '
             f'{sizing["target_se"]}'}[sizing['stop']]
  return f'rows (--examples auto): {rows}; stopped because {why}'


def _compare_source(path: str) -> dict | None:
  """compare: the results ``path`` already holds, or None for a workdir to evaluate (a path
  that is neither, or an unreadable results.json: ConfigError)."""
  from ropex.evaluation import suite  # pylint: disable=g-import-not-at-top
  is_workdir = (paths.path(path, 'compare') / 'config.json').is_file()
  if is_workdir and not _REUSE.value:
    return None
  try:
    return suite.load(path)
  except FileNotFoundError:
    if not is_workdir:
      raise ConfigError(f'compare: {path!r} is neither a workdir (config.json) nor an '
                        'evaluation (results.json)') from None
    return None


def compare_paths(given: list[str], out: str) -> str:
  from ropex.evaluation.reporting import compare  # pylint: disable=g-import-not-at-top
  inputs.output(out, '--out')                 # before any run is evaluated
  sources = [(path, _compare_source(path)) for path in given]   # every path checked first
  results = []
  for path, loaded in sources:
    if loaded is not None:
      print(f'{path}: using {loaded["run"]["name"]} step {loaded["run"]["step"]} '
            '(existing results)', flush=True)
    else:
      loaded, _ = evaluate_workdir(path, None)
      print(_summary(loaded), flush=True)
    results.append(loaded)
  if not distributed.is_primary():   # process 0 writes the comparison
    return ''
  text, written = compare.compare(results, out)
  return text + '\nwrote ' + ', '.join(written)


def main(argv):
  logging.set_verbosity(logging.WARNING)
  distributed.initialize_from_flags()
  if len(argv) > 1 and argv[1] == 'compare':
    if len(argv) < 3 or not _OUT.value:
      raise app.UsageError('usage: python -m ropex.evaluate compare PATH [PATH ...] --out DIR')
    text = compare_paths(argv[2:], _OUT.value)
    if text:
      print(text)
    return
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}; use --workdir DIR, or compare '
                         'PATH [PATH ...] --out DIR')
  if bool(_WORKDIR.value) == bool(_MODEL.value):
    raise app.UsageError('give one of --workdir or --model (or use: compare PATH ... --out '
                         'DIR)')
  if _MODEL.value:
    results, written = evaluate_model(_MODEL.value, _OUT.value)
  else:
    results, written = evaluate_workdir(_WORKDIR.value, _OUT.value)
  if distributed.is_primary():
    print(_summary(results))
    print('wrote ' + ', '.join(written))


if __name__ == '__main__':
  from ropex.config import loading  # pylint: disable=g-import-not-at-top
  loading.run(main, 'ropex.evaluate', config_flag=None)
