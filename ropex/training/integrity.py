"""Checksums of everything a checkpoint stores: ``checkpoints/<step>/ropex_checksums.json``.

Written by process 0 once orbax has finished the step (in a background thread, so training does
not wait for the hashing), verified before a step is restored (each process verifies its share
of the files) and by ``load_for_inference``. Orbax writes a step atomically, so a step without
its manifest is complete but *unverified* (the run stopped between the two writes); a step whose
files differ from its manifest (truncated, overwritten, missing, extra) is *unreadable*.

Any path ``etils.epath`` supports works (local, ``gs://``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import gc
import hashlib
import json
import logging
import sys
import time
from typing import Callable, Iterator, Sequence, TypeVar

from etils import epath

from ropex import inputs
from ropex.errors import ConfigError

MANIFEST = 'ropex_checksums.json'
_BLOCK = 1 << 22
_TRANSIENT_ERRNOS = {errno.EAGAIN, errno.EINTR, errno.ETIMEDOUT, errno.ECONNRESET, errno.EBUSY}
log = logging.getLogger('ropex')
T = TypeVar('T')


class Unverified(Exception):
  """The step has no checksum manifest."""


NO_CHECKSUMS = 'no checksums (its run stopped before they were written)'


@dataclasses.dataclass(frozen=True)
class Choice:
  """Which checkpoint step to load: ``step`` (None: no step is readable), whether its files
  matched its checksums, and why each step passed over was not used."""
  step: int | None
  verified: bool
  passed_over: dict[int, str]


def choose(steps: Sequence[int], verdict: Callable[[int], str | None],
           requested: int | None = None, where: str = '') -> Choice:
  """THE rule for which checkpoint to load, for training's resume and every inference load
  (evaluate, analyze, study, ``train.init_from``): the newest step whose files match their
  checksums; a step without checksums only when no step is verified, with a warning. With
  ``requested``, only that step is considered (unverified: loaded, with a warning).

  ``verdict(step)`` is None for a verified step, what is wrong in words for an unreadable
  one, and raises :class:`Unverified` for a step without checksums."""
  candidates = [int(requested)] if requested is not None else sorted(steps, reverse=True)
  passed_over, unverified = {}, None
  for step in candidates:
    try:
      problem = verdict(step)
    except Unverified:
      passed_over[step] = NO_CHECKSUMS
      unverified = step if unverified is None else unverified
      continue
    if problem is None:
      if passed_over:
        log.warning('checkpoint %s: using step %d, the newest whose files match their '
                    'checksums; passed over: %s', where, step,
                    '; '.join(f'step {s}: {p}' for s, p in passed_over.items()))
      return Choice(step, True, passed_over)
    passed_over[step] = problem
  if unverified is not None:
    passed_over.pop(unverified)
    log.warning('CHECKPOINT %d IN %s IS UNVERIFIED: it has no checksums (its run stopped right '
                'after writing it)%s; loading it without verification', unverified, where,
                '' if requested is not None else ' and no verified checkpoint exists')
  return Choice(unverified, False, passed_over)


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


@contextlib.contextmanager
def reading_checkpoint(step_dir, allowed: str) -> Iterator[None]:
  """Inside the block (orbax reading one step), a file that cannot be read or parsed — the
  damage of a step without checksums: truncated metadata, an overwritten array file — is one
  ConfigError naming the step and ``allowed``, and the last thing the step's reads print."""
  quiet = _OrphanedReads(str(step_dir))
  try:
    yield
  except Exception as e:  # pylint: disable=broad-except  (orbax wraps tensorstore's error in a
    # bare Exception: only an error caused by a typed storage / format error is mapped)
    cause = _typed_cause(e)
    if cause is None:
      quiet.remove()
      raise
    why = inputs.reason(cause) or f'{type(cause).__name__}: {" ".join(str(cause).split())[:200]}'
    gc.collect()   # abandoned reads already unreachable report now, through the filter
    raise ConfigError(f'checkpoint {step_dir} cannot be read ({why}); allowed: '
                      f'{allowed}') from None
  quiet.remove()


class _OrphanedReads(logging.Filter):
  """While installed, keeps orbax's *other* reads of a damaged step from reporting the damage
  again around the one-line error. Orbax gathers a step's array reads and stops at the first
  failure; the reads still in flight finish in tensorstore's threads or at garbage collection,
  and each reports the same damage once more (an un-retrieved future logged by asyncio, an
  exception in an abandoned coroutine, 'Event loop is closed' from a callback into orbax's
  finished loop). Only those reports are dropped — an error that names another path, or of
  another kind, reaches the hook it went to before — and after a failure the filter stays until
  the process exits, since the orphaned reads may finish at any time."""

  def __init__(self, step_dir: str):
    super().__init__()
    self.step_dir, self.previous = step_dir, sys.unraisablehook
    sys.unraisablehook = self._unraisable
    logging.getLogger('asyncio').addFilter(self)

  def remove(self) -> None:
    if sys.unraisablehook == self._unraisable:   # pylint: disable=comparison-with-callable
      sys.unraisablehook = self.previous
    logging.getLogger('asyncio').removeFilter(self)

  def _about_step(self, error: BaseException | None) -> bool:
    while error is not None:
      if self.step_dir in str(error) or (isinstance(error, RuntimeError)
                                         and str(error) == 'Event loop is closed'):
        return True
      error = error.__cause__ or error.__context__
    return False

  def _unraisable(self, unraisable) -> None:
    if not self._about_step(unraisable.exc_value):
      self.previous(unraisable)

  def filter(self, record: logging.LogRecord) -> bool:
    return not (record.exc_info and self._about_step(record.exc_info[1]))


def _typed_cause(error: BaseException) -> BaseException | None:
  """The first error in ``error``'s cause chain of a type :func:`inputs.typed_errors` lists
  (tensorstore reports a damaged file as ValueError, a missing one as OSError)."""
  typed = inputs.typed_errors()
  while error is not None:
    if isinstance(error, typed):
      return error
    error = error.__cause__ or error.__context__
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
