"""The top level of the package shows the design (docs/design.md): ``ropex/`` holds only the
``python -m ropex.<verb>`` entry points and the cross-cutting modules, and no module imports an
entry point."""

import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# inputs: the checks every entry point runs on its flags' files and outputs (ropex.inputs).
CROSS_CUTTING = {'__init__', 'errors', 'fields', 'paths', 'inputs'}


def _top_level():
  pkg = os.path.join(ROOT, 'ropex')
  out = {}
  for name in os.listdir(pkg):
    if name.endswith('.py'):
      with open(os.path.join(pkg, name)) as f:
        out[name[:-3]] = f.read()
  return out


def test_top_level_holds_entry_points_and_cross_cutting_modules_only():
  modules = _top_level()
  entry_points = {m for m, src in modules.items() if "__name__ == '__main__'" in src}
  assert {'train', 'evaluate', 'analyze', 'describe'} <= entry_points
  assert set(modules) - entry_points == CROSS_CUTTING


def test_no_module_imports_an_entry_point():
  verbs = {m for m, src in _top_level().items() if "__name__ == '__main__'" in src}
  pattern = re.compile(r'^\s*(?:from ropex import ([\w, ]+)|(?:from|import) ropex\.(\w+))', re.M)
  bad = []
  for folder, _, files in os.walk(os.path.join(ROOT, 'ropex')):
    for name in files:
      if name.endswith('.py'):
        with open(os.path.join(folder, name)) as f:
          for names, module in pattern.findall(f.read()):
            imported = {n.strip().split(' as ')[0] for n in names.split(',')} | {module}
            bad += [f'{name} imports ropex.{v}' for v in sorted(imported & verbs)]
  assert not bad, bad
