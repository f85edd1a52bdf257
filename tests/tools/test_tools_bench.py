"""`ropex.tools.bench`: the FLOPs formula and the harness's output (speed is never asserted)."""
import json
import pathlib
import subprocess
import sys

import pytest

from ropex.model.config import ModelConfig
from ropex.tools import bench, bench_report, flops
from ropex.errors import ConfigError


def test_model_flops_formula_golden_for_peer():
  # peer: L=4, d=256, H=4 (MHA), hd=64, F=1024, V=32000, batch 8 x seq 256, by hand:
  # non-embedding N = 4 * (4*256*4*64 + 3*256*1024 + 2*256) + 256 = 4 * 1_049_088 + 256
  #   = 4_196_608; matmul params N + V*d = 4_196_608 + 8_192_000 = 12_388_608;
  # causal attention per token 4 * 12*4*64 * (256+1)/2 = 1_579_008;
  # FLOPs = 8*256 * (6 * 12_388_608 + 1_579_008) = 2048 * 75_910_656
  config = bench.experiment_config('peer')
  cfg = ModelConfig.from_config(config.model)
  assert flops.model_flops_per_step(cfg, 8, 256) == 155_465_023_488
  small = bench.experiment_config('small', 'bfloat16')
  assert (small.train.batch_size, small.train.seq_len, small.model.dtype) == (4, 512, 'bfloat16')
  assert small.model.pe.kind == 'rope' and small.model.pe.max_wavelength == 10_000


@pytest.fixture
def tiny_bench(monkeypatch):
  monkeypatch.setitem(bench.BENCH_CONFIGS, 'tiny',
                      bench.BenchConfig('tiny', batch_size=8, seq_len=32, dtypes=('float32',)))
  return 'tiny'


def test_harness_reports_consistent_figures(tiny_bench, tmp_path):
  results = bench.run([tiny_bench], steps=2, warmup=1, pe_rounds=0, pipeline_seconds=0.2,
                      out=str(tmp_path), profile=True)
  kinds = [r['kind'] for r in results]
  assert kinds == ['machine', 'peak', 'step', 'pipeline']
  step = results[2]
  # each part says when it finished, in the order they ran; the step after its 2 timed steps
  elapsed = [r['elapsed_s'] for r in results]
  assert elapsed == sorted(elapsed) and elapsed[2] - elapsed[1] >= 2 * step['step_s_min']
  for key in ('step_s_median', 'tokens_per_s', 'model_flops_per_step', 'mfu', 'peak_flops',
              'compiler_flops_per_step', 'peak_rss_bytes'):
    assert key in step
  # VmHWM after a step holds at least the step's own buffers (XLA's count).
  assert step['peak_rss_bytes'] >= step['xla_buffers_bytes']
  assert step['tokens_per_s'] == pytest.approx(8 * 32 / step['step_s_median'])
  assert step['mfu'] == pytest.approx(
      step['model_flops_per_step'] / step['step_s_median'] / step['peak_flops'])
  # The compiler's count of the (unrolled) step is the model's matmuls plus AdamW, norms and
  # softmax: close to the formula, never below the matmuls it must execute.
  assert 0.9 < step['compiler_over_model_flops'] < 1.6
  # The profile files every traced thunk under one category (shares of the thunk time).
  assert abs(sum(step['profile']['share'].values()) - 1.0) < 1e-9
  assert step['profile']['seconds_per_step']['matmul'] > 0
  assert [r['kind'] for r in json.loads((tmp_path / 'bench.json').read_text())] == kinds
  pipe = results[3]
  assert pipe['ratio'] == pytest.approx(pipe['pipeline_tokens_per_s'] / pipe['trainer_tokens_per_s'])
  # The Markdown the performance page includes: the step's row carries this run's own figures.
  md = bench_report.render(results)
  row = next(line for line in md.splitlines() if line.startswith('| tiny | float32 |'))
  cells = [c.strip() for c in row.strip('|').split('|')]
  assert cells[2:6] == ['8 x 32', f'{step["step_s_median"]:.3f} ({step["step_s_min"]:.3f}–'
                        f'{step["step_s_max"]:.3f})', f'{step["tokens_per_s"]:.0f}',
                        f'{100 * step["mfu"]:.1f} %']
  assert sum(line.startswith('| tiny |') for line in md.splitlines()) == 2   # + its profile


@pytest.mark.slow
def test_pe_overhead_times_every_encoding(tiny_bench):
  pe = bench.pe_overhead(tiny_bench, rounds=1, steps_per_round=1, warmup=1)
  assert set(pe['over_nope']) == {'nope', 'rope', 'prope_0.25', 'prope_0.75'}
  assert pe['over_nope']['nope'] == 1.0
  assert all(v > 0 for v in pe['step_s_median'].values())


def test_unknown_config_is_a_clear_error():
  with pytest.raises(ConfigError, match="'huge' is not a benchmark config; allowed: peer, small"):
    bench.experiment_config('huge')
  out = subprocess.run([sys.executable, '-m', 'ropex.bench', '--configs=huge', '--json'],
                       capture_output=True, text=True, timeout=120)
  assert out.returncode == 2 and 'is not a benchmark config' in out.stderr
  assert 'Traceback' not in out.stderr


def test_the_performance_page_tables_are_the_committed_run_rendered():
  """docs/generated/bench_results.md (included by docs/performance.md) is exactly what
  bench_report renders from the committed JSON of the same run: no figure edited by hand, and
  the tables cannot drift from bench.json / scaling.json."""
  root = pathlib.Path(__file__).resolve().parents[2]
  results = json.loads((root / 'docs/figures/bench.json').read_text())
  scaling = json.loads((root / 'docs/figures/scaling.json').read_text())
  scaling.pop('machine')
  page = (root / 'docs/generated/bench_results.md').read_text()
  command = page.splitlines()[0].removeprefix('Written by `').removesuffix('`.')
  assert command.startswith('python -m ropex.bench ')
  assert bench_report.render(results + [dict(scaling, kind='scaling')], command) == page
