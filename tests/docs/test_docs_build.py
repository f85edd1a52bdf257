"""The documentation builds with warnings as errors (a broken link, reference, include or
docstring fails the suite), its generated parts come from the code, and the pages other work
documents into exist and are in the table of contents."""

import html
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PAGES = ('models', 'formats', 'evaluation', 'statistics', 'context_extension', 'troubleshooting',
         'performance', 'encodings', 'demo', 'configs', 'training', 'data', 'design', 'api')


@pytest.fixture(scope='module')
def built(tmp_path_factory):
  """``sphinx-build -W --keep-going -b html docs OUT`` (what ``make docs`` runs)."""
  try:
    import sphinx  # pylint: disable=g-import-not-at-top,unused-import
    import myst_parser  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError as e:
    pytest.fail(f'the documentation build needs the dev extra (sphinx, myst-parser): {e}; '
                "run pip install -e '.[dev]'")
  out = tmp_path_factory.mktemp('html')
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3')
  proc = subprocess.run([sys.executable, '-m', 'sphinx', '-W', '--keep-going', '-q', '-b', 'html',
                         '-d', str(out / '.doctrees'), 'docs', str(out)], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, f'sphinx-build failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}'
  return out


def _text(built, page):
  with open(built / f'{page}.html') as f:
    return html.unescape(re.sub(r'<[^>]+>', '', f.read()))


def test_every_page_is_built_and_in_the_table_of_contents(built):
  index = (built / 'index.html').read_text()
  for page in PAGES:
    assert (built / f'{page}.html').exists(), page
    assert f'href="{page}.html"' in index, f'{page} is not in the toctree of index.md'


def test_config_reference_lists_every_field_of_the_default_config(built):
  from ropex.config import defaults  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, os.path.join(ROOT, 'docs', '_ext'))
  import config_reference  # pylint: disable=g-import-not-at-top
  text = _text(built, 'configs')
  rows = config_reference.config_rows(defaults.base_config())
  fields = [path for path, _, _ in rows]
  assert {'train.steps', 'model.pe.kind', 'model.pe.scaling.factor', 'mesh.axis_rules',
          'data.tasks', 'checkpoint.keep', 'eval.every_steps', 'name'} <= set(fields)
  for path in fields:
    assert path in text, f'{path} missing from the generated config reference'
  c = defaults.base_config()
  assert re.search(r'train\.steps\s*int\s*' + str(c.train.steps), text)
  assert re.search(r'model\.pe\.kind\s*str\s*' + re.escape(repr(c.model.pe.kind)), text)


def test_api_reference_covers_library_modules_and_entry_points(built):
  text = _text(built, 'api')
  for module in ('ropex.model.positional', 'ropex.training.loop', 'ropex.evaluation.suite',
                 'ropex.config.loading', 'ropex.train (entry point'):
    assert module in text, module


def test_hand_written_train_table_names_exactly_the_train_fields():
  """docs/configs.md explains every ``train`` field in a table; it may not miss or invent one."""
  from ropex.config import defaults  # pylint: disable=g-import-not-at-top
  with open(os.path.join(ROOT, 'docs', 'configs.md')) as f:
    text = f.read()
  table = text.split('**`train`**', 1)[1].split('\n\n**', 1)[0]
  documented = {name for cell in re.findall(r'^\| ([^|]+) \|', table, re.M)
                for name in re.findall(r'`(\w+)`', cell)}
  assert documented == set(defaults.base_config().train.keys())
