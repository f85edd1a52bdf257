"""The errors ropex raises for bad input, and the exit status of every entry point.

Every :class:`ConfigError` carries one sentence that names the field, flag or file and what is
allowed; entry points (through :func:`ropex.config.loading.run`) print it on one line and exit
with status 2, without a traceback.
"""

import signal

EXIT_OK = 0
EXIT_USAGE = 2        # bad input: a flag, config field, file or output path (nothing written)
EXIT_NONFINITE = 3    # ropex.train: a NaN / Inf loss (the last good checkpoint stays)
EXIT_SAVE = 4         # ropex.train: a checkpoint could not be written (the last complete one stays)
EXIT_DOES_NOT_FIT = 1  # ropex.compile: the config does not fit the topology's memory
# 128 + N: stopped by signal N outside the training loop (exit_status_for_signal)


def exit_status_for_signal(signum: int) -> int:
  """128 + the signal's number (143 for SIGTERM, 130 for SIGINT), as a shell reports it."""
  return 128 + int(signum)


class ConfigError(ValueError):
  """A config value (or a flag, or an input file) is invalid. The message names the field and
  what is allowed."""


class Interrupted(BaseException):
  """A SIGTERM / SIGINT arrived outside the training loop (during set-up, evaluation, ...).

  A ``BaseException`` like ``KeyboardInterrupt``, so that no ``except Exception`` on the way
  swallows it; :func:`ropex.config.loading.run` prints one line and exits 128 + signum."""

  def __init__(self, signum: int):
    super().__init__(signum)
    self.signum = int(signum)

  @property
  def name(self) -> str:
    return signal.Signals(self.signum).name
