"""The platform the model is traced for, which picks backend-specific code paths.

It is ``jax.default_backend()`` unless a caller compiles for another platform: the TPU fit
check traces on a CPU host for TPU devices, so it wraps tracing in ``with target('tpu'):``.
Both the attention implementation (``model.attention_impl='auto'``) and the CPU-tuned ops
(:mod:`ropex.model.ops`) read :func:`current`.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

import jax

PLATFORMS = ('cpu', 'gpu', 'tpu')
_TARGET: contextvars.ContextVar[str | None] = contextvars.ContextVar('ropex_target_platform',
                                                                    default=None)


def current() -> str:
  """``'cpu'``, ``'gpu'`` or ``'tpu'``: the platform code is being traced for."""
  name = _TARGET.get() or jax.default_backend()
  return 'gpu' if name in ('cuda', 'rocm') else name


@contextlib.contextmanager
def target(name: str) -> Iterator[None]:
  """Trace for ``name`` (one of :data:`PLATFORMS`) inside the block, whatever this host is."""
  if name not in PLATFORMS:
    raise ValueError(f'platform {name!r} is not one of {PLATFORMS}')
  token = _TARGET.set(name)
  try:
    yield
  finally:
    _TARGET.reset(token)


def gpu_compute_capability() -> tuple[int, int] | None:
  """``(major, minor)`` of this host's first GPU (``(9, 0)`` on an H100), or None when the
  process has no GPU (also when it only traces for one: see :func:`target`)."""
  if jax.default_backend() not in ('cuda', 'gpu'):
    return None
  text = getattr(jax.devices()[0], 'compute_capability', None)
  if not text:
    return None
  major, _, minor = str(text).partition('.')
  return int(major), int(minor or 0)


def cpu_tunings(remat: str) -> bool:
  """Whether the hand-written backward passes of :mod:`ropex.model.ops` apply: on CPU only
  (where ``python -m ropex.bench`` measured them to help), and only with remat ``none`` or
  ``full`` — a checkpoint policy that saves dots cannot see the dots inside a custom VJP."""
  return current() == 'cpu' and remat in ('none', 'full')
