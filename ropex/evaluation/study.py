"""A length-generalisation study from one small config file: runs (existing workdirs) x
evaluation-time variants (overrides such as ``model.pe.position_scale=4``) x lengths x suite,
written as one report (``python -m ropex.study``; the config file format is
``configs/study_tiny.py``).

Study config fields (an ``ml_collections.ConfigDict``):

- ``name``; ``runs``: workdir globs, comma-separated (each match must hold ``config.json``);
- ``variants``: ``'label=override;override|label2=...'`` — ``|`` between variants, ``;``
  between one variant's overrides (``model.<field>=<value>``, see
  :mod:`ropex.evaluation.overrides`); a label with no overrides (``base=``) is the run as
  trained;
- ``lengths``, ``depths`` (comma-separated), ``suite`` / ``ruler`` / ``data`` as for
  ``ropex.evaluate`` (``--suite``, ``--ruler``, ``--data``), ``examples``, ``task_examples``,
  ``seed``, ``step`` (0: the latest checkpoint);
- ``out``: the report folder; ``reuse``: keep the evaluations that ``out/evals`` already holds
  when they answer the same request (:func:`ropex.evaluation.suite.reusable`: the step, the
  lengths, suite, data, overrides, examples and every other setting match; otherwise the run
  is evaluated again and the reason printed).

Output in ``out``: ``study.md`` (what was run, then the comparison tables, with seed groups as
mean with its 95% interval, see :mod:`ropex.evaluation.reporting.grouped`; the paired
loss differences of every variant against the run's first variant,
:mod:`ropex.evaluation.reporting.paired`; and links to the figures),
``summary.png`` (heatmap of the headline number — RULER average recall if the suite has
``ruler``, else perplexity — for every run x variant at every length), the comparison figures
(curves with bands, length x depth heatmaps) and ``evals/<run>__<variant>/results.json``.
A variant whose overrides do not apply to a run (e.g. ``position_scale`` on a NoPE run: a
``ConfigError``) is not evaluated for it; ``study.md`` lists it with the reason.
"""

from __future__ import annotations

import difflib
import glob
import json
import os
import time
from typing import Sequence

import ml_collections
import numpy as np

from ropex import inputs, paths
from ropex.evaluation import overrides as overrides_lib, suite
from ropex.evaluation.plotting import plt, save
from ropex.evaluation.reporting import compare, grouped, values
from ropex.errors import ConfigError


REQUIRED = ('runs', 'variants', 'lengths', 'depths', 'suite', 'examples', 'task_examples',
            'out')
OPTIONAL = ('name', 'ruler', 'data', 'seed', 'step', 'reuse')


def check_fields(study) -> None:
  """ConfigError for a study config that is not one (not a ConfigDict of study fields), has a
  field no study has (with the nearest known name) or lacks a required one."""
  known = REQUIRED + OPTIONAL
  if not isinstance(study, ml_collections.ConfigDict):
    raise ConfigError(f'--config: a study config is an ml_collections.ConfigDict with the '
                      f'fields {", ".join(known)} (see configs/study_tiny.py)')
  for key in study.keys():
    if key not in known:
      near = difflib.get_close_matches(key, known, n=1)
      raise ConfigError(f'study field {key!r} is not known' +
                        (f'; did you mean {near[0]!r}?' if near else '') +
                        f' allowed: {", ".join(known)}')
  missing = [k for k in REQUIRED if k not in study]
  if missing:
    raise ConfigError(f'--config is not a study config: it has no {", ".join(missing)}; a study '
                      f'needs {", ".join(REQUIRED)} (see configs/study_tiny.py)')


def check_overrides(dirs: Sequence[str], variants) -> None:
  """Every variant's override names a field of every run's config (a typo stops the study
  before anything is evaluated; an override that exists but does not apply to a run, such as
  position_scale on a NoPE run, is skipped for that run later)."""
  from ropex.training import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  for workdir in dirs:
    config = workdir_lib.load_config(workdir)
    for label, variant in variants:
      try:
        overrides_lib.apply(config, variant)
      except ConfigError as e:
        raise ConfigError(f'study variant {label!r}: {e}') from None


def parse_variants(text: str) -> list[tuple[str, dict]]:
  """``'base=|pi4=model.pe.position_scale=4'`` -> ``[('base', {}), ('pi4', {...})]``."""
  out = []
  for item in (t.strip() for t in str(text).split('|') if t.strip()):
    label, sep, rest = item.partition('=')
    if not sep or not label.strip():
      raise ConfigError(f'study variants: {item!r} must look like label=override;override '
                        '(e.g. pi4=model.pe.position_scale=4, or base= for none)')
    out.append((label.strip(), overrides_lib.parse([o for o in rest.split(';') if o.strip()])))
  labels = [label for label, _ in out]
  if not out or len(set(labels)) != len(labels):
    raise ConfigError(f'study variants {text!r}: give at least one, with distinct labels')
  return out


