r"""``python -m ropex.demo``: the mini ablation behind ``make demo``. Trains every run of a sweep
file (default ``configs/demo.py``: RoPE and p-RoPE at θ = 10 on one content-retrieval task,
3 seeds) one after the other, evaluates each with the suite settings of the file's ``EVAL``,
then prints two tables: the training summary of every run, and the evaluation over length
with runs that differ only by seed shown as their mean with a 95% interval
(:mod:`ropex.evaluation.reporting.grouped`).

Each run lives in ``--workdir/<name>``, its evaluation in ``--workdir/<name>/eval``; rerunning
resumes (or just re-reports) finished runs — delete the directory to start over. ``--steps``
overrides ``train.steps`` of every run, ``--seeds`` the file's ``SEEDS``.

Every number it prints is also written as markdown to ``--markdown`` (default
``--workdir/demo.md``): ``make demo`` writes ``docs/generated/demo_results.md``, the committed
copy that the documentation page ``docs/demo.md`` includes, so the page never holds
hand-typed numbers.
"""

from __future__ import annotations

import os
import sys
import time

from absl import flags, logging

from ropex import inputs
from ropex.config import loading
from ropex.errors import ConfigError
from ropex.experiments import sweep as sweep_lib

_SWEEP = flags.DEFINE_string('sweep', 'configs/demo.py', 'Sweep file of the demo runs (with '
                             'get_sweep, SEEDS and EVAL).')
_WORKDIR = flags.DEFINE_string('workdir', '/tmp/ropex-demo', 'Parent directory of the runs.')
_STEPS = flags.DEFINE_integer('steps', 0, 'Override train.steps of every run (0: keep).')
_SEEDS = flags.DEFINE_string('seeds', '', 'Seed axis: a count N or comma-separated seeds '
                             "(default: the sweep file's SEEDS).")
_MARKDOWN = flags.DEFINE_string('markdown', '', 'Markdown file for every table the demo prints '
                                '(default: WORKDIR/demo.md).')

DEFAULT_EVAL = dict(lengths=None, depths=(0.0, 0.5, 1.0), task_examples=16,
                    suite='retrieval,tasks')


def comparison_table(rows: list[tuple[str, dict]]) -> str:
  """One line per run: losses, perplexity, task accuracies (columns from every run's keys)."""
  tasks = sorted({k.rsplit('/', 1)[1] for _, s in rows for k in s
                  if k.startswith('eval/accuracy/')})
  head = ['run', 'train loss', 'eval loss', 'perplexity'] + [f'acc {t}' for t in tasks] + [
      'tokens/s']
  body = []
  for name, s in rows:
    cell = lambda key, fmt: fmt.format(s[key]) if s.get(key) is not None else '-'
    body.append([name, cell('train/loss', '{:.3g}'), cell('eval/loss', '{:.3g}'),
                 cell('eval/perplexity', '{:.4g}')] +
                [cell(f'eval/accuracy/{t}', '{:.3f}') for t in tasks] +
                [cell('train/tokens_per_s', '{:.0f}')])
  widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
  line = lambda r: '  '.join(c.ljust(w) if i == 0 else c.rjust(w)
                             for i, (c, w) in enumerate(zip(r, widths)))
  return '\n'.join([line(head), line(['-' * w for w in widths])] + [line(r) for r in body])


def demo_runs(sweep: str, workdir: str, seeds=None, steps: int = 0):
  """``[(run, config)]`` of the sweep file, seeds applied, each config validated and named
  after its run; ``steps`` > 0 overrides ``train.steps`` (and caps the warm-up)."""
  path = loading.split_spec(sweep)[0]
  if not os.path.isfile(path):
    raise ConfigError(f'--sweep={path!r} is not a file; give a sweep file such as '
                      'configs/demo.py')
  out = []
  for run in sweep_lib.load_sweep(sweep, workdir.rstrip('/'), seeds=seeds):
    config = sweep_lib.validate(run)
    config.name = run.name
    if steps:
      config.train.steps = steps
      config.train.warmup_steps = min(config.train.warmup_steps, steps)
      config.checkpoint.every_steps = min(config.checkpoint.every_steps, steps)
      config.eval.every_steps = min(config.eval.every_steps, steps)
    out.append((run, config))
  return out


