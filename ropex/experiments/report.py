r"""Gathers runs into the paper's Table 2 layout: rows = positional encodings, columns =
datasets, cells = final validation perplexity, with the paper's numbers beside ropex's.

  python -m ropex.report runs/paper_table2/* --out report/

Writes ``table.md`` (also printed), ``table.csv`` (the same wide table), ``runs.csv`` (one
line per run: status, step, losses, workdir) and ``loss_curves.png`` (train loss, solid;
eval loss, dashed; one panel per dataset). Unfinished and diverged runs are marked in every
output. Rows and columns come from each run's ``config.json`` (see
:mod:`ropex.experiments.run_summary`), so directory names do not matter.

Seeds: runs of one cell that differ only by seed (``train.seed`` / ``data.seed``, e.g. from
``ropex.experiments.sweep --seeds 3``) are one cell ``mean ± half-width (n=f of k; ...)``: the
95% Student-t interval over the perplexities of the ``f`` *finished* seeds of ``k``; the
diverged and unfinished seeds are counted and named in the cell (``1 diverged ‡``), never
silently dropped (their numbers are not averaged: a diverged run has none, an unfinished one
is at another step). A cell within noise of the column's best cell is marked ``≈``: Welch's
t-test against the best, which is picked after the fact, so the column's p-values are
Holm-adjusted before the 0.05 level (:func:`ropex.evaluation.intervals.holm`). The loss
curves show the seed mean with its 95% band. See :mod:`ropex.evaluation.intervals`.
"""

from __future__ import annotations

import csv
import io
from typing import Sequence

from absl import app, flags

from ropex import inputs, paths
from ropex.evaluation import intervals
from ropex.errors import ConfigError
from ropex.experiments.paper import DATASET_TITLES, PAPER_TABLE2
from ropex.experiments.run_summary import RunSummary, summarize

MARKS = {'unfinished': '†', 'diverged': '‡', 'no metrics': '∅'}
NOISE_MARK = '≈'


def _order(values, preferred):
  known = [v for v in preferred if v in values]
  return known + sorted(set(values) - set(known))


def select(runs: Sequence[RunSummary]) -> tuple[dict, list[str]]:
  """{(row, column): [runs]}: the runs of one seed group per cell (one run per seed, the most
  advanced of duplicates; of several groups in a cell, the one with the most advanced run);
  plus notes on what was left out."""
  by_cell: dict = {}
  for run in runs:
    by_cell.setdefault((run.row, run.column), {}).setdefault(run.group, []).append(run)
  cells, notes = {}, []
  for key, by_group in by_cell.items():
    kept_groups = []
    for group in by_group.values():
      by_seed: dict = {}
      for run in group:
        other = by_seed.get(run.seeds)
        if other is not None:
          keep, drop = (run, other) if run.step > other.step else (other, run)
          notes.append(f'{key[0]} / {key[1]}: {drop.workdir} ignored (duplicate of '
                       f'{keep.workdir})')
          run = keep
        by_seed[run.seeds] = run
      kept_groups.append(list(by_seed.values()))
    best = max(kept_groups, key=lambda g: max(r.step for r in g))
    for group in kept_groups:
      if group is not best:
        notes += [f'{key[0]} / {key[1]}: {r.workdir} ignored (duplicate of {best[0].workdir})'
                  for r in group]
    cells[key] = best
  return cells, notes


def _values(group: Sequence[RunSummary]) -> list[float]:
  """The perplexities the cell's mean and interval use: the finished seeds'."""
  return [r.eval_perplexity for r in group
          if r.status == 'finished' and r.eval_perplexity is not None]


def _counts(group: Sequence[RunSummary]) -> str:
  """``n=2 of 3; 1 diverged ‡``: how many seeds the mean holds, and what the others are."""
  parts = [f'n={len(_values(group))} of {len(group)}']
  for status in ('diverged', 'unfinished', 'no metrics'):
    count = sum(r.status == status for r in group)
    if count:
      parts.append(f'{count} {status} {MARKS[status]}')
  return '; '.join(parts)


