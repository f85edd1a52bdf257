"""A small document model rendered to Markdown and to a self-contained-folder HTML page.

Figures are PNG files next to the report, linked by relative paths, so the folder can be
copied anywhere and read offline.
"""

from __future__ import annotations

import html
import os

from ropex import paths as paths_lib


class Doc:
  """Headings, paragraphs, tables, images and code blocks, in order."""

  def __init__(self, title: str):
    self.title = title
    self.blocks: list[tuple] = []

  def h2(self, text: str) -> 'Doc':
    self.blocks.append(('h2', text))
    return self

  def h3(self, text: str) -> 'Doc':
    self.blocks.append(('h3', text))
    return self

  def p(self, text: str) -> 'Doc':
    self.blocks.append(('p', text))
    return self

  def bullets(self, items) -> 'Doc':
    self.blocks.append(('ul', list(items)))
    return self

  def table(self, header, rows) -> 'Doc':
    self.blocks.append(('table', list(header), [list(r) for r in rows]))
    return self

  def image(self, path: str, alt: str) -> 'Doc':
    self.blocks.append(('img', path, alt))
    return self

  def code(self, text: str) -> 'Doc':
    self.blocks.append(('code', text))
    return self

  def extend(self, other: 'Doc') -> 'Doc':
    self.blocks.extend(other.blocks)
    return self

  def markdown(self) -> str:
    out = [f'# {self.title}', '']
    for block in self.blocks:
      kind = block[0]
      if kind in ('h2', 'h3'):
        out += [('## ' if kind == 'h2' else '### ') + block[1], '']
      elif kind == 'p':
        out += [block[1], '']
      elif kind == 'ul':
        out += [f'- {item}' for item in block[1]] + ['']
      elif kind == 'table':
        header, rows = block[1], block[2]
        out.append('| ' + ' | '.join(map(str, header)) + ' |')
        out.append('|' + '|'.join('---' for _ in header) + '|')
        out += ['| ' + ' | '.join(map(str, r)) + ' |' for r in rows]
        out.append('')
      elif kind == 'img':
        out += [f'![{block[2]}]({block[1]})', '']
      elif kind == 'code':
        out += ['```', block[1].rstrip('\n'), '```', '']
    return '\n'.join(out)

  def html(self) -> str:
    e = html.escape
    out = ['<!doctype html><html><head><meta charset="utf-8">',
           f'<title>{e(self.title)}</title><style>body{{font-family:sans-serif;max-width:'
           '1100px;margin:auto;padding:1em}table{border-collapse:collapse}td,th{border:1px '
           'solid #bbb;padding:2px 6px;font-size:90%}img{max-width:100%}</style></head><body>',
           f'<h1>{e(self.title)}</h1>']
    for block in self.blocks:
      kind = block[0]
      if kind in ('h2', 'h3'):
        out.append(f'<{kind}>{e(block[1])}</{kind}>')
      elif kind == 'p':
        out.append(f'<p>{e(block[1])}</p>')
      elif kind == 'ul':
        out.append('<ul>' + ''.join(f'<li>{e(str(i))}</li>' for i in block[1]) + '</ul>')
      elif kind == 'table':
        head = ''.join(f'<th>{e(str(h))}</th>' for h in block[1])
        body = ''.join('<tr>' + ''.join(f'<td>{e(str(c))}</td>' for c in r) + '</tr>'
                       for r in block[2])
        out.append(f'<table><tr>{head}</tr>{body}</table>')
      elif kind == 'img':
        out.append(f'<p><img src="{e(block[1])}" alt="{e(block[2])}"></p>')
      elif kind == 'code':
        out.append(f'<pre>{e(block[1])}</pre>')
    out.append('</body></html>')
    return '\n'.join(out)

  def write(self, out_dir: str, stem: str = 'report', html_too: bool = True) -> list[str]:
    """Writes ``stem.md`` (and ``stem.html``) into ``out_dir``; returns the paths."""
    paths_lib.path(out_dir, '--out').mkdir(parents=True, exist_ok=True)
    paths = [paths_lib.join(out_dir, f'{stem}.md')]
    paths_lib.path(paths[0]).write_text(self.markdown(), encoding='utf-8')
    if html_too:
      paths.append(paths_lib.join(out_dir, f'{stem}.html'))
      paths_lib.path(paths[1]).write_text(self.html(), encoding='utf-8')
    return paths


def fmt(x, digits: int = 3) -> str:
  return f'{x:.{digits}f}' if isinstance(x, float) else str(x)


def rel(path: str, start: str) -> str:
  """A POSIX relative link from the report folder."""
  return os.path.relpath(path, start).replace(os.sep, '/')
