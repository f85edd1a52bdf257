"""Checksums of everything a checkpoint stores: ``checkpoints/<step>/ropex_checksums.json``.

Written by process 0 once orbax has finished the step (in a background thread, so training does
not wait for the hashing), verified before a step is restored (each process verifies its share
of the files) and by ``load_for_inference``. Orbax writes a step atomically, so a step without
its manifest is complete but *unverified* (the run stopped between the two writes); a step whose
files differ from its manifest (truncated, overwritten, missing, extra) is *unreadable*.

Any path ``etils.epath`` supports works (local, ``gs://``).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import time
from typing import Callable, TypeVar

from etils import epath

MANIFEST = 'ropex_checksums.json'
_BLOCK = 1 << 22
_TRANSIENT_ERRNOS = {errno.EAGAIN, errno.EINTR, errno.ETIMEDOUT, errno.ECONNRESET, errno.EBUSY}
log = logging.getLogger('ropex')
T = TypeVar('T')


class Unverified(Exception):
  """The step has no checksum manifest."""


def _files(step_dir: epath.Path) -> list[str]:
  """Every file under ``step_dir`` but the manifest, as sorted relative paths."""
  out, pending = [], [step_dir]
  while pending:
    for p in pending.pop().iterdir():
      if p.is_dir():
        pending.append(p)
      elif p.name not in (MANIFEST, MANIFEST + '.tmp'):
        out.append(str(p.relative_to(step_dir)))
  return sorted(out)


def _digest(path: epath.Path) -> str:
  h = hashlib.sha256()
  with path.open('rb') as f:
    while block := f.read(_BLOCK):
      h.update(block)
  return h.hexdigest()


def write(step_dir) -> None:
  """Hashes every file of a finished step and writes the manifest (atomically: tmp + rename)."""
  step_dir = epath.Path(step_dir)
  manifest = {'algorithm': 'sha256',
              'files': {name: _digest(step_dir / name) for name in _files(step_dir)}}
  tmp = step_dir / (MANIFEST + '.tmp')
  tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
  tmp.replace(step_dir / MANIFEST)


def verify(step_dir, share: int = 0, shares: int = 1) -> str | None:
  """None if the step matches its manifest (this caller checks files ``share::shares`` of it),
  else what is wrong, in words. Raises :class:`Unverified` if there is no manifest."""
  step_dir = epath.Path(step_dir)
  path = step_dir / MANIFEST
  if not path.exists():
    raise Unverified(str(step_dir))
  try:
    expected = json.loads(path.read_text())['files']
  except (ValueError, KeyError, TypeError):
    return f'its checksum manifest {path} is not readable'
  present = _files(step_dir)
  if sorted(expected) != present:
    missing, extra = sorted(set(expected) - set(present)), sorted(set(present) - set(expected))
    return f'files missing {missing[:3]} / unexpected {extra[:3]}'
  for name in present[share::shares]:
    if _digest(step_dir / name) != expected[name]:
      return f'{name} does not match its sha256 checksum'
  return None


def is_transient(error: BaseException) -> bool:
  """A storage error worth retrying (a timeout, a reset connection), not a corrupt file."""
  if isinstance(error, (TimeoutError, ConnectionError)):
    return True
  return isinstance(error, OSError) and error.errno in _TRANSIENT_ERRNOS


def retry(fn: Callable[[], T], what: str, attempts: int = 4, delay_s: float = 1.0) -> T:
  """``fn()``, retried with backoff while it fails with a transient storage error."""
  for attempt in range(attempts):
    try:
      return fn()
    except (OSError, TimeoutError, ConnectionError) as e:
      if not is_transient(e) or attempt == attempts - 1:
        raise
      log.warning('%s failed (%s: %s); retrying in %.0fs', what, type(e).__name__, e, delay_s)
      time.sleep(delay_s)
      delay_s *= 2
  raise AssertionError('unreachable')
