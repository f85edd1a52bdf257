"""Every figure kind ropex writes, rendered on tiny data, reads at a glance: no text falls
outside the canvas (nothing clipped), every heatmap has a colour bar (its own, or a shared one
with the same colour scale), tick labels do not overlap one another, and no legend sits on a
curve's points. Figures are checked as they are saved (``Figure.savefig`` is wrapped)."""

import dataclasses
import os
import sys

import matplotlib.figure
import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'evaluation'))
from evaluation_testlib import init_params, micro_config  # pylint: disable=g-import-not-at-top,wrong-import-position

LONG = 'a_rather_long_run_name_prope0.75_theta10_seed_group'


def layout_problems(fig) -> list[str]:
  """What makes ``fig`` hard to read (an empty list when nothing does)."""
  fig.draw_without_rendering()   # runs the layout engine, as saving does
  renderer = fig.canvas.get_renderer()
  out = []
  tight, (width, height) = fig.get_tightbbox(renderer), fig.get_size_inches()
  if tight.x0 < -0.01 or tight.y0 < -0.01 or tight.x1 > width + 0.01 or tight.y1 > height + 0.01:
    out.append(f'text outside the canvas: tight bbox x {tight.x0:.2f}..{tight.x1:.2f}, y '
               f'{tight.y0:.2f}..{tight.y1:.2f} inches on a {width:.2f} x {height:.2f} figure')
  images = [im for ax in fig.axes for im in ax.images]
  with_bar = [im for im in images if im.colorbar is not None]
  for im in images:
    shared = any(o.norm.vmin == im.norm.vmin and o.norm.vmax == im.norm.vmax and
                 o.cmap.name == im.cmap.name for o in with_bar)
    if im.colorbar is None and not shared:
      out.append(f'heatmap {im.axes.get_title()!r} has no colour bar')
  for ax in fig.axes:
    for axis in (ax.xaxis, ax.yaxis):
      boxes = [t.get_window_extent(renderer) for t in axis.get_ticklabels()
               if t.get_visible() and t.get_text()]
      boxes.sort(key=lambda b: (b.x0, b.y0))
      for a, b in zip(boxes, boxes[1:]):
        if a.overlaps(b) and a.intersection(a, b).width * a.intersection(a, b).height > 1:
          out.append(f'overlapping tick labels in {ax.get_title()!r}')
          break
    legend = ax.get_legend()
    if legend is not None:
      box = legend.get_window_extent(renderer)
      for line in ax.get_lines():
        xy = ax.transData.transform(np.asarray(line.get_xydata(), float))
        inside = ((xy[:, 0] > box.x0) & (xy[:, 0] < box.x1) & (xy[:, 1] > box.y0) &
                  (xy[:, 1] < box.y1))
        if inside.any():
          out.append(f'the legend of {ax.get_title()!r} covers points of {line.get_label()!r}')
          break
  return out


def _assert_readable(checked):
  bad = [f'{name}: {problem}' for name, problems in checked.items() for problem in problems]
  assert not bad, '\n'.join(bad)


@pytest.fixture
def checked(monkeypatch):
  """Wraps Figure.savefig: every figure saved is checked first; yields the findings."""
  found = {}
  original = matplotlib.figure.Figure.savefig

  def savefig(fig, fname, *args, **kwargs):
    name = str(getattr(fname, 'name', fname))
    found[os.path.join(os.path.basename(os.path.dirname(name)), os.path.basename(name))] = (
        layout_problems(fig))
    return original(fig, fname, *args, **kwargs)

  monkeypatch.setattr(matplotlib.figure.Figure, 'savefig', savefig)
  return found


