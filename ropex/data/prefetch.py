"""A background thread that prepares the next ``depth`` batches while the trainer computes.

The wrapped iterator is only touched by the producer thread while it runs; every batch travels
with the iterator state *after* it, so :meth:`get_state` is the state after the last batch the
caller received (batches sitting in the queue are not counted) and resume stays exact.
"""

from __future__ import annotations

import queue
import threading
from typing import Any


class Prefetch:

  def __init__(self, inner, depth: int):
    self._inner = inner
    self._depth = max(1, int(depth))
    self._state = inner.get_state()
    self._queue: queue.Queue | None = None
    self._stop: threading.Event | None = None
    self._thread: threading.Thread | None = None

  def __iter__(self):
    return self

  @staticmethod
  def _put(q: queue.Queue, stop: threading.Event, item) -> None:
    while not stop.is_set():
      try:
        q.put(item, timeout=0.1)
        return
      except queue.Full:
        continue

  def _produce(self, q: queue.Queue, stop: threading.Event) -> None:
    try:
      while not stop.is_set():
        self._put(q, stop, (next(self._inner), self._inner.get_state()))
    except BaseException as e:  # pylint: disable=broad-except
      self._put(q, stop, e)

  def _start(self) -> None:
    self._queue, self._stop = queue.Queue(maxsize=self._depth), threading.Event()
    self._thread = threading.Thread(target=self._produce, args=(self._queue, self._stop),
                                    daemon=True, name='ropex-data-prefetch')
    self._thread.start()

  def close(self) -> None:
    """Stops the producer; queued batches are dropped (the state does not include them)."""
    if self._thread is not None:
      self._stop.set()
      self._thread.join()
      self._thread = self._queue = self._stop = None
      self._inner.set_state(self._state)

  def __next__(self):
    if self._thread is None:
      self._start()
    item = self._queue.get()
    if isinstance(item, BaseException):
      self._thread.join()
      self._thread = None
      raise item
    batch, self._state = item
    return batch

  def get_state(self) -> dict[str, Any]:
    return dict(self._state)

  def set_state(self, state: dict[str, Any]) -> None:
    self.close()
    self._inner.set_state(state)
    self._state = self._inner.get_state()

  def __del__(self):
    if self._thread is not None and self._stop is not None:
      self._stop.set()
