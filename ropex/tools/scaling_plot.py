"""The figure of ``python -m ropex.bench --scaling``: four panels, legends outside the axes."""

from __future__ import annotations

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position

_GIB = 2 ** 30


def _curves(ax, points, mode, y, scale=1.0):
  for impl in sorted({p['impl'] for p in points if p['mode'] == mode}):
    pts = sorted((p for p in points if p['mode'] == mode and p['impl'] == impl),
                 key=lambda p: p['seq_len'])
    if all(p[y] is not None for p in pts):
      ax.plot([p['seq_len'] for p in pts], [p[y] / scale for p in pts], marker='o', label=impl)
  ax.set_xscale('log', base=2)
  ax.set_yscale('log')
  ax.set_xlabel('sequence length T (tokens)')
  ax.grid(True, which='both', alpha=0.3)


def figure(result: dict, path: str) -> None:
  """Writes the scaling figure of ``result`` (:func:`ropex.tools.scaling.run`) to ``path``."""
  plan, length = result['plan'], result['length']
  fig, axes = plt.subplots(2, 2, figsize=(11, 8), constrained_layout=True)
  ax = axes[0, 0]
  _curves(ax, length, 'train', 'seconds_per_sequence')
  ax.set_ylabel('train step time per sequence (s)')
  ax.set_title(f'train, {plan["length_arch"]}, {plan["tokens_per_batch"]} tokens/batch')
  ax = axes[0, 1]
  _curves(ax, length, 'train', 'xla_temp_bytes', _GIB)
  ax.set_ylabel('XLA temporary buffers (GiB)')
  ax.set_title('train step memory')
  ax = axes[1, 0]
  _curves(ax, length, 'eval', 'tokens_per_s')
  ax.set_yscale('linear')
  ax.set_ylim(bottom=0)
  ax.set_ylabel('forward-only tokens/s')
  ax.set_title(f'evaluation, 1x to {max(plan["eval_factors"])}x the training length '
               f'{plan["train_len"]}')
  ax = axes[1, 1]
  size = result['size']
  names = [f'{p["arch"]}\n{p["params"] / 1e6:.1f}M' for p in size]
  bars = ax.bar(names, [p['mfu'] * 100 for p in size], color='tab:blue')
  for bar, p in zip(bars, size):
    ax.annotate(f'{p["tokens_per_s"]:.0f} tok/s', (bar.get_x() + bar.get_width() / 2,
                                                   bar.get_height()),
                ha='center', va='bottom', fontsize=9)
  ax.set_ylabel('MFU (%)')
  ax.set_title(f'model size, train step, T={plan["size_len"]}')
  for ax in axes.flat[:3]:
    ax.legend(title='attention', loc='upper left', bbox_to_anchor=(1.01, 1.0), fontsize=9)
  fig.savefig(path, dpi=80)
  plt.close(fig)
