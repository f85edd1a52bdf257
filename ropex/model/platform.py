"""The platform the model is traced for, which picks backend-specific code paths.

It is ``jax.default_backend()`` unless a caller compiles for another platform: the TPU fit
check traces on a CPU host for TPU devices, so it wraps tracing in ``with target('tpu'):``.
Both the attention implementation (``model.attention_impl='auto'``) and the CPU-tuned ops
(:mod:`ropex.model.ops`) read :func:`current`.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from typing import Iterator

import jax

PLATFORMS = ('cpu', 'gpu', 'tpu')
_TARGET: contextvars.ContextVar[str | None] = contextvars.ContextVar('ropex_target_platform',
                                                                    default=None)


def skip_absent_tpu() -> str | None:
  """Keeps libtpu from probing for a TPU on a host that has none; entry points call it first.

  libtpu is installed for the TPU fit check (the ``tpu`` extra), and with it JAX tries its TPU
  backend whenever ``jax_platforms`` is unset: on a host without TPU chips libtpu prints several
  lines of errors (``unexpected worker hostname``, ``Unable to initialize backend 'tpu'``)
  before JAX falls back. When ``JAX_PLATFORMS`` / ``jax_platforms`` and ``JAX_FORCE_TPU_INIT``
  are unset, libtpu is installed, and JAX's own PCI scan finds neither a TPU chip nor a GPU,
  this sets ``jax_platforms='cpu'``, the platform JAX ends up on anyway. The fit check's
  compile-only TPU devices come from libtpu directly and are not affected. Returns the value
  set, or None when it leaves the choice to JAX.
  """
  from jax._src import cloud_tpu_init, hardware_utils  # pylint: disable=g-import-not-at-top
  if (os.environ.get('JAX_PLATFORMS') or jax.config.jax_platforms or
      os.environ.get('JAX_FORCE_TPU_INIT') is not None or
      cloud_tpu_init.get_tpu_library_path() is None or
      hardware_utils.num_available_tpu_chips_and_device_id()[0] > 0 or
      hardware_utils.has_visible_nvidia_gpu() or hardware_utils.num_available_amd_gpus(1) > 0):
    return None
  jax.config.update('jax_platforms', 'cpu')
  return 'cpu'


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
