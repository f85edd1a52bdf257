r"""``python -m ropex.demo``: the mini ablation. Trains the offline default (``configs/tiny.py``)
with NoPE, RoPE and p-RoPE (p = 0.75), one after the other under identical settings, then prints
one comparison table (final train loss, eval loss / perplexity, per-task answer accuracy).

Each run lives in ``--workdir/<name>``; rerunning resumes (or just re-reports) finished runs —
delete the directory to start over. ``--steps`` overrides ``train.steps`` for every run.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging

from ropex.config import loading
from ropex.errors import ConfigError

_RUNS = flags.DEFINE_multi_string(
    'run', ['configs/tiny.py:pe=nope', 'configs/tiny.py:pe=rope',
            'configs/tiny.py:pe=prope,p=0.75'], 'Config file[:args] of each run.')
_WORKDIR = flags.DEFINE_string('workdir', '/tmp/ropex-demo', 'Parent directory of the runs.')
_STEPS = flags.DEFINE_integer('steps', 0, 'Override train.steps of every run (0: keep).')


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


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  from ropex.training import loop  # pylint: disable=g-import-not-at-top
  rows = []
  try:
    configs = [loading.load(spec, '--run') for spec in _RUNS.value]
    for config in configs:
      if _STEPS.value:
        config.train.steps = _STEPS.value
        config.train.warmup_steps = min(config.train.warmup_steps, _STEPS.value)
      print(f'\n=== {config.name} ===', flush=True)
      summary = loop.train(config, os.path.join(_WORKDIR.value, config.name))
      rows.append((config.name, summary))
  except ConfigError as e:
    print(f'ropex.demo: {e}', file=sys.stderr)
    sys.exit(2)
  print(f'\nropex mini ablation ({len(rows)} runs, outputs in {_WORKDIR.value}/<run>; '
        'accuracy = next-token accuracy on the answer tokens of each synthetic task)\n')
  print(comparison_table(rows), flush=True)


if __name__ == '__main__':
  loading.run(main, 'ropex.demo', config_flag=None)
