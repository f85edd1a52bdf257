r"""``python -m ropex.tools.gpu_check_report --workdir DIR [--peak FLOP/s] [--json]``: the table
``scripts/gpu_check.sh`` prints after its runs (one sub-directory of ``DIR`` per encoding).

Per run, from its ``config.json`` and ``metrics.jsonl``: tokens/s (the median of the logged
``train/tokens_per_s`` windows after the first, which may hold start-up work), MFU = tokens/s x
model FLOPs per token (:func:`ropex.tools.flops.model_flops_per_step`) / ``--peak`` (dense
bfloat16 FLOP/s of one device; 989e12 for an H100/H200 SXM), the first and last logged train
loss, and the last eval loss where one was logged.
"""

from __future__ import annotations

import json
import os
import statistics

from absl import flags

from ropex.config import loading
from ropex.errors import ConfigError
from ropex.model.config import ModelConfig
from ropex.tools import flops
from ropex.training import workdir as workdir_lib


def read_metrics(run_dir: str) -> list[dict]:
  path = os.path.join(run_dir, 'metrics.jsonl')
  if not os.path.exists(path):
    raise ConfigError(f'{run_dir} has no metrics.jsonl; give the --workdir of gpu_check.sh')
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def summarize(run_dir: str, peak: float) -> dict:
  """The figures of one run (see the module docstring)."""
  config = workdir_lib.load_config(run_dir)
  records = read_metrics(run_dir)
  train = [r for r in records if r.get('train/loss') is not None]
  if len(train) < 2:
    raise ConfigError(f'{run_dir}/metrics.jsonl has {len(train)} train records; at least 2 '
                      'are needed (first window skipped): run more steps')
  rates = [r['train/tokens_per_s'] for r in train[1:] if r.get('train/tokens_per_s')]
  tokens_per_s = statistics.median(rates)
  seq_len = int(config.train.seq_len)
  per_token = flops.model_flops_per_step(ModelConfig.from_config(config.model), 1,
                                         seq_len) / seq_len
  evals = [r['eval/loss'] for r in records if r.get('eval/loss') is not None]
  return {'run': os.path.basename(run_dir.rstrip('/')), 'name': config.name,
          'pe': config.model.pe.kind, 'dtype': config.model.dtype, 'seq_len': seq_len,
          'steps': train[-1]['step'], 'tokens_per_s': tokens_per_s,
          'model_flops_per_token': per_token, 'peak_flops': peak,
          'mfu': tokens_per_s * per_token / peak, 'first_loss': train[0]['train/loss'],
          'last_loss': train[-1]['train/loss'], 'eval_loss': evals[-1] if evals else None}


def define_flags() -> None:
  flags.DEFINE_string('workdir', None, 'Directory holding one run directory per encoding.')
  flags.DEFINE_float('peak', 989e12, 'Dense bfloat16 FLOP/s of one device.')
  flags.DEFINE_bool('json', False, 'One JSON object per run instead of a table.')
  flags.mark_flag_as_required('workdir')


def main(argv):
  del argv
  f = flags.FLAGS
  if f.peak <= 0:
    raise ConfigError(f'--peak {f.peak} must be positive (FLOP/s)')
  runs = sorted(d for d in os.listdir(f.workdir)
                if os.path.isdir(os.path.join(f.workdir, d)))
  if not runs:
    raise ConfigError(f'--workdir {f.workdir} holds no run directories')
  rows = [summarize(os.path.join(f.workdir, d), f.peak) for d in runs]
  if f.json:
    for r in rows:
      print(json.dumps(r))
    return
  print(f'{"run":6s} {"dtype":9s} {"T":>5s} {"steps":>5s} {"tokens/s":>10s} {"MFU":>6s} '
        f'{"loss first":>10s} {"loss last":>9s} {"eval loss":>9s}')
  for r in rows:
    ev = f'{r["eval_loss"]:9.4f}' if r['eval_loss'] is not None else f'{"n/a":>9s}'
    print(f'{r["run"]:6s} {r["dtype"]:9s} {r["seq_len"]:5d} {r["steps"]:5d} '
          f'{r["tokens_per_s"]:10.0f} {r["mfu"]:6.1%} {r["first_loss"]:10.4f} '
          f'{r["last_loss"]:9.4f} {ev}')
  print(f'MFU against {f.peak:.3g} FLOP/s (bfloat16 dense peak of one device); model FLOPs '
        f'{rows[0]["model_flops_per_token"] / 1e9:.3f} GFLOP/token')


if __name__ == '__main__':
  define_flags()
  loading.run(main, 'ropex.tools.gpu_check_report', config_flag=None)
