"""The ``ropex-api`` directive (inside an ``eval-rst`` block): ``automodule`` for every module of
the ropex package, found by walking the package, so a new module is documented without editing a
page. The ``python -m ropex.<verb>`` entry points define absl flags at import (two of them
cannot be imported into one process), so for those the module docstring is read from the source
with :mod:`ast` and shown as plain text, without importing them."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil

from docutils.parsers.rst import Directive
from docutils.statemachine import StringList
from docutils import nodes


def module_names(package: str = 'ropex') -> list[str]:
  """Every module under ``package`` (sub-packages first as themselves, then their modules)."""
  root = importlib.import_module(package)
  return [package] + sorted(m.name for m in pkgutil.walk_packages(root.__path__, package + '.'))


def entry_point_docstring(name: str) -> str | None:
  """The docstring of ``name`` if it is a ``python -m`` entry point (has a ``__main__`` guard),
  read without importing it; None for a library module."""
  spec = importlib.util.find_spec(name)
  if spec is None or spec.origin is None or spec.submodule_search_locations is not None:
    return None
  with open(spec.origin) as f:
    source = f.read()
  if "__name__ == '__main__'" not in source:
    return None
  return ast.get_docstring(ast.parse(source)) or ''


class RopexApi(Directive):
  has_content = False

  def run(self):
    lines = []
    for name in module_names():
      doc = entry_point_docstring(name)
      if doc is None:
        lines += [f'.. rubric:: {name}', '', f'.. automodule:: {name}', '']
      else:
        lines += [f'.. rubric:: {name} (entry point: python -m {name})', '',
                  '.. code-block:: text', '']
        lines += ['   ' + line for line in doc.splitlines()] + ['']
    node = nodes.container()
    self.state.nested_parse(StringList(lines, source='ropex-api'), self.content_offset, node)
    return node.children


def setup(app):
  app.add_directive('ropex-api', RopexApi)
  return {'parallel_read_safe': True, 'parallel_write_safe': True}
