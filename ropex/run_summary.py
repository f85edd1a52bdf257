"""What a finished (or unfinished) run's workdir says: which ablation row and dataset column it
belongs to, how far it got, its final metrics, and whether it diverged.

Reads ``WORKDIR/config.json`` and ``WORKDIR/metrics.jsonl`` (local paths or ``gs://``). The row
and column are derived from the config itself (``model.pe`` and ``data``), never from the
directory name, so a table cannot mislabel a run.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Mapping

from etils import epath

from ropex.evaluation import intervals

# Table 2 of Barbero et al. (ICLR 2025): validation perplexity of Gemma 2B trained from scratch.
PAPER_TABLE2 = {
    'NoPE': {'wiki': 4.8594, 'flan': 6.6429},
    'RoPE θ=10k': {'wiki': 4.4627, 'flan': 6.4429},
    'RoPE θ=500k': {'wiki': 4.4485, 'flan': 6.4593},
    '0.75-RoPE reversed': {'wiki': 4.4592, 'flan': 6.4683},
    '0.75 partial (NeoX)': {'wiki': 4.4537, 'flan': 6.4562},
    '0.25-RoPE': {'wiki': 4.5302, 'flan': 6.5111},
    '0.75-RoPE': {'wiki': 4.4414, 'flan': 6.4422},
}
DATASET_TITLES = {'wiki': 'Wiki', 'flan': 'FlanV2'}


@dataclasses.dataclass
class RunSummary:
  workdir: str
  row: str                          # PE variant, e.g. '0.75-RoPE'
  column: str                       # dataset, e.g. 'wiki', 'flan', 'synthetic'
  setup: str                        # model / length / batch, e.g. 'gemma_2b T=8192 B=512'
  steps_planned: int
  step: int                         # last logged step (0: nothing logged)
  status: str                       # finished | unfinished | diverged | no metrics
  eval_perplexity: float | None     # the last logged eval/perplexity
  eval_loss: float | None
  train_loss: float | None
  train_curve: list[tuple[int, float]]
  eval_curve: list[tuple[int, float]]
  note: str = ''
  group: str = ''                   # config without seeds/name: equal = differ only by seed
  seeds: tuple = ()                 # (train.seed, data.seed)


def _theta(value) -> str:
  value = float(value or 10_000)
  for unit, div in (('M', 1e6), ('k', 1e3)):
    if value >= div and value % (div / 10) == 0:
      return f'{value / div:g}{unit}'
  return f'{value:g}'


def pe_label(pe: Mapping[str, Any]) -> str:
  """The paper's name for a ``model.pe`` block (θ shown when it is not the 10k default)."""
  kind = pe.get('kind')
  theta = float(pe.get('max_wavelength') or 10_000)
  suffix = '' if theta == 10_000 else f' θ={_theta(theta)}'
  if kind == 'none':
    return 'NoPE'
  if kind == 'rope':
    return f'RoPE θ={_theta(theta)}'
  if kind == 'prope':
    return f'{float(pe.get("fraction") or 0.75):g}-RoPE{suffix}'
  if kind == 'prope_reversed':
    return f'{float(pe.get("fraction") or 0.75):g}-RoPE reversed{suffix}'
  if kind == 'partial':
    return f'{float(pe.get("rotary_fraction") or 0.75):g} partial (NeoX){suffix}'
  fields = ','.join(f'{k}={v}' for k, v in sorted(pe.items()) if k != 'kind' and v is not None)
  return f'{kind}({fields})' if fields else str(kind)


def model_label(model: Mapping[str, Any]) -> str:
  label = pe_label(model.get('pe') or {})
  if model.get('layer_pattern'):
    label += ' / pattern ' + '-'.join(model['layer_pattern'])
  return label


def dataset_label(data: Mapping[str, Any]) -> str:
  """'wiki' (TFDS wikipedia), 'flan' (FlanV2 text files) or the data source otherwise."""
  source = data.get('source')
  if source == 'tfds' and str(data.get('tfds_name', '')).startswith('wikipedia'):
    return 'wiki'
  if source == 'text' and 'flan' in str(data.get('text_glob', '')).lower():
    return 'flan'
  if source == 'tfds':
    return f'tfds:{data.get("tfds_name")}'
  if source == 'text':
    return f'text:{data.get("text_glob")}'
  return str(source)


def read_metrics(workdir: str) -> list[dict]:
  """Records of ``metrics.jsonl`` by step (a step logged twice, by a resumed run: last wins)."""
  path = epath.Path(workdir) / 'metrics.jsonl'
  if not path.exists():
    return []
  by_step: dict[int, dict] = {}
  for line in path.read_text().splitlines():
    if line.strip():
      record = json.loads(line)
      by_step.setdefault(int(record['step']), {}).update(record)
  return [by_step[s] for s in sorted(by_step)]


def _finite(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _curve(records, key) -> list[tuple[int, float]]:
  return [(r['step'], float(r[key])) for r in records if _finite(r.get(key))]


def _last(records, key):
  values = [r[key] for r in records if key in r]
  return values[-1] if values else None


def summarize(workdir: str, diverge_margin: float = 1.0) -> RunSummary:
  """Reads one workdir. A run *diverged* if a logged loss is missing/NaN/Inf (the metrics
  writer stores non-finite values as null) or its last train loss is more than
  ``diverge_margin`` nats above its lowest; it is *unfinished* below ``train.steps``."""
  path = epath.Path(workdir)
  config_path = path / 'config.json'
  if not config_path.exists():
    raise FileNotFoundError(f'{workdir} has no config.json: not a ropex run directory')
  config = json.loads(config_path.read_text())
  model, train = config.get('model', {}), config.get('train', {})
  records = read_metrics(workdir)
  train_curve, eval_curve = _curve(records, 'train/loss'), _curve(records, 'eval/loss')
  step = records[-1]['step'] if records else 0
  planned = int(train.get('steps', 0))
  bad = [r['step'] for r in records for k in ('train/loss', 'eval/loss')
         if k in r and not _finite(r[k])]
  note = ''
  if not records:
    status = 'no metrics'
  elif bad:
    status, note = 'diverged', f'non-finite loss at step {bad[0]}'
  elif train_curve and train_curve[-1][1] > min(v for _, v in train_curve) + diverge_margin:
    low = min(v for _, v in train_curve)
    status = 'diverged'
    note = f'train loss rose from {low:.3f} to {train_curve[-1][1]:.3f}'
  elif step < planned:
    status, note = 'unfinished', f'step {step} of {planned}'
  else:
    status = 'finished'
  perplexity = _last(records, 'eval/perplexity')
  return RunSummary(
      workdir=str(workdir), row=model_label(model), column=dataset_label(config.get('data', {})),
      setup=(f'{model.get("arch")} T={train.get("seq_len")} B={train.get("batch_size")} '
             f'steps={planned}'),
      steps_planned=planned, step=step, status=status,
      eval_perplexity=float(perplexity) if _finite(perplexity) else None,
      eval_loss=eval_curve[-1][1] if eval_curve else None,
      train_loss=train_curve[-1][1] if train_curve else None,
      train_curve=train_curve, eval_curve=eval_curve, note=note,
      group=intervals.group_key(config),
      seeds=tuple(intervals.seeds_of(config).values()))
