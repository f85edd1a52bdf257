"""Helpers for tests that run ``python -m ropex.train`` in subprocesses (tiny, few steps)."""

import atexit
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A small, fast run: no periodic eval, every step logged, checkpoints every 4 steps.
SMALL = ('--config.train.batch_size=8', '--config.train.seq_len=64',
         '--config.train.warmup_steps=2', '--config.train.schedule=constant',
         '--config.train.log_every_steps=1', '--config.checkpoint.every_steps=4',
         '--config.eval.steps=0')


# JAX's persistent compilation cache, shared by the subprocesses of one test session: runs of
# the same program (reference, killed, restarted) compile it once.
_COMPILE_CACHE = tempfile.mkdtemp(prefix='ropex-test-jax-cache-')
atexit.register(shutil.rmtree, _COMPILE_CACHE, ignore_errors=True)


def env(devices: int = 1) -> dict:
  e = dict(os.environ)
  e.update(JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3', PYTHONUNBUFFERED='1',
           XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
           JAX_COMPILATION_CACHE_DIR=_COMPILE_CACHE,
           JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')
  return e


def command(workdir, *flags, config='configs/tiny.py') -> list:
  return [sys.executable, '-m', 'ropex.train', f'--config={config}', f'--workdir={workdir}',
          *flags]


def run(workdir, *flags, devices=1, timeout=600, config='configs/tiny.py'):
  return subprocess.run(command(workdir, *flags, config=config), cwd=ROOT, env=env(devices),
                        capture_output=True, text=True, timeout=timeout)


def run_module(module, *args, devices=1, timeout=600):
  """``python -m module args`` (any ropex entry point) in the test environment."""
  return subprocess.run([sys.executable, '-m', module, *args], cwd=ROOT, env=env(devices),
                        capture_output=True, text=True, timeout=timeout)


def start_module(module, *args, devices=1) -> subprocess.Popen:
  return subprocess.Popen([sys.executable, '-m', module, *args], cwd=ROOT, env=env(devices),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def start(workdir, *flags, devices=1, **kw) -> subprocess.Popen:
  return subprocess.Popen(command(workdir, *flags), cwd=ROOT, env=env(devices),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def logged_steps(workdir) -> list:
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  steps = []
  with open(path) as f:
    for line in f:
      try:
        steps.append(json.loads(line)['step'])
      except ValueError:  # a line being written right now
        pass
  return steps


def wait_for_step(proc, workdir, step, timeout=300):
  """Blocks until ``workdir``'s metrics show ``step`` (or the process ends)."""
  deadline = time.time() + timeout
  while time.time() < deadline:
    if any(s >= step for s in logged_steps(workdir)):
      return True
    if proc.poll() is not None:
      return False
    time.sleep(0.02)
  return False


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]
