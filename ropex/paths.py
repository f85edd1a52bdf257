"""Every ropex path, local or a URL such as ``gs://bucket/run``, through ``etils.epath``.

``etils.epath`` (which orbax and TFDS use too) reads and writes ``gs://`` through TensorFlow's
``tf.io.gfile`` when TensorFlow is installed, or through fsspec (``gcsfs``) when
``EPATH_USE_TF=false``. A URL is never turned into a local folder: a scheme epath cannot serve
(``foo://x``) or a missing backend stops with a :class:`ConfigError` naming the flag or field.
"""

from __future__ import annotations

import glob as glob_lib
import importlib.util
import logging
import os
import re

from etils import epath

from ropex.errors import ConfigError

SCHEMES = ('gs', 's3', 'az', 'hf')  # the URL schemes etils.epath serves
_URL = re.compile(r'^([A-Za-z][A-Za-z0-9+.-]*)://')
_GLOB_CHARS = re.compile(r'[*?[]')


def scheme(p) -> str | None:
  """``'gs'`` for ``gs://b/x``; None for a local path."""
  m = _URL.match(os.fspath(p))
  return m.group(1).lower() if m else None


def is_url(p) -> bool:
  return scheme(p) is not None


def path(p, what: str = 'path') -> epath.Path:
  """``p`` as an ``epath.Path``; a URL whose scheme or backend cannot be used raises
  :class:`ConfigError` naming ``what`` (a flag or config field), so it never becomes local."""
  s = scheme(p)
  if s is not None:
    if s not in SCHEMES:
      raise ConfigError(f'{what}={os.fspath(p)!r}: {s}:// is not supported; allowed: a local '
                        f'path or a {", ".join(x + "://" for x in SCHEMES)} URL')
    _check_backend(s, what, p)
  return epath.Path(p)


def resolve(p, what: str = 'path') -> str:
  """An absolute local path (``~`` expanded), or a URL unchanged (never ``$PWD/gs:/...``)."""
  if is_url(p):
    return str(path(p, what))
  return str(epath.Path(p).expanduser().absolute())


def join(p, *parts) -> str:
  """``p/part/...`` as a string, for a local path or a URL alike."""
  return str(epath.Path(p).joinpath(*parts))


def glob(pattern: str, what: str = 'glob') -> list[str]:
  """Sorted files matching ``pattern``, locally (``**`` recursive) or under a URL (``*``, ``?``
  and ``[]`` per folder level; ``**`` is a ConfigError there)."""
  if not is_url(pattern):
    return sorted(f for f in glob_lib.glob(pattern, recursive=True) if os.path.isfile(f))
  if '**' in pattern:  # epath refuses it: one listing request per folder of a bucket
    raise ConfigError(f'{what}={pattern!r}: ** is not supported on {scheme(pattern)}://; '
                      'allowed: * and ? within one folder level (e.g. gs://b/corpus/*/*.txt)')
  m = _GLOB_CHARS.search(pattern)
  if m is None:
    p = path(pattern, what)
    return [str(p)] if p.is_file() else []
  root = pattern[:m.start()].rsplit('/', 1)[0]
  rest = pattern[len(root) + 1:]
  base = path(root, what)
  if not base.exists():
    return []
  return sorted(str(f) for f in base.glob(rest) if f.is_file())


def _tf_serves_gs() -> bool:
  """Whether epath uses TensorFlow for ``gs://`` (its rule: installed, EPATH_USE_TF not off)."""
  off = os.environ.get('EPATH_USE_TF', '').lower() in ('false', 'no', 'f', '0')
  return not off and importlib.util.find_spec('tensorflow') is not None


class _DropRaisedErrorTracebacks(logging.Filter):
  """gcsfs logs a request that ran out of retries with its traceback, then raises the same
  error to the caller, where it becomes one line naming the flag (:mod:`ropex.inputs`): the
  logged traceback goes."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not (record.levelno >= logging.ERROR and record.exc_info)


def _check_backend(s: str, what: str, p) -> None:
  if s == 'gs' and _tf_serves_gs():
    return
  gcsfs_log = logging.getLogger('gcsfs')
  if not any(isinstance(f, _DropRaisedErrorTracebacks) for f in gcsfs_log.filters):
    gcsfs_log.addFilter(_DropRaisedErrorTracebacks())
  import fsspec  # pylint: disable=g-import-not-at-top
  try:
    fsspec.get_filesystem_class(s)
  except (ImportError, ValueError) as e:
    raise ConfigError(f'{what}={os.fspath(p)!r}: no backend for {s}:// ({e}); install it '
                      f'(gs://: gcsfs, or TensorFlow with EPATH_USE_TF unset)') from None