def _cell(group: Sequence[RunSummary] | None, noise: bool = False) -> str:
  if not group:
    return '—'
  if len(group) == 1:
    run = group[0]
    if run.status == 'diverged':
      return 'diverged ' + MARKS['diverged']
    value = '—' if run.eval_perplexity is None else f'{run.eval_perplexity:.4f}'
    return value + (' ' + MARKS[run.status] if run.status in MARKS else '')
  interval = intervals.mean_interval(_values(group))
  if interval is None:
    return f'— ({_counts(group)})'
  text = f'{interval.mean:.4f}' + ('' if interval.half_width is None
                                   else f' ± {interval.half_width:.4f}')
  return f'{text} ({_counts(group)})' + (f' {NOISE_MARK}' if noise else '')


def within_noise_of_best(cells: dict) -> set:
  """Cells (row, column) of 2+ finished seeds whose perplexity is within noise of the best
  (lowest mean) such cell of their column: Welch's t-test against the best, Holm-adjusted
  over the column's comparisons, adjusted p >= 0.05; the best itself is not marked."""
  marked = set()
  for column in {c for _, c in cells}:
    groups = {k: _values(g) for k, g in cells.items() if k[1] == column and len(_values(g)) > 1}
    if len(groups) < 2:
      continue
    best = min(groups, key=lambda k: sum(groups[k]) / len(groups[k]))
    tests = [(k, intervals.welch(v, groups[best])) for k, v in groups.items() if k != best]
    tests = [(k, t.p) for k, t in tests if t is not None]
    for (k, _), adjusted in zip(tests, intervals.holm([p for _, p in tests])):
      if adjusted >= intervals.ALPHA:
        marked.add(k)
  return marked


def _title(column: str) -> str:
  return DATASET_TITLES.get(column, column)


