"""Stop requests: a SIGTERM / SIGINT makes the loop save a checkpoint and exit at one step.

* One process: SIGTERM / SIGINT set a flag (Python handlers); the loop stops at the next step.
  A second signal gets the default behaviour (a second Ctrl-C kills).
* Several processes: JAX's preemption sync manager, started by ``jax.distributed.initialize``
  (``jax_enable_preemption_service``, on by default), owns SIGTERM on every process. A SIGTERM
  on any one process is announced through the coordination service; each process reports its
  step counter and all agree on the fastest one's next step, where orbax's
  ``CheckpointManager.reached_preemption`` turns true on every process at once. Per step this
  is a local check (no collective); only a notice starts one key-value exchange and a barrier.
  SIGINT (Ctrl-C on one host) is forwarded as a SIGTERM to the process itself, so it stops
  every process the same way; a second Ctrl-C kills.

The counter given to the sync manager is the number of steps this process has run since it
started (1, 2, ...), not the global step: JAX starts every counter at 0 and stops at the
fastest counter + 1, so a notice that arrives before the first step stops the run after it.
Every process starts from the same checkpoint, so equal counters are equal steps.
"""

from __future__ import annotations

import os
import signal
from typing import Callable

import jax
from jax.experimental import multihost_utils

from ropex.errors import ConfigError

PEER_NOTICE = 'a preemption notice (SIGTERM to one of the processes)'


class StopRequest:
  """``requested(iteration)`` is True at the step where the loop saves and exits.
  ``reached_preemption``: orbax's ``CheckpointManager.reached_preemption`` (used with several
  processes)."""

  def __init__(self, reached_preemption: Callable[[int], bool]):
    self.signum, self._previous = None, {}
    self._several = jax.process_count() > 1
    self._reached = reached_preemption   # the loop checks the service at start-up

  def __enter__(self):
    # With several processes SIGTERM stays with JAX's notifier (a Python handler would
    # replace it); SIGINT is forwarded to it.
    handlers = {signal.SIGINT: self._forward} if self._several else {
        signal.SIGTERM: self._handle, signal.SIGINT: self._handle}
    for sig, handler in handlers.items():
      try:
        self._previous[sig] = signal.signal(sig, handler)
      except ValueError:  # not the main thread: no handlers
        pass
    return self

  def _handle(self, signum, frame):
    del frame
    self.signum = signum
    signal.signal(signum, signal.SIG_DFL)

  def _forward(self, signum, frame):
    self._handle(signum, frame)
    os.kill(os.getpid(), signal.SIGTERM)

  def requested(self, iteration: int) -> bool:
    """Whether to save and stop after this process's ``iteration``-th step (1, 2, ...)."""
    if self._several:  # every process turns true at the same iteration
      return self._reached(iteration)
    return self.signum is not None

  def stopped_by(self) -> str:
    return signal.Signals(self.signum).name if self.signum else PEER_NOTICE

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)


def require_preemption_service() -> None:
  """Several processes without JAX's preemption service would ignore a SIGTERM on one host
  (orbax then reports no preemption, silently): refuse to start instead."""
  try:
    multihost_utils.reached_preemption_sync_point(0)  # the counter's initial value
  except RuntimeError as e:
    raise ConfigError(
        f'{e} A multi-process run needs JAX\'s preemption service so that a SIGTERM on any '
        'process saves a checkpoint on all of them at the same step: leave '
        'jax_enable_preemption_service on (the default)') from None