def eval_options(sweep: str):
  """The suite options of the sweep file's ``EVAL`` dict (``DEFAULT_EVAL`` where it is silent)."""
  from ropex.evaluation import suite  # pylint: disable=g-import-not-at-top
  module = loading.load_module(loading.split_spec(sweep)[0])
  kw = dict(DEFAULT_EVAL, **getattr(module, 'EVAL', {}))
  return suite.Options(**kw)


def evaluate_run(workdir: str, options) -> dict:
  """The run's evaluation at its latest step: reused from ``workdir/eval`` when that holds one
  of the same request (:func:`ropex.evaluation.suite.reusable`), else computed and written
  there."""
  from ropex.evaluation import suite  # pylint: disable=g-import-not-at-top
  from ropex.training import inference  # pylint: disable=g-import-not-at-top
  out = os.path.join(workdir, 'eval')
  config, params, step = inference.load_for_inference(workdir)
  if os.path.isfile(os.path.join(out, suite.RESULTS_FILE)):
    old = suite.load(out)
    if suite.reusable(old, config, options, step) is None:
      return old
  results = suite.evaluate(config, params, options, step=step, workdir=workdir)
  suite.write(results, out)
  return results


def interval_table(results: list[dict]) -> str:
  """The seed-grouped evaluation tables (mean with its 95% interval, ≈ marks)."""
  from ropex.evaluation.reporting import grouped  # pylint: disable=g-import-not-at-top
  return grouped.markdown(results)[0]


def per_run_table(results: list[dict]) -> str:
  """The evaluation of every run on its own (one row per seed): the numbers behind the
  intervals."""
  from ropex.evaluation.reporting import tables  # pylint: disable=g-import-not-at-top
  return tables.markdown(results, [r['run']['name'] for r in results])


def report_markdown(report: dict, command: str) -> str:
  """Everything the demo prints, as markdown (no headings: the page that includes it has
  them)."""
  return '\n'.join([
      f'Written by `{command}`: {len(report["rows"])} runs, {report["minutes"]:.1f} min wall.',
      '', '**Training summary** (acc = next-token accuracy on the answer tokens of the held-out '
      'batches at the last step)', '', '```text', comparison_table(report['rows']), '```', '',
      '**Evaluation, runs grouped by seed** (answer-token accuracy, mean over the query depths)',
      '', interval_table(report['results']), '',
      '**Evaluation, every seed on its own**', '', per_run_table(report['results'])])


def run_demo(sweep: str, workdir: str, seeds=None, steps: int = 0, out=print) -> dict:
  """Trains and evaluates every run, prints both tables; returns the rows, results and time."""
  from ropex.training import loop  # pylint: disable=g-import-not-at-top
  start = time.time()
  runs = demo_runs(sweep, workdir, seeds, steps)
  options = eval_options(sweep)
  inputs.output(workdir, '--workdir')   # before the first run trains
  rows, results = [], []
  for run, config in runs:
    out(f'\n=== {run.name} ===')
    rows.append((run.name, loop.train(config, run.workdir)))
    results.append(evaluate_run(run.workdir, options))
  minutes = (time.time() - start) / 60
  out(f'\nropex mini ablation ({len(rows)} runs, {minutes:.1f} min; outputs in {workdir}/<run>; '
      'acc = next-token accuracy on the answer tokens)\n')
  out(comparison_table(rows))
  out('\nEvaluation over length (answer-token accuracy, mean over the query depths)\n')
  out(interval_table(results))
  return {'rows': rows, 'results': results, 'minutes': minutes}


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  report = run_demo(_SWEEP.value, _WORKDIR.value, sweep_lib.parse_seeds(_SEEDS.value),
                    _STEPS.value, out=lambda text: print(text, flush=True))
  path = _MARKDOWN.value or os.path.join(_WORKDIR.value, 'demo.md')
  command = ' '.join(['python -m ropex.demo'] + sys.argv[1:])
  with open(path, 'w') as f:
    f.write(report_markdown(report, command))
  print(f'\ntables written to {path}')


if __name__ == '__main__':
  loading.run(main, 'ropex.demo', config_flag=None)
