"""Lists, runs or launches the runs of a sweep defined next to its configs.

A sweep file is a config module with ``get_sweep(arg) -> [(name, config, overrides), ...]``:
``name`` names the run (its workdir is ``<workdir_root>/<name>``), ``config`` is a config file
with its args, relative to the sweep file (``'prope_2b.py:p=0.25,data=wiki'``), and
``overrides`` maps dotted config keys to values (``{'train.steps': 100}``), passed to
``ropex.train`` as ``--config.<key>=<value>``::

  python -m ropex.sweep --config configs/paper_table2.py --dry_run
  python -m ropex.sweep --config configs/paper_table2.py:runlocal --workdir_root /tmp/t2 \\
      --override train.steps=20
  python -m ropex.sweep --config configs/paper_table2.py --launcher tpu \\
      --launcher_args='--name my-pod --zone us-east5-a' --workdir_root gs://BUCKET/table2

Seeds: ``--seeds 3`` (seeds 0, 1, 2) or ``--seeds 0,5,7``, or ``SEEDS = 3`` / ``SEEDS = (0, 5)``
in the sweep file (the flag wins), repeats every run once per seed as ``<name>_s<seed>`` with
``train.seed`` (initialisation, dropout) and ``data.seed`` (data order; for synthetic data,
the examples) set to the seed. ``ropex.experiments.report`` and ``ropex.evaluate compare`` group runs that
differ only by seed into mean ± a 95% interval.

Launchers: ``local`` runs ``python -m ropex.train`` for each run, one after another;
``tpu`` runs the same command on every worker of a TPU VM/pod through
``scripts/tpu_pod.sh run`` (one run after another); ``slurm`` submits
``scripts/slurm_train.sbatch`` per run with ``sbatch``. ``--dry_run`` prints the runs and
the exact commands without running anything. Every run's config is built and validated
first (all blocks but ``data``, whose files may exist only where the run trains).
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import subprocess
import sys
from typing import Any, Sequence

from absl import app, flags
import ml_collections

from ropex import paths
from ropex.config import defaults as config_base
from ropex.config import loading
from ropex.config import overrides as overrides_lib
from ropex.training import validation
from ropex.errors import ConfigError

LAUNCHERS = ('local', 'tpu', 'slurm')
SCRIPTS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                           'scripts')


@dataclasses.dataclass(frozen=True)
class Run:
  name: str
  config: str                  # config file path (as seen from the cwd) with its ':args'
  overrides: tuple[tuple[str, Any], ...]
  workdir: str


SEED_KEYS = ('train.seed', 'data.seed')


def parse_seeds(value: Any, field: str = '--seeds') -> tuple[int, ...] | None:
  """``3`` / ``'3'`` -> (0, 1, 2); ``'0,5'`` / ``(0, 5)`` -> (0, 5); None / '' -> None."""
  if value is None or value == '':
    return None
  try:
    if isinstance(value, str):
      parts = [int(v) for v in value.split(',') if v.strip()]
      seeds = tuple(range(parts[0])) if len(parts) == 1 and ',' not in value else tuple(parts)
    elif isinstance(value, int) and not isinstance(value, bool):
      seeds = tuple(range(value))
    else:
      seeds = tuple(int(v) for v in value)
  except (TypeError, ValueError, IndexError):
    seeds = ()
  if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
    raise ConfigError(f'{field}={value!r} must be a count >= 1 (seeds 0..N-1) or distinct '
                      'seeds >= 0, comma-separated')
  return seeds


def with_seeds(entries, seeds: Sequence[int] | None):
  """Each ``(name, config, overrides)`` once per seed: ``name_s<seed>``, seed overrides set."""
  if seeds is None:
    return list(entries)
  out = []
  for name, config, overrides in entries:
    clash = [k for k in SEED_KEYS if k in overrides]
    if clash:
      raise ConfigError(f'run {name!r} sets {", ".join(clash)} and the sweep has a seed axis; '
                        'allowed: one of the two')
    out += [(f'{name}_s{seed}', config, dict(overrides, **{k: seed for k in SEED_KEYS}))
            for seed in seeds]
  return out


def load_sweep(sweep: str, workdir_root: str,
               extra_overrides: Sequence[tuple[str, Any]] = (),
               seeds: Sequence[int] | None = None) -> list[Run]:
  """The runs of sweep file ``sweep`` (``path[:args]``), each validated; ``seeds`` (default:
  the file's ``SEEDS``, if any) repeats every run once per seed."""
  path, arg = loading.split_spec(sweep)
  module = loading.load_module(path)
  if not hasattr(module, 'get_sweep'):
    raise ConfigError(f'--config={path!r} defines no get_sweep(arg); a sweep file returns '
                      f'[(name, config, overrides), ...]')
  if seeds is None:
    seeds = parse_seeds(getattr(module, 'SEEDS', None), field=f'{path}: SEEDS')
  if seeds is not None and any(k in SEED_KEYS for k, _ in extra_overrides):
    raise ConfigError('--override sets a seed and the sweep has a seed axis; allowed: one of '
                      'the two')
  runs, seen = [], set()
  for name, config, overrides in with_seeds(module.get_sweep(arg), seeds):
    if name in seen:
      raise ConfigError(f'sweep {path!r} names run {name!r} twice; run names must be unique')
    seen.add(name)
    config_path, config_arg = loading.split_spec(config)
    config_path = os.path.normpath(os.path.join(os.path.dirname(path), config_path))
    config = config_path + (f':{config_arg}' if config_arg is not None else '')
    merged = tuple(dict(overrides, **dict(extra_overrides)).items())
    run = Run(name=name, config=config, overrides=merged,
              workdir=workdir_root.rstrip('/') + '/' + name)
    validate(run)
    runs.append(run)
  return runs


def validate_except_data(config, num_devices: int | None = None, process_count: int = 1):
  """Validates every block but ``data`` (its tokenizer and dataset files may exist only where
  the run will train; ``ropex.train`` checks them there before anything starts)."""
  checked = ml_collections.ConfigDict(config.to_dict())
  checked.data = config_base.base_config().data
  validation.validate(checked, num_devices, process_count)


def validate(run: Run) -> ml_collections.ConfigDict:
  """The run's config with its overrides applied, validated (see validate_except_data)."""
  cfg = loading.load(run.config)
  for key, value in run.overrides:
    overrides_lib.set_field(cfg, key, value)
  validate_except_data(cfg)
  return cfg


def _flag_value(value: Any) -> str:
  if isinstance(value, (tuple, list)):
    return ','.join(str(v) for v in value)
  return str(value)


def train_command(run: Run, python: str = 'python') -> list[str]:
  return [python, '-m', 'ropex.train', f'--config={run.config}', f'--workdir={run.workdir}',
          *(f'--config.{key}={_flag_value(value)}' for key, value in run.overrides)]


def launch_command(run: Run, launcher: str, launcher_args: Sequence[str] = (),
                   python: str = sys.executable) -> list[str]:
  """The command that starts ``run`` with ``launcher`` (``local``, ``tpu`` or ``slurm``)."""
  if launcher == 'local':
    return train_command(run, python)
  if launcher == 'tpu':  # workers run in their own checkout: config paths relative to it
    path, arg = loading.split_spec(run.config)
    path = os.path.relpath(os.path.abspath(path), os.path.dirname(SCRIPTS_DIR))
    remote = dataclasses.replace(run, config=path + (f':{arg}' if arg is not None else ''))
    return ['bash', os.path.join(SCRIPTS_DIR, 'tpu_pod.sh'), 'run', *launcher_args, '--',
            *train_command(remote, 'python')]
  if launcher == 'slurm':
    return ['sbatch', f'--job-name={run.name}', *launcher_args,
            os.path.join(SCRIPTS_DIR, 'slurm_train.sbatch'), *train_command(run, 'python')]
  raise ConfigError(f'--launcher={launcher!r} is not allowed; allowed: {", ".join(LAUNCHERS)}')


def execute(runs: Sequence[Run], launcher: str, launcher_args: Sequence[str] = (),
            dry_run: bool = False, out=sys.stdout) -> list[str]:
  """Prints every run and its command; unless ``dry_run``, runs them one after another.

  Returns the names of the runs whose command failed (a failure does not stop the sweep)."""
  failed = []
  for i, run in enumerate(runs):
    command = launch_command(run, launcher, launcher_args)
    print(f'[{i + 1}/{len(runs)}] {run.name}  workdir={run.workdir}', file=out)
    print('  ' + shlex.join(command), file=out, flush=True)
    if dry_run:
      continue
    if subprocess.run(command, check=False).returncode != 0:
      print(f'  run {run.name} FAILED', file=out, flush=True)
      failed.append(run.name)
  return failed


FLAGS = flags.FLAGS


def define_flags():
  """The CLI flags (defined only when run as a program, so the module imports cleanly)."""
  flags.DEFINE_string('config', None, 'sweep file with get_sweep(arg), e.g. configs/paper_table2.py'
                      ' or configs/paper_table2.py:runlocal')
  flags.DEFINE_bool('dry_run', False, 'list the runs and their commands; run nothing')
  flags.DEFINE_enum('launcher', 'local', LAUNCHERS, 'how each run is started')
  flags.DEFINE_string('workdir_root', None, 'parent of every run workdir (on pods: shared by '
                      'all workers); default runs/<sweep name>')
  flags.DEFINE_string('launcher_args', '', 'extra arguments for the launcher, e.g. '
                      "'--name my-pod --zone us-east5-a' (tpu) or '--nodes=4' (slurm)")
  flags.DEFINE_multi_string('override', [], 'key=value applied to every run, e.g. train.steps=4')
  flags.DEFINE_string('only', '', 'comma-separated run names to keep (default: all)')
  flags.DEFINE_string('seeds', '', 'seed axis: a count N (seeds 0..N-1) or comma-separated '
                      'seeds; every run once per seed as <name>_s<seed> (train.seed = data.seed '
                      '= seed); default: the sweep file\'s SEEDS, or none')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not FLAGS.config:
    raise app.UsageError('--config is required')
  stem = os.path.splitext(os.path.basename(loading.split_spec(FLAGS.config)[0]))[0]
  root = FLAGS.workdir_root or os.path.join('runs', stem)
  runs = load_sweep(FLAGS.config, root, [overrides_lib.parse(o) for o in FLAGS.override],
                    parse_seeds(FLAGS.seeds))
  if FLAGS.only:
    keep = set(FLAGS.only.split(','))
    unknown = keep - {r.name for r in runs}
    if unknown:
      raise ConfigError(f'--only names unknown run(s) {", ".join(sorted(unknown))}; '
                        f'allowed: {", ".join(r.name for r in runs)}')
    runs = [r for r in runs if r.name in keep]
  if paths.is_url(root):
    paths.path(root, '--workdir_root')  # an unusable scheme or backend stops here
  elif FLAGS.launcher == 'tpu' and not os.path.isabs(root):
    print(f'note: --workdir_root={root} is relative to ~/ropex on every TPU worker; multi-host '
          f'runs need one directory all workers share (e.g. gs://BUCKET/...)', file=sys.stderr)
  failed = execute(runs, FLAGS.launcher, shlex.split(FLAGS.launcher_args), FLAGS.dry_run)
  if failed:
    sys.exit(f'{len(failed)} of {len(runs)} runs failed: {", ".join(failed)}')
