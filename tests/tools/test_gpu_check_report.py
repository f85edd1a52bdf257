"""`ropex.tools.gpu_check_report` (what scripts/gpu_check.sh prints): its arithmetic on a run
directory with known metrics, and configs/gpu_1x.py's size."""
import json
import subprocess
import sys

import pytest

from ropex.config import loading
from ropex.errors import ConfigError
from ropex.tools import gpu_check_report
from ropex.training import workdir


def _run_dir(path, records):
  config = loading.load('configs/gpu_1x.py:pe=rope,data=synthetic')
  path.mkdir()
  workdir.write_config(config, str(path), primary=True)
  (path / 'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in records))
  return str(path)


def test_gpu_1x_is_the_stated_model():
  c = loading.load('configs/gpu_1x.py:pe=nope')
  assert (c.model.dtype, c.model.attention_impl, c.train.seq_len) == ('bfloat16', 'auto', 8192)
  assert c.data.source == 'tfds' and c.model.pe.kind == 'none'
  assert loading.load('configs/gpu_1x.py:pe=prope,p=0.25').model.pe.fraction == 0.25
  with pytest.raises(ConfigError, match="data='c4' is not known; allowed: wiki, flan, synthetic"):
    loading.load('configs/gpu_1x.py:data=c4')


def test_report_arithmetic(tmp_path):
  records = [{'step': 10, 'train/loss': 9.0, 'train/tokens_per_s': 100.0},
             {'step': 20, 'train/loss': 8.0, 'train/tokens_per_s': 2000.0},
             {'step': 20, 'eval/loss': 7.5},
             {'step': 30, 'train/loss': 7.0, 'train/tokens_per_s': 3000.0},
             {'step': 40, 'train/loss': 6.0, 'train/tokens_per_s': 1000.0}]
  r = gpu_check_report.summarize(_run_dir(tmp_path / 'rope', records), 989e12)
  # gpu_1x by hand: matmul parameters 176_763_392 (non-embedding 45_625_856 + tied output
  # 256_128 x 512); attention per token 12 layers x 12 x 4 heads x 128 x (8192 + 1) / 2.
  per_token = 6 * 176_763_392 + 12 * 12 * 4 * 128 * 8193 / 2
  assert r['model_flops_per_token'] == pytest.approx(per_token)
  assert r['tokens_per_s'] == 2000.0   # median of the windows after the first
  assert r['mfu'] == pytest.approx(2000.0 * per_token / 989e12)
  assert (r['first_loss'], r['last_loss'], r['eval_loss'], r['steps']) == (9.0, 6.0, 7.5, 40)
  with pytest.raises(ConfigError, match='has 1 train records'):
    gpu_check_report.summarize(_run_dir(tmp_path / 'short', records[:1]), 989e12)


def test_report_cli_bad_workdir(tmp_path):
  out = subprocess.run([sys.executable, '-m', 'ropex.tools.gpu_check_report', '--workdir',
                        str(tmp_path)], capture_output=True, text=True, timeout=120)
  assert out.returncode == 2 and 'holds no run directories' in out.stderr
  assert 'Traceback' not in out.stderr