def workdirs(patterns: str) -> list[str]:
  out = []
  for pattern in (p.strip() for p in str(patterns).split(',') if p.strip()):
    found = _matching_workdirs(pattern)
    if not found:
      raise ConfigError(f'study runs: {pattern!r} matches no workdir with a config.json')
    out += [d for d in found if d not in out]
  return out


def _matching_workdirs(pattern: str) -> list[str]:
  """Folders matching ``pattern`` that hold a ``config.json``, locally or under a URL."""
  if not paths.is_url(pattern):
    return sorted(d for d in glob.glob(pattern) if os.path.isfile(os.path.join(d, 'config.json')))
  return [f.rsplit('/', 1)[0] for f in paths.glob(paths.join(pattern, 'config.json'),
                                                  'study runs')]


def _ints(text, field):
  try:
    return [int(x) for x in str(text).split(',') if x.strip()]
  except ValueError:
    raise ConfigError(f'study {field}={text!r} must be comma-separated integers') from None


def options(study: ml_collections.ConfigDict, variant: dict) -> suite.Options:
  try:
    depths = [float(x) for x in str(study.depths).split(',') if x.strip()]
  except ValueError:
    raise ConfigError(f'study depths={study.depths!r} must be numbers in [0, 1]') from None
  return suite.Options(
      lengths=_ints(study.lengths, 'lengths'), depths=depths, data=study.get('data', 'auto'),
      examples=int(study.examples), task_examples=int(study.task_examples),
      suite=suite.parse_suite(study.suite), ruler=study.get('ruler', 'all'),
      overrides=variant, seed=int(study.get('seed', 0)))


def reused(study, workdir: str, out: str, variant: dict) -> tuple[dict | None, str]:
  """``(results, '')`` when ``out`` holds an evaluation of the same request, else
  ``(None, why not)``."""
  from ropex.training import checkpoint, workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  if not study.get('reuse', True) or not (paths.path(out) / suite.RESULTS_FILE).is_file():
    return None, ''
  steps = checkpoint.saved_steps(workdir)
  step = int(study.get('step', 0)) or (max(steps) if steps else None)
  old = suite.load(out)
  try:
    why = suite.reusable(old, workdir_lib.load_config(workdir), options(study, variant), step)
  except ConfigError as e:    # the variant does not apply to this run
    why = str(e)
  return (old, '') if why is None else (None, why)


def run(study: ml_collections.ConfigDict, progress=print) -> dict:
  """Evaluates every run x variant (or reuses ``out/evals``) and writes the report."""
  from ropex.training import inference  # pylint: disable=g-import-not-at-top
  start = time.time()
  check_fields(study)
  variants = parse_variants(study.variants)
  dirs = workdirs(study.runs)
  for _, variant in variants:           # every option is checked before anything is read
    options(study, variant)
  check_overrides(dirs, variants)
  inputs.output(study.out, 'study out')
  results, skipped = [], []
  for workdir in dirs:
    loaded = None
    for label, variant in variants:
      name = f'{paths.path(workdir).name}__{label}'
      out = paths.join(study.out, 'evals', name)
      old, why = reused(study, workdir, out, variant)
      if old is not None:
        results.append(old)
        progress(f'{name}: existing results')
      else:
        if why:
          progress(f'{name}: evaluating again (existing results differ: {why})')
        if loaded is None:
          loaded = inference.load_for_inference(workdir, int(study.get('step', 0)) or None)
        config, params, step = loaded
        try:
          r = suite.evaluate(config, params, options(study, variant), step=step,
                             workdir=workdir)
        except ConfigError as e:   # e.g. position_scale on a NoPE run: listed in the report
          skipped.append((name, str(e)))
          progress(f'{name}: skipped ({e})')
          continue
        r['study_variant'] = label
        suite.write(r, out)
        results.append(r)
        progress(f'{name}: evaluated in {r["seconds"]:.0f} s')
  if not results:
    raise ConfigError('study: no run x variant could be evaluated: ' +
                      '; '.join(f'{n}: {why}' for n, why in skipped))
  return write(study, results, dirs, variants, time.time() - start, skipped)


