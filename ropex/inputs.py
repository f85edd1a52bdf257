"""Checking an entry point's inputs where they are read or written: one :class:`ConfigError`
naming the input (a flag, config field or file) and what is allowed, never a traceback.

Every entry point (and any new one) uses three helpers:

* :func:`output` checks an output folder (``--workdir``, ``--out``, ``--output``'s folder)
  *before* any expensive work or any write: not a file, not under a file, writable (a real
  write probe in the nearest existing folder: permission bits do not stop root, a read-only
  mount does), and, for a URL, reachable (one metadata request: missing credentials or no
  network fail here, not after a checkpoint was restored);
* ``with reading(what, path, allowed):`` turns the typed failures of reading an input —
  storage (:class:`OSError`, TensorFlow / gcsfs / google-auth errors), formats (UTF-8, JSON,
  safetensors headers) — into one ConfigError naming ``what=path`` and ``allowed``;
* :func:`reason` is the cause of such a failure in a few words, or None for any other error
  (a bug keeps its traceback).

:func:`ropex.config.loading.run` prints a ConfigError as one line with exit status 2, and maps
an :class:`OSError` that escaped every boundary (it names its file) the same way.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from typing import Iterator

from ropex import paths
from ropex.errors import ConfigError

# Error classes of the storage and format libraries, looked up only where the library is
# already imported (none is imported here): TensorFlow's tf.io.gfile (epath's gs:// backend),
# gcsfs and google-auth (epath's fsspec backend), safetensors.
_LIBRARY_ERRORS = (('tensorflow.python.framework.errors_impl', 'OpError'),
                   ('gcsfs.retry', 'HttpError'), ('google.auth.exceptions', 'GoogleAuthError'),
                   ('safetensors', 'SafetensorError'))


def _library_errors() -> tuple[type, ...]:
  return tuple(getattr(sys.modules[m], name) for m, name in _LIBRARY_ERRORS
               if m in sys.modules and hasattr(sys.modules[m], name))


def typed_errors() -> tuple[type, ...]:
  """The error types :func:`reason` may know: OSError, ValueError (UnicodeDecodeError and
  JSONDecodeError are ValueErrors) and the storage / format libraries' own."""
  return (OSError, ValueError) + _library_errors()


def _short(text: str, limit: int = 160) -> str:
  text = ' '.join(str(text).split())
  return text if len(text) <= limit else text[:limit - 3] + '...'


def reason(error: BaseException) -> str | None:
  """The cause of a storage or format failure in a few words; None when ``error`` is not one."""
  if isinstance(error, UnicodeDecodeError):
    return (f'it is not UTF-8 text (byte 0x{error.object[error.start]:02x} at offset '
            f'{error.start})')
  if isinstance(error, json.JSONDecodeError):
    return f'it is not valid JSON ({error.msg}: line {error.lineno} column {error.colno})'
  library = _library_errors()
  if isinstance(error, library) and type(error).__name__ == 'SafetensorError':
    return f'it is not a readable safetensors file ({_short(error)})'
  if isinstance(error, OSError):
    if error.errno:
      return os.strerror(error.errno).lower() + (
          f' ({error.filename})' if error.filename else '')
    return _short(error) or type(error).__name__   # aiohttp: "Cannot connect to host ..."
  if isinstance(error, library):
    return f'{type(error).__name__}: {_short(str(error).splitlines()[0] if str(error) else "")}'
  return None


@contextlib.contextmanager
def reading(what: str, path, allowed: str, verb: str = 'read',
            formats: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
  """Inside the block, a storage or format failure (see :func:`reason`) becomes
  ``ConfigError('<what>=<path> cannot be <verb>: <reason>; allowed: <allowed>')``.

  ``formats``: the error types the block's parsing library raises for a file that is not its
  format (the caller knows them: e.g. ``(ValueError, IndexError)`` for ``gguf.GGUFReader``);
  they are mapped too. Keep the block to the reading call, so that no bug's error is among
  them."""
  try:
    yield
  except typed_errors() + formats as e:   # re-raised unless known (a ValueError of a bug)
    why = reason(e)
    if why is None and isinstance(e, formats):
      why = f'it is not in the expected format ({type(e).__name__}: {_short(e)})'
    if why is None:
      raise
    raise ConfigError(f'{what}={os.fspath(path)!r} cannot be {verb}: {why}; allowed: '
                      f'{allowed}') from None


def _nearest_existing(path: str) -> str:
  while not os.path.lexists(path):
    parent = os.path.dirname(path)
    if parent == path:
      break
    path = parent
  return path


def output(path, what: str) -> None:
  """Refuses (ConfigError, nothing written) an output folder that is a file, lies under a
  file, cannot be written, or (a URL) cannot be reached."""
  text = os.fspath(path)
  if paths.is_url(text):
    with reading(what, text, 'a bucket path this machine can reach with its credentials',
                 verb='reached'):
      target = paths.path(text, what)
      if target.exists() and not target.is_dir():
        raise ConfigError(f'{what}={text!r} is a file; allowed: a folder (created if missing)')
    return
  local = os.path.abspath(os.path.expanduser(text))
  if os.path.exists(local) and not os.path.isdir(local):
    raise ConfigError(f'{what}={text!r} is a file, not a directory; allowed: a directory '
                      '(created if missing)')
  existing = _nearest_existing(local)
  if not os.path.isdir(existing):
    raise ConfigError(f'{what}={text!r} lies under {existing!r}, which is a file; allowed: a '
                      'path in a directory')
  try:  # a real probe: os.access says yes to root, and to some unwritable mounts (/proc)
    probe = tempfile.mkdtemp(prefix='.ropex-write-probe-', dir=existing)
    os.rmdir(probe)
  except OSError as e:
    why = os.strerror(e.errno).lower() if e.errno else str(e)
    raise ConfigError(f'{what}={text!r} cannot be written ({why} at {existing}); allowed: '
                      'a folder on a writable file system') from None
