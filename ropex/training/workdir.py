"""A run's workdir: ``config.json`` written at start (and checked on resume), read back by every
tool, and the summary printed at the end of a run."""

from __future__ import annotations

import json

from etils import epath
import ml_collections

from ropex.errors import ConfigError
from ropex.training import checkpoint, resume


def check_resumable(config, workdir: str) -> None:
  """Refuses (ConfigError, nothing written) a workdir whose run differs from ``config`` in a
  field that cannot change on resume (see :mod:`ropex.training.resume`) — checked against its
  ``config.json``, or the copy in its newest checkpoint when that file is lost — that holds
  checkpoints with neither, or that is not a directory."""
  root = epath.Path(workdir)
  if root.exists() and not root.is_dir():
    raise ConfigError(f'--workdir {workdir} is a file, not a directory; give a directory (it is '
                      'created if missing)')
  path = root / 'config.json'
  if path.exists():
    try:
      previous = json.loads(path.read_text())
    except ValueError as e:
      raise ConfigError(f'{path} is not valid JSON ({e}); restore it from the run, or use a new '
                        '--workdir') from None
  elif checkpoint.has_checkpoints(workdir):
    previous = checkpoint.saved_config(workdir)  # config.json lost: the checkpoint's copy
    if previous is None:
      raise ConfigError(f'--workdir {workdir} holds checkpoints but no config.json (and its '
                        'checkpoints hold no copy), so this command cannot be checked against '
                        'the run it would resume; restore its config.json, or use a new '
                        '--workdir')
  else:
    return
  resume.check_config(previous, json.loads(config.to_json()), workdir)


def write_config(config, workdir: str, primary: bool) -> None:
  """Writes ``config.json`` (process 0; atomically through a temporary file)."""
  if not primary:
    return
  root = epath.Path(workdir)
  root.mkdir(parents=True, exist_ok=True)
  text = config.to_json(indent=2)
  path = root / 'config.json'
  if path.exists() and path.read_text() == text:
    return
  tmp = root / 'config.json.tmp'
  tmp.write_text(text)
  tmp.replace(path)


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The run's ``config.json`` as a ConfigDict (JSON lists back to tuples)."""
  path = epath.Path(workdir) / 'config.json'
  if not path.exists():
    raise ConfigError(f'{workdir} has no config.json; give the --workdir of a ropex.train run')
  try:
    return ml_collections.ConfigDict(_tuples(json.loads(path.read_text())))
  except ValueError as e:
    raise ConfigError(f'{path} is not valid JSON ({e}); give the --workdir of a ropex.train '
                      'run') from None


def _tuples(value):
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  if isinstance(value, list):
    return tuple(_tuples(v) for v in value)
  return value


def format_summary(config, s: dict) -> str:
  w = s['workdir']
  head = (f'ropex: {config.get("name", "run")} stopped by {s["stopped_by"]} at step {s["step"]}'
          f' (checkpoint saved; rerun the same command to resume)' if s['stopped_by'] else
          f'ropex: {config.get("name", "run")} finished at step {s["step"]}')
  lines = [head + f' in {s["seconds"]:.0f}s']
  fmt = lambda key: f'{s[key]:.4g}' if s.get(key) is not None else 'n/a'
  lines.append(f'  train/loss {fmt("train/loss")}   eval/loss {fmt("eval/loss")}   '
               f'eval/perplexity {fmt("eval/perplexity")}   tokens/s {fmt("train/tokens_per_s")}')
  accs = {k.rsplit('/', 1)[1]: v for k, v in s.items() if k.startswith('eval/accuracy/')}
  if accs:
    lines.append('  eval accuracy: ' + '   '.join(f'{k} {v:.3f}' for k, v in accs.items()))
  lines.append(f'  outputs: {w}/metrics.jsonl, {w}/tb (tensorboard --logdir {w}/tb), '
               f'{w}/checkpoints, {w}/config.json')
  return '\n'.join(lines)
