"""A run's workdir: ``config.json`` written at start (and checked on resume), read back by every
tool, and the summary printed at the end of a run."""

from __future__ import annotations

import json
import os

import ml_collections

from ropex.errors import ConfigError


def prepare(config, workdir: str, primary: bool) -> None:
  """Refuses a workdir whose run has another model; writes ``config.json``."""
  path = os.path.join(workdir, 'config.json')
  current = json.loads(config.to_json())
  if os.path.exists(path):
    with open(path) as f:
      previous = json.load(f)
    if previous.get('model') != current['model']:
      raise ConfigError(f'--workdir {workdir} holds a run with a different model block; '
                        f'allowed: the same model config (to resume) or a new --workdir')
  if primary:
    os.makedirs(workdir, exist_ok=True)
    with open(path + '.tmp', 'w') as f:
      f.write(config.to_json(indent=2))
    os.replace(path + '.tmp', path)


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The run's ``config.json`` as a ConfigDict (JSON lists back to tuples)."""
  with open(os.path.join(workdir, 'config.json')) as f:
    return ml_collections.ConfigDict(_tuples(json.load(f)))


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
