"""Test-wide set-up: CPU only, 8 virtual CPU devices (for mesh tests), no network; the shared
test helpers (``cli_runs``, ``reference``) importable from every test folder."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
_flags = os.environ.get('XLA_FLAGS', '')
if 'xla_force_host_platform_device_count' not in _flags:
  os.environ['XLA_FLAGS'] = (_flags + ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('TFDS_DATA_DIR', '/nonexistent-ropex-tfds')  # never reach a real store
