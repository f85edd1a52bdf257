"""Loading config files, one implementation for every entry point.

A config file is a Python file with ``get_config(arg) -> ml_collections.ConfigDict``; ``arg`` is
the text after a colon (``configs/prope_2b.py:p=0.25,data=flan``), parsed by :func:`parse_arg`
against typed defaults. A sweep file has ``get_sweep(arg)`` instead. Every problem (no such
file, a syntax error, no ``get_config``, a wrong return type, a bad string arg) is a
:class:`ConfigError` naming the flag and the file.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import signal
import sys
import types

import ml_collections

from ropex.errors import EXIT_USAGE, ConfigError, Interrupted, exit_status_for_signal

_BOOLS = {'true': True, 'false': False, '1': True, '0': False}


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses ``'p=0.25,theta=500000,data=wiki,runlocal'`` against typed defaults.

  Every key must be one of ``defaults``; values are converted to the default's type. A bare
  key means True."""
  out = dict(defaults)
  for item in filter(None, (arg or '').split(',')):
    key, has_value, raw = item.partition('=')
    key = key.strip()
    if key not in defaults:
      raise ConfigError(f'config argument {key!r} is not known; allowed: {", ".join(defaults)}')
    raw = raw if has_value else 'True'
    default = defaults[key]
    try:
      if isinstance(default, bool):
        value = _BOOLS[raw.strip().lower()]
      elif isinstance(default, (int, float)):
        value = type(default)(ast.literal_eval(raw.strip()))
      else:
        value = raw.strip()
    except (ValueError, KeyError, SyntaxError, TypeError):
      raise ConfigError(f'config argument {key}={raw!r} must be a '
                        f'{type(default).__name__}') from None
    out[key] = value
  return ml_collections.ConfigDict(out)


def split_spec(spec: str) -> tuple[str, str | None]:
  """``'configs/x.py:p=0.25'`` -> ``('configs/x.py', 'p=0.25')``; no colon -> ``(path, None)``."""
  path, sep, arg = spec.partition(':')
  return path, (arg if sep else None)


def load_module(path: str, flag: str = '--config') -> types.ModuleType:
  """Imports a config file as a module, without touching sys.path."""
  if not os.path.isfile(path):
    raise ConfigError(f'{flag}={path!r} is not a file; give a config file such as '
                      f'configs/tiny.py')
  name = 'ropex_config_' + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  if spec is None or spec.loader is None:
    raise ConfigError(f'{flag}={path!r} is not a Python config file (e.g. configs/tiny.py)')
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except SyntaxError as e:
    raise ConfigError(f'{flag}={path!r} has a syntax error at line {e.lineno}: {e.msg}') from None
  return module


def load(spec: str, flag: str = '--config') -> ml_collections.ConfigDict:
  """``'configs/prope_2b.py:p=0.25'`` -> the ConfigDict its ``get_config`` returns."""
  path, arg = split_spec(spec)
  module = load_module(path, flag)
  get_config = getattr(module, 'get_config', None)
  if not callable(get_config):
    raise ConfigError(f'{flag}: config file {path!r} has no get_config(arg)')
  config = get_config(arg)
  if not isinstance(config, ml_collections.ConfigDict):
    raise ConfigError(f'{flag}: get_config of {path!r} returned a {type(config).__name__}; it '
                      f'must return an ml_collections.ConfigDict')
  return config


def _config_spec(argv, flag: str) -> str | None:
  """The value of ``--config`` (``--config=X`` or ``--config X``) in ``argv``, if given."""
  for i, arg in enumerate(argv):
    if arg.startswith(flag + '='):
      return arg.split('=', 1)[1]
    if arg == flag and i + 1 < len(argv):
      return argv[i + 1]
  return None


def fail(prog: str, message: str, status: int = EXIT_USAGE):
  """Prints ``prog: message`` as one line on stderr and exits with ``status``."""
  print(f'{prog}: {" ".join(str(message).split())}', file=sys.stderr, flush=True)
  sys.exit(status)