def headline(results: Sequence[dict]) -> tuple[str, list[int], list[list[float | None]]]:
  """(metric, lengths, value per result per length): RULER average recall, else perplexity."""
  if any(r.get('ruler') for r in results):
    lengths = sorted({L for r in results for g in (r.get('ruler') or {}).values()
                      for L in g['lengths']})
    return 'RULER average recall', lengths, [[values.ruler_value(r, L) for L in lengths]
                                             for r in results]
  lengths = sorted({L for r in results if 'perplexity' in r for L in r['perplexity']['lengths']})
  return 'perplexity', lengths, [[values.perplexity_at(r, L) for L in lengths] for r in results]


def summary_heatmap(groups, labels, path: str) -> str:
  means = [grouped.mean_result(g) for g in groups]
  metric, lengths, values = headline(means)
  v_GL = np.asarray([[np.nan if v is None else v for v in row] for row in values], np.float64)
  label_inches = 0.06 * max(len(label) for label in labels)   # the row names at fontsize 7
  fig, ax = plt.subplots(figsize=(1.1 * len(lengths) + 2.5 + label_inches,
                                  0.45 * len(labels) + 1.6), layout='constrained')
  shown = np.log(v_GL) if metric == 'perplexity' else v_GL
  image = ax.imshow(shown, aspect='auto',
                    cmap='viridis_r' if metric == 'perplexity' else 'viridis',
                    vmin=None if metric == 'perplexity' else 0,
                    vmax=None if metric == 'perplexity' else 1)
  trained = min(r['run']['train_positions'] for g in groups for r in g)
  for (i, j), v in np.ndenumerate(v_GL):
    bright = not np.isnan(v) and image.norm(shown[i, j]) > 0.6
    if metric == 'perplexity':
      bright = not np.isnan(v) and image.norm(shown[i, j]) < 0.4
    ax.text(j, i, '-' if np.isnan(v) else (f'{v:.3g}' if metric == 'perplexity' else f'{v:.2f}'),
            ha='center', va='center', fontsize=7, color='black' if bright else 'white')
  ax.set_xticks(range(len(lengths)), [f'{L}' + ('*' if L > trained else '') for L in lengths],
                fontsize=7)
  ax.set_yticks(range(len(labels)), labels, fontsize=7)
  ax.set_xlabel('context length (* beyond the positions seen in training)', fontsize=8)
  ax.set_title(f'{metric} (mean over seeds)', fontsize=9)
  fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02).set_label(
      'log perplexity' if metric == 'perplexity' else 'recall', fontsize=7)
  return save(fig, path, tight=False)   # constrained layout fits the row names and the bar


def variant_pairs(groups: Sequence[Sequence[dict]], first: str) -> list[tuple[int, int]]:
  """``(baseline, other)``: every group of a variant against the group of the same runs under
  the ``first`` variant."""
  key = lambda g: sorted(str(r['run'].get('group')) for r in g)
  base = {json.dumps(key(g)): i for i, g in enumerate(groups)
          if g[0].get('study_variant') == first}
  return [(base[json.dumps(key(g))], j) for j, g in enumerate(groups)
          if g[0].get('study_variant') != first and json.dumps(key(g)) in base]


def write(study, results, dirs, variants, seconds: float, skipped=()) -> dict:
  paths.path(study.out, 'study out').mkdir(parents=True, exist_ok=True)
  first = variants[0][0]
  groups = [[results[i] for i in idx] for idx in grouped.group_indices(results)]
  text, written = compare.compare(results, study.out, pairs=variant_pairs(groups, first))
  labels = [grouped.group_label(g) for g in groups]
  heat = summary_heatmap(groups, labels, paths.join(study.out, 'summary.png'))
  figures = [heat] + [p for p in written if p.endswith('.png')]
  head = [f'# Study: {study.get("name", "study")}', '',
          f'{len(dirs)} runs x {len(variants)} variants, lengths {study.lengths}, depths '
          f'{study.depths}, suite {study.suite}' + (f' (RULER tasks: {study.ruler})'
                                                   if 'ruler' in suite.parse_suite(study.suite)
                                                   else '') + f'; {seconds:.0f} s.', '',
          'Runs: ' + ', '.join(f'`{d}`' for d in dirs), '',
          'Variants (evaluation-time overrides): ' + '; '.join(
              f'{label}: ' + (', '.join(f'{k}={v}' for k, v in o.items()) or 'as trained')
              for label, o in variants), '']
  if skipped:
    head += ['Not evaluated (the variant does not apply to the run):'] + [
        f'- {name}: {why}' for name, why in skipped] + ['']
  head += [f'![{os.path.basename(p)}]({os.path.basename(p)})' for p in figures] + ['']
  md = '\n'.join(head) + '\n' + text
  path = paths.join(study.out, 'study.md')
  paths.path(path).write_text(md)
  return {'markdown': md, 'path': path, 'figures': figures, 'results': results}

