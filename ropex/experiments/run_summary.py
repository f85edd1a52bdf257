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

from ropex import inputs, paths
from ropex.evaluation import intervals
from ropex.training.metrics import read_metrics




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


def _scaling_suffix(pe: Mapping[str, Any]) -> str:
  scaling = dict(pe.get('scaling') or {})
  kind = scaling.get('type') or 'none'
  if kind == 'none':
    return ''
  return f' {kind}' + (f'×{float(scaling["factor"]):g}' if scaling.get('factor') else '')


def pe_label(pe: Mapping[str, Any], head_dim: int = 256) -> str:
  """The paper's name for a ``model.pe`` block (θ shown when it is not the 10k default); other
  kinds are named by their encoding's own ``label()`` (built through the registry), or
  ``kind(field=value,...)`` when the block does not build."""
  kind = pe.get('kind')
  theta = float(pe.get('max_wavelength') or 10_000)
  suffix = ('' if theta == 10_000 else f' θ={_theta(theta)}') + _scaling_suffix(pe)
  if kind == 'none' and not pe.get('attn_temperature_tuning'):
    return 'NoPE'
  if kind == 'rope':
    return f'RoPE θ={_theta(theta)}' + _scaling_suffix(pe)
  if kind == 'prope':
    return f'{float(pe.get("fraction") or 0.75):g}-RoPE{suffix}'
  if kind == 'prope_reversed':
    return f'{float(pe.get("fraction") or 0.75):g}-RoPE reversed{suffix}'
  if kind == 'partial':
    return f'{float(pe.get("rotary_fraction") or 0.75):g} partial (NeoX){suffix}'
  if kind == 'proportional':
    return f'{float(pe.get("fraction") or 0.25):g}-RoPE proportional{suffix}'
  from ropex.model import positional  # pylint: disable=g-import-not-at-top
  try:
    return positional.from_config(_tuples(pe), head_dim).label() + _scaling_suffix(pe)
  except positional.ConfigError:
    fields = ','.join(f'{k}={v}' for k, v in sorted(pe.items())
                      if k not in ('kind', 'scaling') and v is not None)
    return f'{kind}({fields})' if fields else str(kind)


def _tuples(value):
  """JSON lists back to tuples (a config read from config.json)."""
  if isinstance(value, Mapping):
    return {k: _tuples(v) for k, v in value.items()}
  return tuple(value) if isinstance(value, list) else value


def model_label(model: Mapping[str, Any]) -> str:
  """The label of ``model.pe``; with a layer pattern, one label per layer type in the pattern
  (``local: RoPE θ=10k w=1024 / global: ...``)."""
  head_dim = int(model.get('head_dim') or 256)
  pattern = list(model.get('layer_pattern') or ())
  if not pattern:
    return pe_label(model.get('pe') or {}, head_dim)
  types = model.get('layer_types') or {}
  parts = []
  for name in dict.fromkeys(pattern):
    spec = types.get(name) or {}
    text = f'{name}: ' + pe_label(spec.get('pe') or model.get('pe') or {}, head_dim)
    if spec.get('window'):
      text += f' w={spec["window"]}'
    if spec.get('chunk_attention'):
      text += f' chunks={spec["chunk_attention"]}'
    parts.append(text)
  counts = '-'.join(f'{pattern.count(n)}' for n in dict.fromkeys(pattern))
  return ' / '.join(parts) + f' ({counts})'


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
  path = paths.path(workdir, 'workdir')
  config_path = path / 'config.json'
  if not config_path.exists():
    raise FileNotFoundError(f'{workdir} has no config.json: not a ropex run directory')
  with inputs.reading('run config', config_path, 'the config.json ropex.train writes'):
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
