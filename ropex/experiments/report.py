r"""Gathers runs into the paper's Table 2 layout: rows = positional encodings, columns =
datasets, cells = final validation perplexity, with the paper's numbers beside ropex's.

  python -m ropex.report runs/paper_table2/* --out report/

Writes ``table.md`` (also printed), ``table.csv`` (the same wide table), ``runs.csv`` (one
line per run: status, step, losses, workdir) and ``loss_curves.png`` (train loss, solid;
eval loss, dashed; one panel per dataset). Unfinished and diverged runs are marked in every
output. Rows and columns come from each run's ``config.json`` (see
:mod:`ropex.experiments.run_summary`), so directory names do not matter.
"""

from __future__ import annotations

import csv
import os
import sys
from typing import Sequence

from absl import app, flags

from ropex.errors import ConfigError
from ropex.experiments.paper import DATASET_TITLES, PAPER_TABLE2
from ropex.experiments.run_summary import RunSummary, summarize

MARKS = {'unfinished': '†', 'diverged': '‡', 'no metrics': '∅'}


def _order(values, preferred):
  known = [v for v in preferred if v in values]
  return known + sorted(set(values) - set(known))


def select(runs: Sequence[RunSummary]) -> tuple[dict, list[str]]:
  """{(row, column): run}, keeping the most advanced run of duplicates; plus notes."""
  cells, notes = {}, []
  for run in runs:
    key = (run.row, run.column)
    other = cells.get(key)
    if other is not None:
      keep, drop = (run, other) if run.step > other.step else (other, run)
      notes.append(f'{key[0]} / {key[1]}: {drop.workdir} ignored (duplicate of {keep.workdir})')
      run = keep
    cells[key] = run
  return cells, notes


def _cell(run: RunSummary | None) -> str:
  if run is None:
    return '—'
  if run.status == 'diverged':
    return 'diverged ' + MARKS['diverged']
  value = '—' if run.eval_perplexity is None else f'{run.eval_perplexity:.4f}'
  return value + (' ' + MARKS[run.status] if run.status in MARKS else '')


def _title(column: str) -> str:
  return DATASET_TITLES.get(column, column)


def table(runs: Sequence[RunSummary]) -> tuple[list[str], list[list[str]], list[str]]:
  """(header, rows, notes) of the wide table; paper columns follow ropex's."""
  cells, notes = select(runs)
  rows = _order({r for r, _ in cells}, PAPER_TABLE2)
  columns = _order({c for _, c in cells}, DATASET_TITLES)
  header = ['PE'] + [f'{_title(c)} (ropex)' for c in columns] + [
      f'{_title(c)} (paper)' for c in DATASET_TITLES]
  body = []
  for row in rows:
    paper = PAPER_TABLE2.get(row, {})
    body.append([row] + [_cell(cells.get((row, c))) for c in columns] +
                [f'{paper[c]:.4f}' if c in paper else '—' for c in DATASET_TITLES])
  return header, body, notes


