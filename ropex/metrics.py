"""Metrics sinks: ``WORKDIR/metrics.jsonl`` (one JSON object per logged step), TensorBoard
event files in ``WORKDIR/tb``, and a tqdm progress bar. Only the writing process (process 0)
creates any of them; on the others every method is a no-op."""

from __future__ import annotations

import json
import math
import os
from typing import Mapping

import tqdm


class MetricsWriter:

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self._jsonl = self._tb = None
    if enabled:
      os.makedirs(workdir, exist_ok=True)
      self._jsonl = open(os.path.join(workdir, 'metrics.jsonl'), 'a')
      import tensorboardX  # pylint: disable=g-import-not-at-top  (slow import)
      self._tb = tensorboardX.SummaryWriter(os.path.join(workdir, 'tb'))

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled or not scalars:
      return
    record = {'step': int(step)}
    record.update({k: _plain(v) for k, v in scalars.items()})
    self._jsonl.write(json.dumps(record) + '\n')
    self._jsonl.flush()
    for key, value in record.items():
      if key != 'step' and value is not None:
        self._tb.add_scalar(key, value, int(step))
    self._tb.flush()

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      self._tb.close()


def _plain(value) -> float | None:
  value = float(value)
  return value if math.isfinite(value) else None


def read_metrics(workdir: str) -> list[dict]:
  """All records of ``metrics.jsonl``; for a step logged twice (a resumed run) the last wins."""
  by_step: dict[int, dict] = {}
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  with open(path) as f:
    for line in f:
      if line.strip():
        record = json.loads(line)
        by_step.setdefault(record['step'], {}).update(record)
  return [by_step[s] for s in sorted(by_step)]


class Progress:
  """A tqdm bar over training steps showing loss and tokens/s (tqdm adds rate and ETA)."""

  def __init__(self, start: int, total: int, enabled: bool = True, desc: str = 'train'):
    self.bar = tqdm.tqdm(total=total, initial=start, desc=desc, unit='step',
                         disable=not enabled, dynamic_ncols=True, mininterval=0.5)

  def update(self, steps: int, **postfix) -> None:
    if postfix:
      self.bar.set_postfix({k: f'{v:.4g}' for k, v in postfix.items()}, refresh=False)
    self.bar.update(steps)

  def write(self, text: str) -> None:
    self.bar.write(text)

  def close(self) -> None:
    self.bar.close()
