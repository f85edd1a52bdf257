"""Finds every ``python -m ropex.<verb> …`` command (and every ``make <target>``) in markdown
files and checks it against the real entry point, so documented commands cannot go stale.

What is checked, per command (in document order, one document at a time):

* the verb is an entry point (``ropex/<verb>.py``) and every flag it is given exists and parses
  with that flag's own absl parser (``tests/docs/verb_flags.py``, one subprocess per verb);
* a config-file flag's file loads (``ropex.config.loading``), and its ``--config.a.b=v`` fields
  exist and take the value (``ropex.config.overrides.set_field``, the code every override uses);
  a sweep file's runs load and validate with the command's ``--override``, ``--seeds``,
  ``--only`` (``ropex.experiments.sweep.load_sweep``, as ``ropex.sweep`` does);
* ``--override key=value`` fields exist in the config the command works on (its config file, or
  the config of the workdir an earlier command trained, else ``base_config()``);
* a bare word after the verb is a subcommand the entry point's source compares ``argv`` with;
* local paths it reads (``/tmp/…`` and repository folders) exist in the repository or are
  written by an earlier command of the same document (``--workdir`` of a training verb, ``--out``,
  ``--output``, ``--markdown``, ``--workdir_root``, the runs of a sweep), globs included;
* ``make <target>`` names a Makefile target; the ``python -m ropex`` lines of its recipe are
  checked like any other command (and produce their outputs).

A ``$ command`` line followed by the output it prints is an example, perhaps of bad input: it is
run and its output compared instead (``shown_outputs``).

Placeholders the reader fills in (``DIR``, ``CONFIG``, ``N``, ``<name>``, ``...``) are not checked
as values, but the flags they are given to are.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import glob
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HELPER = os.path.join(ROOT, 'tests', 'docs', 'verb_flags.py')

# Flags whose value is a path the command writes; everything else path-like is read.
OUTPUT_FLAGS = ('out', 'output', 'markdown', 'workdir_root')
WORKDIR_WRITERS = ('train', 'demo')       # verbs whose --workdir is written, not read
REPO_DIRS = ('configs', 'scripts', 'docs', 'tests', 'ropex', 'runs', 'report')
PLACEHOLDER_CONFIG = 'configs/tiny.py'    # stands in for CONFIG when a field must be checked


@dataclasses.dataclass
class Command:
  doc: str          # file, relative to the repository
  line: int         # 1-based line where the command starts
  text: str         # as written (continuations joined)
  verb: str         # 'train', ... or 'make'
  argv: list        # arguments after the verb (make: the target)
  shown: bool = False   # a `$ command` followed by what it prints (possibly an error): checked
                        # by running it (test_shown_outputs_...), not statically

  def where(self) -> str:
    return f'{self.doc}:{self.line}: {self.text}'


def documents() -> list[str]:
  """README.md and every page of docs/ (generated pages included), relative to the root."""
  pages = sorted(glob.glob(os.path.join(ROOT, 'docs', '**', '*.md'), recursive=True))
  return ['README.md'] + [os.path.relpath(p, ROOT) for p in pages
                          if '_build' not in os.path.relpath(p, ROOT).split(os.sep)]


def is_placeholder(value: str) -> bool:
  """``DIR``, ``CONFIG``, ``gs://BUCKET/x``, ``M.model``, ``<name>``, ``...``, ``$VAR``: a value
  the reader fills in."""
  return bool(re.search(r'\b[A-Z][A-Z0-9_]*\b', value)) or any(
      s in value for s in ('<', '...', '…', '$'))


def _split(text: str) -> list[str] | None:
  text = re.sub(r'\$\([^)]*\)', 'RUNS', text)       # shell substitution: a placeholder
  try:
    return shlex.split(text, comments=True)
  except ValueError:
    return None


def parse_command(text: str, doc: str, line: int) -> Command | None:
  """A Command from a shell line holding ``python -m ropex.<verb>`` or ``make <target>``."""
  text = text.strip()
  if text.startswith('$ '):
    text = text[2:]
  m = re.search(r'(?:^|\s|/)python3? -m ropex\.(\w+)(.*)$', text)
  if m:
    argv = _split(m.group(2))
    return None if argv is None else Command(doc, line, text, m.group(1), argv)
  m = re.match(r'make ([\w-]+)', text)
  if m:
    return Command(doc, line, text, 'make', [m.group(1)])
  return None


def extract(path: str) -> list[Command]:
  """Commands of one markdown file: shell lines in fenced blocks (``\\`` continuations joined,
  a leading ``$ `` dropped) and inline code spans, in document order."""
  with open(os.path.join(ROOT, path)) as f:
    lines = f.read().split('\n')
  out, fence, i, para, para_start = [], None, 0, [], 0

  def flush():
    text = ' '.join(para)
    for span in re.findall(r'`([^`]+)`', text):
      if 'python -m ropex.' in span or re.fullmatch(r'make [\w-]+', span.strip()):
        cmd = parse_command(span, path, para_start)
        if cmd:
          out.append(cmd)
    para.clear()

  while i < len(lines):
    line = lines[i]
    marker = re.match(r'\s*(```+|~~~+)', line)
    if marker and (fence is None or line.strip().startswith(fence)):
      flush()
      fence = None if fence else marker.group(1)
      i += 1
      continue
    if fence:
      start, text = i, line
      while text.rstrip().endswith('\\') and i + 1 < len(lines):
        i += 1
        text = text.rstrip()[:-1] + ' ' + lines[i].strip()
      cmd = parse_command(text, path, start + 1)
      if cmd:
        follow = lines[i + 1] if i + 1 < len(lines) else '```'
        cmd.shown = line.startswith('$ ') and not (follow.startswith('$ ') or
                                                   re.match(r'\s*(```|~~~)', follow))
        out.append(cmd)
    elif line.strip():
      if not para:
        para_start = i + 1
      para.append(line.strip())
    else:
      flush()
    i += 1
  flush()
  return out


def makefile_commands(target: str) -> list[str] | None:
  """The ``python -m ropex`` lines of a Makefile target's recipe (None: no such target)."""
  with open(os.path.join(ROOT, 'Makefile')) as f:
    text = f.read()
  m = re.search(rf'^{re.escape(target)}:.*\n((?:\t.*\n?)*)', text, re.M)
  if not m:
    return None
  return ['python ' + line[line.index('-m ropex.'):] for line in m.group(1).split('\n')
          if '-m ropex.' in line]


