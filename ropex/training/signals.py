"""Stop requests: SIGTERM / SIGINT make the loop save a checkpoint and exit at the next step."""

from __future__ import annotations

import signal

import jax
from jax.experimental import multihost_utils
import numpy as np


class StopRequest:
  """SIGTERM / SIGINT set a flag; the loop saves a checkpoint and exits at the next step.
  A second signal gets the default behaviour."""

  def __init__(self):
    self.signum, self._previous = None, {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # not the main thread: no handlers
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    self.signum = signum
    signal.signal(signum, signal.SIG_DFL)

  def requested(self) -> bool:
    flag = self.signum is not None
    if jax.process_count() > 1:  # every process must stop at the same step
      flag = bool(np.max(multihost_utils.process_allgather(np.int32(flag))))
    return flag

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
