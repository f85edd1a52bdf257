"""Metrics sinks: ``WORKDIR/metrics.jsonl`` (one JSON object per logged step), TensorBoard
event files in ``WORKDIR/tb``, and a tqdm progress bar. Only the writing process (process 0)
creates any of them; on the others every method is a no-op. A URL workdir (``gs://``) is
written through ``etils.epath``, TensorBoard's event file included (:class:`_EpathEventFile`)."""

from __future__ import annotations

import io
import json
import math
import time
from typing import Mapping

from absl import logging
from etils import epath
import tqdm

from ropex import inputs, paths


class MetricsWriter:
  """Appends to ``metrics.jsonl``; a torn last line left by a crash is ended first, so every
  record starts on a fresh line. A URL workdir (``gs://``: objects cannot be appended to) is
  rewritten whole at each write — the file is small (one short line per logged step)."""

  def __init__(self, workdir: str, enabled: bool = True):
    self.enabled = enabled
    self._jsonl = self._tb = None
    if enabled:
      root = paths.path(workdir, '--workdir')
      root.mkdir(parents=True, exist_ok=True)
      self._path = root / 'metrics.jsonl'
      self._remote = paths.is_url(workdir)
      text = read_text(self._path) if self._path.exists() else ''
      torn = bool(text) and not text.endswith('\n')
      if self._remote:
        self._text = text + ('\n' if torn else '')
      else:
        self._jsonl = open(self._path, 'a')
        if torn:
          self._jsonl.write('\n')
      self._tb = _summary_writer(str(root / 'tb'))

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled or not scalars:
      return
    record = {'step': int(step)}
    record.update({k: _plain(v) for k, v in scalars.items()})
    line = json.dumps(record) + '\n'
    if self._remote:
      self._text += line
      self._path.write_text(self._text)
    else:
      self._jsonl.write(line)
      self._jsonl.flush()
    for key, value in record.items():
      if key != 'step' and value is not None:
        self._tb.add_scalar(key, value, int(step))
    self._tb.flush()

  def close(self) -> None:
    if self.enabled:
      if self._jsonl is not None:
        self._jsonl.close()
      self._tb.close()


def _summary_writer(logdir: str):
  """A tensorboardX writer; for a URL its event file goes through epath (tensorboardX's own
  ``gs://`` writer needs google-cloud-storage, and it writes other schemes locally)."""
  import tensorboardX  # pylint: disable=g-import-not-at-top  (slow import)
  from tensorboardX import record_writer  # pylint: disable=g-import-not-at-top
  for s in paths.SCHEMES:
    record_writer.register_writer_factory(s, _EpathEventFiles())
  return tensorboardX.SummaryWriter(logdir)


class _EpathEventFile:
  """An event file on object storage: kept in memory, the whole object rewritten at each flush
  (objects cannot be appended to; the file holds one small record per logged scalar)."""

  def __init__(self, path: str):
    self._path, self._buffer = epath.Path(path), io.BytesIO()

  def write(self, data: bytes) -> None:
    self._buffer.write(data)

  def flush(self) -> None:
    self._path.write_bytes(self._buffer.getvalue())

  def close(self) -> None:
    self.flush()


class _EpathEventFiles:
  """tensorboardX's writer factory interface (``open``, ``directory_check``) over epath."""

  def open(self, path: str) -> _EpathEventFile:
    return _EpathEventFile(path)

  def directory_check(self, path: str) -> None:
    epath.Path(path).mkdir(parents=True, exist_ok=True)


def _plain(value) -> float | None:
  value = float(value)
  return value if math.isfinite(value) else None


def read_text(path) -> str:
  """``metrics.jsonl`` as text; bytes that are not UTF-8 (the file is damaged: every record is
  ASCII JSON) are one ConfigError naming it."""
  with inputs.reading('metrics file', path, 'the metrics.jsonl ropex.train writes (UTF-8 JSON '
                      'lines); restore or remove it'):
    return epath.Path(path).read_text()


def read_metrics(workdir) -> list[dict]:
  """All records of ``WORKDIR/metrics.jsonl`` (a local path or any ``etils.epath`` URL, e.g.
  ``gs://``), one per step; for a step logged twice (a resumed run) the last record wins. A torn
  line (a crash mid-write) is skipped with a warning naming the file and line."""
  path = epath.Path(workdir) / 'metrics.jsonl'
  if not path.exists():
    return []
  by_step: dict[int, dict] = {}
  for number, line in enumerate(read_text(path).splitlines(), 1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
      step = int(record['step'])
    except (ValueError, KeyError, TypeError):
      logging.warning('%s line %d is not a metrics record (a torn write?); skipped', path, number)
      continue
    by_step.setdefault(step, {}).update(record)
  return [by_step[s] for s in sorted(by_step)]


class NonFiniteLossError(RuntimeError):
  """The loss or gradient norm became NaN or Inf; the run stopped without saving that step.
  ``record`` holds the step's metrics (logged as nulls, so reports mark the run diverged)."""

  def __init__(self, message: str, step: int | None = None, record: dict | None = None):
    super().__init__(message)
    self.step, self.record = step, record or {}


class Window:
  """Train metrics accumulated between two log steps."""

  def __init__(self, tokens_per_step: int):
    self.tokens_per_step = tokens_per_step
    self.loss_sum, self.loss_n, self.grad_norm = 0.0, 0, float('nan')
    self.timer, self.timed_tokens, self.last_tokens_per_s = None, 0, float('nan')
    self.max_position = -1

  def add(self, step_i: int, m: dict) -> None:
    loss, grad_norm = float(m['loss']), float(m['grad_norm'])
    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
      raise NonFiniteLossError(
          f'train/loss={loss} and train/grad_norm={grad_norm} at step {step_i}', step_i,
          {'train/loss': loss, 'train/grad_norm': grad_norm})
    self.loss_sum, self.loss_n, self.grad_norm = self.loss_sum + loss, self.loss_n + 1, grad_norm
    self.max_position = max(self.max_position, int(m.get('max_position', -1)))
    if self.timer is None:  # the first step includes compilation: not timed
      self.timer = time.perf_counter()
    else:
      self.timed_tokens += self.tokens_per_step

  def tokens_per_s(self) -> float:
    if self.timer is not None and self.timed_tokens:
      self.last_tokens_per_s = self.timed_tokens / (time.perf_counter() - self.timer)
    return self.last_tokens_per_s

  def restart_timer(self) -> None:
    self.timer, self.timed_tokens = time.perf_counter(), 0

  def pop(self, lr: float) -> dict:
    out = {'train/loss': self.loss_sum / max(self.loss_n, 1), 'train/learning_rate': lr,
           'train/grad_norm': self.grad_norm, 'train/tokens_per_s': self.tokens_per_s(),
           'train/max_position': self.max_position}
    self.loss_sum, self.loss_n, self.max_position = 0.0, 0, -1
    return out


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
