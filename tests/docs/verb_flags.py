"""Run as ``python tests/docs/verb_flags.py VERB`` with a JSON list of argv lists on stdin: loads
``python -m ropex.VERB`` exactly as the command line does (``runpy`` as ``__main__``, stopped
where it would parse its flags), then checks each argv against the absl flags it defined.

Prints one JSON object: ``{"flags": [names], "defaults": {name: str default},
"commands": [{"problems", "values", "config_overrides", "positionals"}]}``, or
``{"error": ...}`` when the module does not exist or fails to load. Every value is parsed by the
flag's own absl parser (ints, floats, enums, lists), except config-file flags, whose file and
``--config.a.b`` fields the caller checks with ``ropex.config.loading``.
"""

import difflib
import json
import runpy
import sys

from absl import app, flags
from ml_collections.config_flags import config_flags


class _Stop(Exception):
  pass


def _stop(*args, **kwargs):
  raise _Stop()


def load_flags(verb: str) -> flags.FlagValues:
  app.run = _stop
  try:
    runpy.run_module(f'ropex.{verb}', run_name='__main__', alter_sys=False)
  except _Stop:
    return flags.FLAGS
  raise RuntimeError(f'python -m ropex.{verb} never reached its flag parsing (absl.app.run)')


def is_placeholder(value: str) -> bool:
  """``DIR``, ``CONFIG``, ``N``, ``<name>``, ``...``: a value the reader fills in."""
  return value.isupper() or '<' in value or value == '...' or value.startswith('$')


def check(argv: list, fv: flags.FlagValues, verb: str) -> dict:
  out = {'problems': [], 'values': {}, 'config_overrides': {}, 'positionals': []}
  names = list(fv)
  i = 0
  while i < len(argv):
    tok = argv[i]
    i += 1
    if not tok.startswith('-') or tok in ('-', '...'):
      out['positionals'].append(tok)
      continue
    name, eq, value = tok.lstrip('-').partition('=')
    base = name.split('.', 1)[0]
    if '.' in name and base in fv and config_flags.is_config_flag(fv[base]):
      if not eq:
        value, i = (argv[i] if i < len(argv) else ''), i + 1
      out['config_overrides'].setdefault(base, []).append([name.split('.', 1)[1], value])
      continue
    if name not in fv:
      if name.startswith('no') and name[2:] in fv and fv[name[2:]].boolean:
        out['values'].setdefault(name[2:], []).append('false')
        continue
      if not eq and i < len(argv) and not argv[i].startswith('-'):
        i += 1   # its value, most likely
      near = difflib.get_close_matches(name, names, n=3)
      out['problems'].append(f'python -m ropex.{verb} has no flag --{name}' +
                             (f' (did you mean {", ".join("--" + n for n in near)}?)' if near
                              else ''))
      continue
    flag = fv[name]
    if not eq:
      if flag.boolean:
        value = 'true'
      elif i < len(argv):
        value, i = argv[i], i + 1
      else:
        out['problems'].append(f'--{name} of python -m ropex.{verb} needs a value')
        continue
    out['values'].setdefault(name, []).append(value)
    if config_flags.is_config_flag(flag) or is_placeholder(value):
      continue
    try:
      flag.parser.parse(value)
    except (ValueError, TypeError) as e:
      out['problems'].append(f'--{name}={value!r} of python -m ropex.{verb}: {e}')
  return out


def main():
  verb = sys.argv[1]
  argvs = json.load(sys.stdin)
  try:
    fv = load_flags(verb)
  except ImportError as e:
    print(json.dumps({'error': f'python -m ropex.{verb}: no such entry point ({e})'}))
    return
  defaults = {n: fv[n].default for n in fv if isinstance(fv[n].default, str)}
  print(json.dumps({'flags': sorted(fv), 'defaults': defaults,
                    'config_flags': [n for n in fv if config_flags.is_config_flag(fv[n])],
                    'commands': [check(argv, fv, verb) for argv in argvs]}))


if __name__ == '__main__':
  main()