def markdown(runs: Sequence[RunSummary]) -> str:
  header, body, notes = table(runs)
  setups = sorted({r.setup for r in runs})
  lines = ['Final validation perplexity (lower is better). "(paper)" columns are the numbers '
           'reported in Table 2 of Barbero et al., ICLR 2025 (Gemma 2B, context 8192, batch 512,'
           ' 10k steps), not ropex results.', '',
           'ropex runs: ' + '; '.join(setups), '',
           '| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  lines += ['| ' + ' | '.join(row) + ' |' for row in body]
  lines += ['', f'{MARKS["unfinished"]} unfinished (value at the last eval), '
            f'{MARKS["diverged"]} diverged, {MARKS["no metrics"]} nothing logged yet, '
            '— no run.']
  details = [f'- {r.row} / {_title(r.column)}: {r.status} ({r.note}) — {r.workdir}'
             for r in runs if r.status != 'finished']
  if details or notes:
    lines += ['', 'Notes:'] + details + [f'- {n}' for n in notes]
  return '\n'.join(lines) + '\n'


def write_csv(runs: Sequence[RunSummary], out_dir: str) -> tuple[str, str]:
  header, body, _ = table(runs)
  wide = os.path.join(out_dir, 'table.csv')
  with open(wide, 'w', newline='') as f:
    csv.writer(f).writerows([header] + body)
  long = os.path.join(out_dir, 'runs.csv')
  with open(long, 'w', newline='') as f:
    w = csv.writer(f)
    w.writerow(['pe', 'dataset', 'status', 'step', 'steps', 'eval_perplexity', 'eval_loss',
                'train_loss', 'paper_perplexity', 'setup', 'note', 'workdir'])
    for r in runs:
      paper = PAPER_TABLE2.get(r.row, {}).get(r.column)
      w.writerow([r.row, r.column, r.status, r.step, r.steps_planned,
                  '' if r.eval_perplexity is None else repr(r.eval_perplexity),
                  '' if r.eval_loss is None else repr(r.eval_loss),
                  '' if r.train_loss is None else repr(r.train_loss),
                  '' if paper is None else paper, r.setup, r.note, r.workdir])
  return wide, long


def plot(runs: Sequence[RunSummary], path: str) -> str:
  from ropex.plotting import plt, save  # pylint: disable=g-import-not-at-top  (slow import)

  runs = list(select(runs)[0].values())  # duplicates are left out, as in the table
  columns = _order({r.column for r in runs}, DATASET_TITLES)
  rows = _order({r.row for r in runs}, PAPER_TABLE2)
  colors = {row: plt.get_cmap('tab10')(i % 10) for i, row in enumerate(rows)}
  fig, axes = plt.subplots(1, len(columns), figsize=(6 * len(columns), 4.5), squeeze=False)
  for ax, column in zip(axes[0], columns):
    for run in sorted((r for r in runs if r.column == column), key=lambda r: rows.index(r.row)):
      label = run.row + ('' if run.status == 'finished' else f' ({run.status})')
      if run.train_curve:
        ax.plot(*zip(*run.train_curve), color=colors[run.row], label=label,
                marker='.' if len(run.train_curve) < 30 else None)
      if run.eval_curve:
        ax.plot(*zip(*run.eval_curve), color=colors[run.row], linestyle='--', marker='.',
                label=None if run.train_curve else label)
    ax.set_title(f'{_title(column)}: train (solid) / eval (dashed) loss')
    ax.set_xlabel('step')
    ax.set_ylabel('cross-entropy (nats/token)')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  return save(fig, path, dpi=120)


def report(workdirs: Sequence[str], out_dir: str, diverge_margin: float = 1.0) -> dict:
  """Writes every output into ``out_dir``; returns {'markdown': text, 'runs': [...], paths}."""
  runs = [summarize(w, diverge_margin) for w in workdirs]
  os.makedirs(out_dir, exist_ok=True)
  text = markdown(runs)
  md_path = os.path.join(out_dir, 'table.md')
  with open(md_path, 'w') as f:
    f.write(text)
  wide, long = write_csv(runs, out_dir)
  png = plot(runs, os.path.join(out_dir, 'loss_curves.png'))
  return {'markdown': text, 'runs': runs, 'table_md': md_path, 'table_csv': wide,
          'runs_csv': long, 'png': png}


FLAGS = flags.FLAGS


def define_flags():
  """The CLI flags (defined only when run as a program, so the module imports cleanly)."""
  flags.DEFINE_string('out', 'report', 'directory for table.md, table.csv, runs.csv, '
                      'loss_curves.png')
  flags.DEFINE_float('diverge_margin', 1.0, 'a run whose last train loss is this many nats '
                     'above its lowest is marked diverged')


def main(argv):
  workdirs = argv[1:]
  if not workdirs:
    raise app.UsageError('give one or more run workdirs: python -m ropex.report DIR...')
  try:
    result = report(workdirs, FLAGS.out, FLAGS.diverge_margin)
  except FileNotFoundError as e:
    raise ConfigError(str(e)) from None
  print(result['markdown'])
  print(f'wrote {result["table_md"]}, {result["table_csv"]}, {result["runs_csv"]}, '
        f'{result["png"]}')


if __name__ == '__main__':
  define_flags()
  app.run(main)
