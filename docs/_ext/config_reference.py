"""The ``config-reference`` directive: a table of every field of the default experiment config.

The table is built at documentation build time by walking
:func:`ropex.config.defaults.base_config` (the block every ``configs/*.py`` file starts from), so
it lists exactly the fields, types and defaults the code has today. The note column is the
comment written beside the field in the source (``ropex/config/defaults.py``,
``ropex/model/config.py``), where there is one.
"""

from __future__ import annotations

import io
import pathlib
import re
import tokenize

from docutils import nodes
from docutils.parsers.rst import Directive

# Source files whose end-of-line comments explain fields, and the block their fields are in
# (None: the block is the ``c.<block> = ml_collections.ConfigDict(`` the line is inside).
_SOURCES = (('ropex/config/defaults.py', None), ('ropex/model/config.py', 'model'))


def source_comments(root: pathlib.Path) -> dict[str, str]:
  """``{dotted field: comment}``: the comment that ends a source line holding exactly one
  ``name=`` (``source='synthetic',  # synthetic | tfds | text``). A comment on a line with
  several fields is about the line, not one field, and is left out."""
  out = {}
  for rel, fixed_block in _SOURCES:
    text = (root / rel).read_text()
    lines = text.splitlines()
    blocks = {}
    block = fixed_block
    for number, line in enumerate(lines, 1):
      m = re.match(r'\s*c\.(\w+) = ml_collections\.ConfigDict\(', line)
      if fixed_block is None and m:
        block = m.group(1)
      blocks[number] = block
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
      if tok.type != tokenize.COMMENT or blocks.get(tok.start[0]) is None:
        continue
      names = re.findall(r'\b(\w+)=', lines[tok.start[0] - 1][:tok.start[1]])
      if len(names) == 1:
        out[f'{blocks[tok.start[0]]}.{names[0]}'] = tok.string.lstrip('#').strip()
  return out


def _type_name(node, key) -> str:
  value = node[key]
  if value is not None:
    return type(value).__name__
  try:
    typ = node.get_ref(key).get_type()
  except ValueError:
    typ = None
  return typ.__name__ if typ is not None else 'any'


def config_rows(config, prefix: str = '') -> list[tuple[str, str, str]]:
  """``[(dotted field, type, default)]`` of a ConfigDict, nested blocks flattened in order."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  rows = []
  for key in config.keys():
    value = config[key]
    path = f'{prefix}{key}'
    if isinstance(value, ml_collections.ConfigDict) and key != 'layer_types':
      rows.extend(config_rows(value, path + '.'))
    else:
      shown = repr(value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value)
      rows.append((path, _type_name(config, key), shown))
  return rows


def _cell(text: str, literal: bool) -> nodes.entry:
  para = nodes.paragraph()
  para += nodes.literal(text=text) if literal else nodes.Text(text)
  return nodes.entry('', para)


class ConfigReference(Directive):
  """Renders the field table of ``base_config()``."""
  has_content = False

  def run(self):
    from ropex.config import defaults  # pylint: disable=g-import-not-at-top
    root = pathlib.Path(__file__).resolve().parents[2]
    comments = source_comments(root)
    head = ('field', 'type', 'default', 'note (from the source)')
    table = nodes.table(classes=['config-reference'])
    group = nodes.tgroup(cols=len(head))
    table += group
    for width in (30, 8, 30, 32):
      group += nodes.colspec(colwidth=width)
    thead = nodes.thead()
    group += thead
    row = nodes.row()
    for text in head:
      row += _cell(text, literal=False)
    thead += row
    body = nodes.tbody()
    group += body
    for path, typ, default in config_rows(defaults.base_config()):
      row = nodes.row()
      row += _cell(path, literal=True)
      row += _cell(typ, literal=False)
      row += _cell(default, literal=True)
      row += _cell(comments.get(path, ''), literal=False)
      body += row
    return [table]


def setup(app):
  app.add_directive('config-reference', ConfigReference)
  return {'parallel_read_safe': True, 'parallel_write_safe': True}