def _results():
  """Two seed groups of two runs with long names: one micro model evaluated once (every suite
  part), copied with other names, groups, seeds and shifted numbers."""
  import copy  # pylint: disable=g-import-not-at-top
  from ropex.evaluation import suite  # pylint: disable=g-import-not-at-top
  c = micro_config('rope', max_wavelength=10_000)
  base = suite.evaluate(c, init_params(c), suite.Options(
      lengths=[16, 32, 64, 128], examples=1, tasks=('prev_token',), retrieval='needle',
      depths=[0.0, 0.5, 1.0], task_examples=1, suite='perplexity,retrieval,tasks,ruler',
      ruler='niah_single', position_bucket=8))
  out = []
  for pe, shift in (('rope', 1.0), ('prope0.75', 1.5)):
    for seed in (0, 1):
      r = copy.deepcopy(base)
      r['run'].update(name=f'{LONG}_{pe}_s{seed}', group=f'{LONG}_{pe}',
                      seeds={'train': seed, 'data': seed})
      r['perplexity']['perplexity'] = [v * shift + 0.1 * seed
                                       for v in r['perplexity']['perplexity']]
      out.append(r)
  return out


def test_evaluation_and_study_figures(tmp_path, checked):
  from ropex.evaluation import study  # pylint: disable=g-import-not-at-top
  from ropex.evaluation.reporting import compare, grouped  # pylint: disable=g-import-not-at-top
  results = _results()
  compare.compare(results, str(tmp_path / 'grouped'))          # seed groups: bands
  compare.compare(results[::2], str(tmp_path / 'single'))      # one run each: plain curves
  groups = [results[:2], results[2:]]
  study.summary_heatmap(groups, [grouped.group_label(g) + ' [pe.position_scale=4]'
                                 for g in groups], str(tmp_path / 'summary.png'))
  assert {'grouped/perplexity.png', 'single/accuracy.png', 'single/ruler.png'} <= set(checked)
  _assert_readable(checked)


def test_analysis_figures(tmp_path, checked):
  from ropex.analysis import frequency, heads, theory  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  usage = frequency.FrequencyUsage(q_LNC=rng.random((4, 8, 16)), k_LKC=rng.random((4, 2, 16)),
                                   freqs_LC=np.tile(np.r_[np.geomspace(1, 1e-3, 12),
                                                          np.zeros(4)], (4, 1)), tokens=100)
  frequency.plot_overview(usage, str(tmp_path / 'overview.png'), title='tiny_prope0.75')
  frequency.plot_layers(usage, str(tmp_path))
  maps = rng.random((2, 4, 24, 24))
  top = [dict(layer=0, head=h, kind='previous', positional=0.6) for h in range(3)]
  heads.plot_attention_maps(maps, top, str(tmp_path / 'maps.png'),
                            labels=[f'tok{i}' for i in range(24)])
  theory.run_all(str(tmp_path / 'theory'), html=False, checks=(
      lambda: theory.rope_no_decay(draws=64, max_distance=256), theory.positional_heads,
      lambda: theory.nope_self_attention_bound(draws=64), theory.semantic_channels))
  assert len(checked) == 4 + 1 + 1 + 4
  _assert_readable(checked)


def test_report_loss_curves(tmp_path, checked):
  from ropex.experiments import report, run_summary  # pylint: disable=g-import-not-at-top
  runs = []
  for row, shift in (('0.75-RoPE ' + LONG, 0.0), ('RoPE theta=10k ' + LONG, 0.3)):
    for seed in (0, 1):
      curve = [(s, 3.0 * np.exp(-s / 40) + 1 + shift + 0.05 * seed) for s in range(0, 201, 10)]
      runs.append(run_summary.RunSummary(
          workdir=f'/runs/{row}_{seed}', row=row, column='synthetic', setup='tiny T=128 B=16',
          steps_planned=200, step=200, status='finished', eval_perplexity=3.0, eval_loss=1.1,
          train_loss=curve[-1][1], train_curve=curve, eval_curve=curve[::5], group=row,
          seeds=(seed, seed)))
  report.plot(runs, str(tmp_path / 'loss_curves.png'))
  assert list(checked) == [f'{tmp_path.name}/loss_curves.png']
  _assert_readable(checked)