def verb_flags(verb_argvs: dict) -> dict:
  """``{verb: helper output}``, one subprocess per verb, all started at once."""
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3',
             PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get('PYTHONPATH')])))
  procs = {verb: subprocess.Popen([sys.executable, HELPER, verb], cwd=ROOT, env=env,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
           for verb in verb_argvs}
  out = {}
  for verb, proc in procs.items():
    stdout, stderr = proc.communicate(json.dumps(verb_argvs[verb]), timeout=300)
    if proc.returncode:
      out[verb] = {'error': f'python -m ropex.{verb} failed to load: {stderr.strip()[-500:]}'}
    else:
      out[verb] = json.loads(stdout.strip().splitlines()[-1])
  return out


def _is_path(value: str) -> bool:
  """A local path the checker can verify: under /tmp/ or a repository folder."""
  return ('://' not in value and not is_placeholder(value) and
          (value.startswith('/tmp/') or value.split('/')[0] in REPO_DIRS) and '/' in value)


class Produced:
  """Paths written by the commands of one document so far, with the config of trained runs.

  A trained run also gets a stand-in under ``scratch`` (its ``config.json`` and an empty
  ``checkpoints/``), so that a later config file that reads the run (``src=/tmp/rope`` of
  ``configs/context_extension.py``) can be loaded as if the run were there."""

  def __init__(self, scratch: str):
    self.paths: dict[str, object] = {}
    self.scratch = scratch

  def add(self, path: str, config=None):
    self.paths[path.rstrip('/')] = config
    if config is not None and not path.startswith('gs://'):
      from ropex.training import workdir  # pylint: disable=g-import-not-at-top
      stand_in = self.stand_in(path)
      workdir.write_config(config, stand_in, primary=True)
      os.makedirs(os.path.join(stand_in, 'checkpoints'), exist_ok=True)

  def stand_in(self, path: str) -> str:
    return os.path.join(self.scratch, path.strip('/'))

  def with_stand_ins(self, spec: str) -> str:
    """``spec`` with every trained run it names as a config argument replaced by its stand-in."""
    head, sep, arg = spec.partition(':')
    for path in sorted((p for p, c in self.paths.items() if c is not None), key=len,
                       reverse=True):
      arg = re.sub(rf'(?<==){re.escape(path)}(?=$|[,:/])', self.stand_in(path), arg)
    return head + sep + arg

  def covers(self, path: str) -> bool:
    path = path.rstrip('/')
    return any(path == p or path.startswith(p + '/') or fnmatch.fnmatch(p, path) or
               any(fnmatch.fnmatch(p, path.rsplit('/', k)[0]) for k in range(1, path.count('/')))
               for p in self.paths)

  def config(self, path: str):
    return self.paths.get((path or '').rstrip('/'))


def _first(values: dict, name: str, default=None):
  return values.get(name, [default])[-1]


def _sweep_runs(spec, root, values, problems):
  from ropex.config import overrides as overrides_lib  # pylint: disable=g-import-not-at-top
  from ropex.errors import ConfigError  # pylint: disable=g-import-not-at-top
  from ropex.experiments import sweep as sweep_lib  # pylint: disable=g-import-not-at-top
  try:
    extra = [overrides_lib.parse(o) for o in values.get('override', []) if not is_placeholder(o)]
    runs = sweep_lib.load_sweep(spec, root, extra, sweep_lib.parse_seeds(_first(values, 'seeds', '')))
  except ConfigError as e:
    problems.append(str(e))
    return []
  only = [n for n in _first(values, 'only', '').split(',') if n]
  unknown = set(only) - {r.name for r in runs}
  if unknown:
    problems.append(f'--only names unknown run(s) {", ".join(sorted(unknown))}')
  return runs


def _config_problems(res, info, produced, problems):
  """Loads the config files a command names (config-file flags, and a plain ``--config``) and
  applies its ``--config.*`` fields. Returns ``(config the command works on or None, whether
  it named a sweep file)``; a sweep's runs are loaded and validated, and recorded as written."""
  from ropex.config import loading, overrides  # pylint: disable=g-import-not-at-top
  from ropex.errors import ConfigError  # pylint: disable=g-import-not-at-top
  values, reference, sweep = res['values'], None, False
  file_flags = set(info['config_flags']) | ({'config'} & set(info['flags']))
  for flag in sorted(file_flags):
    for spec in values.get(flag, []):
      fields = res['config_overrides'].get(flag, [])
      if is_placeholder(spec):
        if not fields:
          continue
        spec = PLACEHOLDER_CONFIG
      try:
        path = loading.split_spec(spec)[0]
        module = loading.load_module(path, f'--{flag}')
        if hasattr(module, 'get_sweep') and not hasattr(module, 'get_config'):
          sweep = True
          stem = os.path.splitext(os.path.basename(path))[0]
          root = _first(values, 'workdir_root') or os.path.join('runs', stem)
          for run in _sweep_runs(spec, root, values, problems):
            produced.add(run.workdir)
          continue
        reference = loading.load(produced.with_stand_ins(spec), f'--{flag}')
        for key, value in fields:
          if not is_placeholder(value):
            overrides.set_field(reference, key, value)
      except ConfigError as e:
        problems.append(str(e))
  return reference, sweep


def _override_problems(values, reference, problems):
  from ropex.config import defaults, overrides  # pylint: disable=g-import-not-at-top
  from ropex.errors import ConfigError  # pylint: disable=g-import-not-at-top
  cfg = reference if reference is not None else defaults.base_config()
  for text in values.get('override', []):
    if is_placeholder(text):
      continue
    try:
      key, value = overrides.parse(text)
      overrides.applied(cfg, {key: value})
    except ConfigError as e:
      problems.append(str(e))


def check_command(cmd: Command, info: dict, res: dict, produced: Produced) -> list[str]:
  """Problems of one (non-make) command; records what it writes in ``produced``."""
  if 'error' in info:
    return [info['error']]
  problems = list(res['problems'])
  values = res['values']
  workdir = _first(values, 'workdir', info['defaults'].get('workdir'))
  reference, sweep = _config_problems(res, info, produced, problems)
  if reference is None and cmd.verb not in WORKDIR_WRITERS:
    reference = produced.config(workdir)
  if not sweep:   # a sweep's --override was applied to each of its runs above
    _override_problems(values, reference, problems)
  with open(os.path.join(ROOT, 'ropex', f'{cmd.verb}.py')) as f:
    source = f.read()
  inputs = []
  for word in res['positionals']:
    if re.fullmatch(r'[a-z_]+', word) and f"'{word}'" not in source:
      problems.append(f'python -m ropex.{cmd.verb} has no subcommand {word!r}')
    elif not re.fullmatch(r'[a-z_]+', word):
      inputs.append(word)
  for name, vals in values.items():
    if (name in OUTPUT_FLAGS or name == 'config' or name in info['config_flags'] or
        (name == 'workdir' and cmd.verb in WORKDIR_WRITERS)):
      continue   # config files are loaded above
    inputs += [v.split(':', 1)[0] if re.match(r'[^:]+\.py:', v) else v for v in vals]
  for path in inputs:
    if _is_path(path) and not glob.glob(os.path.join(ROOT, path)) and not produced.covers(path):
      problems.append(f'{path} does not exist and no command before this one writes it')
  if cmd.verb in WORKDIR_WRITERS and workdir and not is_placeholder(workdir):
    produced.add(workdir, reference)
    sweep = _first(values, 'sweep', info['defaults'].get('sweep'))
    if sweep:
      for run in _sweep_runs(sweep, workdir, values, problems):
        produced.add(run.workdir)
  for name in OUTPUT_FLAGS:
    for path in values.get(name, []):
      if not is_placeholder(path):
        produced.add(path)
  return problems


def expand_make(commands: list[Command]) -> list[Command]:
  """``make X`` followed by the commands of X's recipe (same place in the document)."""
  out = []
  for cmd in commands:
    out.append(cmd)
    if cmd.verb == 'make':
      for line in makefile_commands(cmd.argv[0]) or []:
        sub = parse_command(line, cmd.doc, cmd.line)
        if sub:
          sub.text = f'{cmd.text} (Makefile: {line})'
          out.append(sub)
  return out


def check_documents(docs: list[str]) -> tuple[list[Command], list[str]]:
  """Every command of ``docs`` and the problems found (``file:line: command: problem``), with
  relative paths taken from the repository root, as the commands are run."""
  cwd = os.getcwd()
  os.chdir(ROOT)
  try:
    return _check_documents(docs)
  finally:
    os.chdir(cwd)


def _check_documents(docs: list[str]) -> tuple[list[Command], list[str]]:
  per_doc = {doc: expand_make(extract(doc)) for doc in docs}
  verbs = {}
  for cmds in per_doc.values():
    for cmd in cmds:
      if cmd.verb != 'make' and os.path.isfile(os.path.join(ROOT, 'ropex', f'{cmd.verb}.py')):
        verbs.setdefault(cmd.verb, []).append(cmd.argv)
  infos = verb_flags(verbs)
  results = {verb: iter(info.get('commands', [])) for verb, info in infos.items()}
  known = sorted(os.path.splitext(f)[0] for f in os.listdir(os.path.join(ROOT, 'ropex'))
                 if f.endswith('.py') and "__name__ == '__main__'" in
                 open(os.path.join(ROOT, 'ropex', f)).read())
  all_cmds, problems = [], []
  scratch = tempfile.mkdtemp(prefix='ropex-doc-commands-')
  try:
    for doc, cmds in per_doc.items():
      produced = Produced(os.path.join(scratch, os.path.basename(doc)))
      for cmd in cmds:       # in document order: what a command writes, later ones may read
        all_cmds.append(cmd)
        errs = _problems(cmd, infos, results, known, produced)
        if cmd.shown:          # an example of what a command prints, maybe an error: run, not
          continue             # checked here (test_shown_outputs_are_what_the_commands_print)
        problems += [f'{cmd.where()}: {e}' for e in errs]
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
  return all_cmds, problems


def _problems(cmd, infos, results, known, produced) -> list[str]:
  if cmd.verb == 'make':
    found = makefile_commands(cmd.argv[0]) is not None
    return [] if found else [f'the Makefile has no target {cmd.argv[0]!r}']
  if cmd.verb not in infos:
    return [f'python -m ropex.{cmd.verb}: no such entry point; the verbs are '
            f'{", ".join(known)}']
  return check_command(cmd, infos[cmd.verb], next(results[cmd.verb], {}), produced)


def shown_outputs(path: str) -> list[tuple[int, str, list[str]]]:
  """``(line, command, output lines)`` for every ``$ python -m ropex…`` line in a fenced block
  that is followed by the output it prints (lines up to the next ``$`` or the fence's end;
  ``...`` lines stand for output left out)."""
  with open(os.path.join(ROOT, path)) as f:
    lines = f.read().split('\n')
  out, fence = [], False
  for i, line in enumerate(lines):
    if re.match(r'\s*```', line):
      fence = not fence
      continue
    if fence and line.startswith('$ ') and 'python -m ropex.' in line:
      shown = []
      for follow in lines[i + 1:]:
        if follow.startswith('$ ') or re.match(r'\s*```', follow):
          break
        if follow.strip() not in ('...', '…'):
          shown.append(follow)
      out.append((i + 1, line[2:], shown))
  return out