def parse_flags(argv, prog: str, config_flag: str | None = '--config'):
  """absl flag parsing where every bad input is one line and exit status 2: the config file is
  loaded with :func:`load` first (missing, syntax error, no ``get_config``, wrong type, bad
  string args), then absl parses (an unknown ``--config.<field>``, a bad value, a flag out of
  its bounds)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  spec = _config_spec(argv[1:], config_flag) if config_flag else None
  if spec is not None:
    try:
      load(spec, config_flag)
    except ConfigError as e:
      fail(prog, str(e))
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    err = e
    while err is not None:  # a ConfigError raised inside the config file's get_config
      if isinstance(err, ConfigError):
        fail(prog, str(err).strip().splitlines()[-1].split('ConfigError: ', 1)[-1])
      err = err.__cause__ or err.__context__
    fail(prog, str(e))
  except (AttributeError, KeyError) as e:  # --config.<field> that does not exist
    hint = re.search(r'Did you mean "(\w+)" instead of "(\w+)"', str(e))
    detail = f'{hint[2]!r}; did you mean {hint[1]!r}?' if hint else str(e).splitlines()[0]
    fail(prog, f'a --config.<field> override names a field that does not exist: {detail}')


def _raise_interrupted(signum, frame):
  del frame
  raise Interrupted(signum)


def _install_signal_handlers() -> None:
  """SIGTERM / SIGINT raise :class:`Interrupted` (the training loop installs its own handlers
  for the steps, which save a checkpoint and exit 0)."""
  for sig in (signal.SIGTERM, signal.SIGINT):
    try:
      signal.signal(sig, _raise_interrupted)
    except ValueError:  # not the main thread (main() called from a test's thread)
      pass


def exit_for(prog: str, error: BaseException) -> None:
  """The one line and exit status of an error that reached the entry point's top; returns
  (for the caller to re-raise) when ``error`` is none of the kinds below.

  * :class:`ConfigError`, ``absl.app.UsageError``: the message, status 2;
  * :class:`Interrupted` (SIGTERM / SIGINT outside the training loop): status 128 + signum;
  * an :class:`OSError` no boundary mapped (:func:`ropex.inputs.reason` names its file):
    status 2.
  """
  from absl import app  # pylint: disable=g-import-not-at-top
  from ropex import inputs  # pylint: disable=g-import-not-at-top
  if isinstance(error, (ConfigError, app.UsageError)):
    fail(prog, str(error), EXIT_USAGE)
  if isinstance(error, Interrupted):
    fail(prog, f'stopped by {error.name} before it finished; files it was writing may be '
         'incomplete: rerun the same command', exit_status_for_signal(error.signum))
  if isinstance(error, OSError):
    fail(prog, f'a file or folder could not be read or written: {inputs.reason(error)}',
         EXIT_USAGE)


def run(main, prog: str, config_flag: str | None = '--config') -> None:
  """``absl.app.run(main)`` for an entry point: bad flags and config files (see
  :func:`parse_flags`) and every error :func:`exit_for` knows become one line on stderr and
  its exit status (2 for bad input and usage), without a traceback. A new entry point calls
  this, checks its inputs with :mod:`ropex.inputs` before any expensive work or write, and
  raises :class:`ConfigError` for anything else it refuses."""
  from absl import app  # pylint: disable=g-import-not-at-top
  from ropex.model import platform  # pylint: disable=g-import-not-at-top
  platform.skip_absent_tpu()

  def checked_main(argv):
    try:
      return main(argv)
    except (ConfigError, app.UsageError, Interrupted, OSError) as e:
      exit_for(prog, e)
      raise

  _install_signal_handlers()
  try:
    app.run(checked_main, flags_parser=lambda argv: parse_flags(argv, prog, config_flag))
  except Interrupted as e:   # during flag parsing or absl's own set-up
    exit_for(prog, e)
