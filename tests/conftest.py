"""Test-wide set-up: CPU only, 8 virtual CPU devices (for mesh tests), no network."""
import os

os.environ.setdefault('JAX_PLATFORMS', 'cpu')
_flags = os.environ.get('XLA_FLAGS', '')
if 'xla_force_host_platform_device_count' not in _flags:
  os.environ['XLA_FLAGS'] = (_flags + ' --xla_force_host_platform_device_count=8').strip()
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('TFDS_DATA_DIR', '/nonexistent-ropex-tfds')  # never reach a real store
