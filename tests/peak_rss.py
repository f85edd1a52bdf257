"""This process's own peak resident memory, for tests that measure an import in a subprocess:
``VmHWM`` of /proc/self/status, reset to the current resident memory by ``clear_refs`` 5 (Linux).

Not ``ru_maxrss``: a child process inherits the peak of the process that started it (the pytest
process, which may have built a fixture of hundreds of MB), so growths of ``ru_maxrss`` measured
in a child come out too small, down to zero."""


def peak_rss() -> int:
  """Bytes: the peak resident memory since the last :func:`reset_peak_rss`."""
  with open('/proc/self/status') as f:
    return int(next(l for l in f if l.startswith('VmHWM:')).split()[1]) * 1024


def reset_peak_rss() -> int:
  """Resets the peak to the current resident memory; returns it (bytes)."""
  with open('/proc/self/clear_refs', 'w') as f:
    f.write('5')
  return peak_rss()
