"""The repository's scripts/ modules (fixture generators) as importable modules, for tests that
use one of their formulas as the reference (one copy serves the fixtures and the tests)."""

import functools
import importlib.util
import os

SCRIPTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'scripts')


@functools.cache
def load(name: str):
  """``scripts/<name>.py``, executed once per process."""
  spec = importlib.util.spec_from_file_location(name, os.path.join(SCRIPTS, f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module