def table(runs: Sequence[RunSummary]) -> tuple[list[str], list[list[str]], list[str]]:
  """(header, rows, notes) of the wide table; paper columns follow ropex's."""
  cells, notes = select(runs)
  noisy = within_noise_of_best(cells)
  rows = _order({r for r, _ in cells}, PAPER_TABLE2)
  columns = _order({c for _, c in cells}, DATASET_TITLES)
  header = ['PE'] + [f'{_title(c)} (ropex)' for c in columns] + [
      f'{_title(c)} (paper)' for c in DATASET_TITLES]
  body = []
  for row in rows:
    paper = PAPER_TABLE2.get(row, {})
    body.append([row] + [_cell(cells.get((row, c)), (row, c) in noisy) for c in columns] +
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
  if any(len(g) > 1 for g in select(runs)[0].values()):
    lines += ['', 'Cells with several seeds: mean ± half-width of the 95% Student-t interval '
              'over the finished seeds (n=f of k: f finished seeds of k; diverged and '
              'unfinished seeds are counted there, not averaged); '
              f"{NOISE_MARK} within noise of the best cell of its column (Welch's t-test, "
              'Holm-adjusted over the comparisons with the best, adjusted p >= 0.05).']
  details = [f'- {r.row} / {_title(r.column)}: {r.status} ({r.note}) — {r.workdir}'
             for r in runs if r.status != 'finished']
  if details or notes:
    lines += ['', 'Notes:'] + details + [f'- {n}' for n in notes]
  return '\n'.join(lines) + '\n'


def write_csv(runs: Sequence[RunSummary], out_dir: str) -> tuple[str, str]:
  header, body, _ = table(runs)
  wide, long = paths.join(out_dir, 'table.csv'), paths.join(out_dir, 'runs.csv')
  rows = [['pe', 'dataset', 'status', 'step', 'steps', 'eval_perplexity', 'eval_loss',
           'train_loss', 'paper_perplexity', 'setup', 'note', 'workdir', 'train_seed',
           'data_seed']]
  for r in runs:
    paper = PAPER_TABLE2.get(r.row, {}).get(r.column)
    rows.append([r.row, r.column, r.status, r.step, r.steps_planned,
                 '' if r.eval_perplexity is None else repr(r.eval_perplexity),
                 '' if r.eval_loss is None else repr(r.eval_loss),
                 '' if r.train_loss is None else repr(r.train_loss),
                 '' if paper is None else paper, r.setup, r.note, r.workdir,
                 *(('', '') if not r.seeds else r.seeds)])
  for path, table_rows in ((wide, [header] + body), (long, rows)):
    f = io.StringIO()
    csv.writer(f).writerows(table_rows)
    paths.path(path).write_text(f.getvalue())
  return wide, long


def plot(runs: Sequence[RunSummary], path: str) -> str:
  from ropex.evaluation.plotting import legend_beside, plt, save  # pylint: disable=g-import-not-at-top  (slow import)

  cells = select(runs)[0]   # duplicates are left out, as in the table
  columns = _order({c for _, c in cells}, DATASET_TITLES)
  rows = _order({r for r, _ in cells}, PAPER_TABLE2)
  colors = {row: plt.get_cmap('tab10')(i % 10) for i, row in enumerate(rows)}
  fig, axes = plt.subplots(1, len(columns), figsize=(6 * len(columns), 4.5), squeeze=False)
  for ax, column in zip(axes[0], columns):
    for row in (r for r in rows if (r, column) in cells):
      group = cells[row, column]
      label = row + (f' (n={len(group)} seeds)' if len(group) > 1 else '')
      if len(group) == 1 and group[0].status != 'finished':
        label += f' ({group[0].status})'
      for attr, style in (('train_curve', '-'), ('eval_curve', '--')):
        steps, mean, low, high = _band([getattr(r, attr) for r in group])
        if not steps:
          continue
        ax.plot(steps, mean, color=colors[row], linestyle=style, label=label,
                marker='.' if len(steps) < 30 or style == '--' else None)
        label = None
        if low is not None:
          ax.fill_between(steps, low, high, color=colors[row], alpha=0.2, linewidth=0)
    ax.set_title(f'{_title(column)}: train (solid) / eval (dashed) loss')
    ax.set_xlabel('step' + ('; bands: 95% interval over seeds'
                            if any(len(g) > 1 for g in cells.values()) else ''))
    ax.set_ylabel('cross-entropy (nats/token)')
    ax.grid(alpha=0.3)
    legend_beside(ax, fontsize=8)
  return save(fig, path, dpi=120)


def _band(curves):
  """Steps logged by every curve, the mean there and (2+ curves) the 95% interval bounds."""
  curves = [dict(c) for c in curves if c]
  if not curves:
    return [], [], None, None
  steps = sorted(set.intersection(*(set(c) for c in curves)))
  if len(curves) == 1:
    return steps, [curves[0][s] for s in steps], None, None
  cis = [intervals.mean_interval([c[s] for c in curves]) for s in steps]
  return (steps, [ci.mean for ci in cis], [ci.low for ci in cis], [ci.high for ci in cis])


def report(workdirs: Sequence[str], out_dir: str, diverge_margin: float = 1.0) -> dict:
  """Writes every output into ``out_dir``; returns {'markdown': text, 'runs': [...], paths}."""
  inputs.output(out_dir, '--out')   # before any run is read
  runs = [summarize(w, diverge_margin) for w in workdirs]
  paths.path(out_dir, '--out').mkdir(parents=True, exist_ok=True)
  text = markdown(runs)
  md_path = paths.join(out_dir, 'table.md')
  paths.path(md_path).write_text(text)
  wide, long = write_csv(runs, out_dir)
  png = plot(runs, paths.join(out_dir, 'loss_curves.png'))
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
