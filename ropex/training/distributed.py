"""Multi-process start-up: ``jax.distributed.initialize`` when several processes are configured.

* Explicit: ``--coordinator_address=HOST:PORT --num_processes=N --process_id=I`` (or the
  environment variables ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``).
* Automatic: on a multi-host TPU slice (``TPU_WORKER_HOSTNAMES`` / ``TPU_PROCESS_ADDRESSES``
  listing several hosts, or ``MEGASCALE_COORDINATOR_ADDRESS``) and under SLURM with more than one
  task, plain ``jax.distributed.initialize()`` detects everything itself.

CPU processes exchange collectives over gloo. Call :func:`initialize` before anything else
touches a JAX backend.
"""

from __future__ import annotations

import os

import jax


def _several(value: str | None) -> bool:
  return bool(value) and len([h for h in value.split(',') if h.strip()]) > 1


def auto_detected() -> bool:
  """True in a multi-process environment that ``jax.distributed.initialize()`` understands."""
  env = os.environ
  if _several(env.get('TPU_WORKER_HOSTNAMES')) or _several(env.get('TPU_PROCESS_ADDRESSES')):
    return True
  if env.get('MEGASCALE_COORDINATOR_ADDRESS'):
    return True
  slurm_tasks = env.get('SLURM_NTASKS') or env.get('SLURM_NPROCS')
  return bool(env.get('SLURM_JOB_ID')) and slurm_tasks is not None and int(slurm_tasks) > 1


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, mode: str = 'auto') -> bool:
  """Connects this process to the others. ``mode``: auto | on | off. Returns whether
  ``jax.distributed.initialize`` was called."""
  env = os.environ
  coordinator_address = coordinator_address or env.get('JAX_COORDINATOR_ADDRESS') or None
  if num_processes is None and env.get('JAX_NUM_PROCESSES'):
    num_processes = int(env['JAX_NUM_PROCESSES'])
  if process_id is None and env.get('JAX_PROCESS_ID'):
    process_id = int(env['JAX_PROCESS_ID'])
  explicit = (num_processes or 1) > 1 or coordinator_address is not None
  if mode == 'off' or (mode == 'auto' and not explicit and not auto_detected()):
    return False
  # Only affects CPU devices; harmless on TPU/GPU hosts.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  if explicit:
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)
  else:
    jax.distributed.initialize()
  return True


def define_flags() -> None:
  """The multi-process flags of every entry point that runs on a mesh (``ropex.train``,
  ``ropex.evaluate``, ``ropex.analyze``); read by :func:`initialize_from_flags`."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string('coordinator_address', None, 'HOST:PORT of process 0 (multi-process runs).')
  flags.DEFINE_integer('num_processes', None, 'Number of processes.', lower_bound=1)
  flags.DEFINE_integer('process_id', None, 'This process, in [0, num_processes).', lower_bound=0)
  flags.DEFINE_enum('distributed', 'auto', ['auto', 'on', 'off'],
                    'Call jax.distributed.initialize: auto = when several processes are '
                    'configured or detected (TPU pod, SLURM).')


def initialize_from_flags() -> bool:
  """:func:`initialize` with the values of the flags of :func:`define_flags`."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  f = flags.FLAGS
  return initialize(f.coordinator_address, f.num_processes, f.process_id, f.distributed)


def is_primary() -> bool:
  """Whether this is process 0, the one that writes shared files."""
  return jax.process_index() == 0
