"""Start-up on a host without a TPU: libtpu (installed for the fit check) must not probe for one,
so no ropex command prints TPU errors unless the user asked for a TPU."""

import os
import subprocess
import sys

import pytest
from jax._src import cloud_tpu_init, hardware_utils

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _env_without_platforms(**extra):
  env = {k: v for k, v in os.environ.items() if k != 'JAX_PLATFORMS'}
  env.update(extra)
  return env


@pytest.fixture(autouse=True)
def _tpu_less_host_with_libtpu():
  if hardware_utils.num_available_tpu_chips_and_device_id()[0] > 0:
    pytest.skip('this host has a TPU: the probe is wanted here')
  assert cloud_tpu_init.get_tpu_library_path() is not None, (
      'these tests need libtpu installed (the tpu extra), as `make test` installs it')


def test_a_command_prints_no_tpu_error_without_jax_platforms():
  proc = subprocess.run([sys.executable, '-m', 'ropex.describe', '--config', 'configs/tiny.py'],
                        cwd=ROOT, env=_env_without_platforms(), capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr
  assert 'parameters: total 541,312' in proc.stdout
  assert 'TPU' not in proc.stderr and 'tpu' not in proc.stderr, proc.stderr


def test_start_up_picks_the_cpu_only_when_nothing_was_asked_for():
  code = ('import jax; from ropex.model import platform; '
          'print(platform.skip_absent_tpu(), jax.default_backend())')
  run = lambda **env: subprocess.run([sys.executable, '-c', code], cwd=ROOT, timeout=300,
                                     env=_env_without_platforms(**env), capture_output=True,
                                     text=True)
  chosen = run()
  assert chosen.stdout.split() == ['cpu', 'cpu'] and 'TPU' not in chosen.stderr, chosen.stderr
  asked = run(JAX_PLATFORMS='cpu')
  assert asked.stdout.split() == ['None', 'cpu']     # the user's choice is left alone
  forced = run(JAX_FORCE_TPU_INIT='1', JAX_PLATFORMS='')
  assert forced.stdout.split()[0] == 'None'          # a user who asks for a TPU gets the probe
