"""Runs ``python -m ropex.<entry> ARGS`` for many test cases at a fraction of the cost of one
subprocess each: this process imports the heavy libraries once (jax, flax, orbax, ...: about
3 s of CPU per interpreter), then forks one child per case, which runs the entry module as
``__main__`` exactly as ``python -m`` does (``runpy``), with its own stdout / stderr files,
environment changes and working directory. Nothing has initialised a JAX backend or started
a thread here, so forking is safe; each child initialises its own.

Protocol: a JSON list of cases on stdin (``{"module", "args", "env", "cwd"}``), a JSON list of
results on stdout (``{"rc", "stdout", "stderr", "seconds"}``; rc is ``-N`` for a child killed
by signal N, as ``subprocess`` reports it). ``ROPEX_TEST_PARALLEL`` (default 4) children run
at once.
"""

import json
import os
import runpy
import sys
import tempfile
import time
import traceback

PRELOAD = ('numpy', 'jax', 'jax.numpy', 'flax.linen', 'optax', 'orbax.checkpoint',
           'ml_collections', 'absl.app', 'absl.flags', 'etils.epath', 'grain', 'tqdm',
           'ropex.training.loop', 'ropex.training.inference', 'ropex.evaluation.suite')


def _child(case: dict, out_path: str, err_path: str) -> None:
  code = 1
  try:
    os.environ.update(case.get('env') or {})
    os.chdir(case['cwd'])
    for fd, path in ((1, out_path), (2, err_path)):
      os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
    sys.argv = [case['module'], *case['args']]
    try:
      runpy.run_module(case['module'], run_name='__main__', alter_sys=True)
      code = 0
    except SystemExit as e:
      if e.code is None or isinstance(e.code, int):
        code = e.code or 0
      else:
        print(e.code, file=sys.stderr)
        code = 1
    except BaseException:  # pylint: disable=broad-except  (reported like the interpreter does)
      traceback.print_exc()
      code = 1
  finally:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # pylint: disable=protected-access


def _read(path: str) -> str:
  return open(path, encoding='utf-8', errors='replace').read() if os.path.exists(path) else ''


def main() -> None:
  cases = json.load(sys.stdin)
  for name in PRELOAD:
    __import__(name)
  parallel = int(os.environ.get('ROPEX_TEST_PARALLEL', '4'))
  results, running, pending = [None] * len(cases), {}, list(range(len(cases)))
  with tempfile.TemporaryDirectory() as tmp:
    files = lambda i: (os.path.join(tmp, f'{i}.out'), os.path.join(tmp, f'{i}.err'))
    while pending or running:
      while pending and len(running) < parallel:   # forked from the main (only) thread
        index = pending.pop(0)
        pid = os.fork()
        if pid == 0:
          _child(cases[index], *files(index))
        running[pid] = (index, time.time())
      pid, status = os.wait()
      index, start = running.pop(pid)
      out, err = files(index)
      results[index] = {'rc': os.waitstatus_to_exitcode(status), 'stdout': _read(out),
                        'stderr': _read(err), 'seconds': round(time.time() - start, 2)}
  json.dump(results, sys.stdout)


if __name__ == '__main__':
  main()
