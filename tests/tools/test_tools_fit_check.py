"""`python -m ropex.compile`: FLOP counting, the fit-check arithmetic (on CPU devices), XLA's
out-of-memory message, and the real AOT compile for TPU topologies through libtpu."""
import importlib.util
import json
import math
import os
import subprocess
import sys

from absl import flags
import jax
import jax.numpy as jnp
import pytest

from ropex.tools import fit_check as fit, flops as step_flops, tpu_topology
from ropex.training import loop, sharding
from ropex.config import loading
from ropex.experiments import sweep
from ropex.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GIB = 2 ** 30


def tiny(**train):
  cfg = loading.load(os.path.join(ROOT, 'configs', 'tiny.py'))
  cfg.train.update(train)
  return cfg


# --- FLOPs -----------------------------------------------------------------------------------

def test_jaxpr_flops_counts_matmuls_backward_remat_and_scan_trips():
  w1, w2, x = jnp.ones((64, 32)), jnp.ones((16, 64)), jnp.ones((32, 8))
  m1, m2 = 2 * 64 * 32 * 8, 2 * 16 * 64 * 8
  plain = lambda w1, w2: jnp.sum(w2 @ jnp.tanh(w1 @ x))
  remat = lambda w1, w2: jnp.sum(w2 @ jax.checkpoint(lambda w: jnp.tanh(w @ x))(w1))
  count = lambda f, *a: step_flops.jaxpr_flops(jax.make_jaxpr(f)(*a))
  assert count(plain, w1, w2) == m1 + m2
  # backward: dW2 (m2), d hidden (m2), dW1 (m1); remat recomputes w1 @ x once more (m1)
  assert count(jax.grad(plain, (0, 1)), w1, w2) == 2 * m1 + 3 * m2
  assert count(jax.grad(remat, (0, 1)), w1, w2) == 3 * m1 + 3 * m2
  scan = lambda c: jax.lax.scan(lambda c, _: (jnp.tanh(c @ jnp.ones((8, 8))), None), c, None,
                                length=5)[0]
  assert count(scan, x) == 5 * 2 * 32 * 8 * 8
  cond = lambda p, c: jax.lax.cond(p, lambda c: c @ jnp.ones((8, 8)), lambda c: c, c)
  assert count(cond, True, x) == 2 * 32 * 8 * 8


def test_model_flops_golden_for_tiny():
  cfg = tiny()
  V, L, D, N, K, H, F = 512, 2, 128, 4, 1, 32, 512  # the tiny preset
  assert (cfg.model.vocab_size, cfg.model.num_layers, cfg.model.embed_dim, cfg.model.num_heads,
          cfg.model.num_kv_heads, cfg.model.head_dim, cfg.model.hidden_dim) == (V, L, D, N, K, H, F)
  per_layer = N * D * H + 2 * K * D * H + N * H * D + 3 * D * F + 2 * D
  non_embedding = L * per_layer + D
  T, B = 128, 16
  attention = L * 12 * N * H * (T + 1) / 2  # causal: mean attended keys (T + 1) / 2
  assert fit.model_flops_per_step(cfg) == B * T * (6 * (non_embedding + V * D) + attention)
  cfg.model.sliding_window = 16  # mean of min(t + 1, 16) over t < 128
  windowed = L * 12 * N * H * (sum(range(1, 17)) + 112 * 16) / T
  assert fit.model_flops_per_step(cfg) == pytest.approx(
      B * T * (6 * (non_embedding + V * D) + windowed), rel=1e-12)


# --- the fit check on CPU devices (all of it except libtpu) ----------------------------------

@pytest.fixture(scope='module')
def cpu_result():
  """tiny's fit check on 4 CPU devices standing in for v5e:2x2 (everything but libtpu)."""
  return fit.fit_check(tiny(), tpu_topology.describe('v5e:2x2'), mfu=0.5,
                       devices=jax.devices()[:4])


def test_fit_check_figures_on_cpu_devices(cpu_result):
  r = cpu_result
  m = r['memory']
  assert r['per_chip_bytes'] == (m['arguments'] + m['outputs'] - m['aliased'] +
                                 m['temporaries'] + m['generated_code'])
  assert r['fits'] and r['hbm_bytes'] == 16 * GIB and r['num_chips'] == 4
  assert r['attention_impl'] == 'dense'  # auto on CPU devices, 128 positions
  assert r['mesh'] == {'data': 4, 'fsdp': 1, 'tensor': 1}
  params = 2 * (128 * 4 * 32 * 2 + 2 * 128 * 32 + 3 * 128 * 512 + 2 * 128) + 128 + 512 * 128
  assert r['parameter_bytes_per_chip'] == 4 * params  # float32, replicated over data
  assert 2 * r['parameter_bytes_per_chip'] <= r['optimizer_bytes_per_chip'] <= (
      2 * r['parameter_bytes_per_chip'] + 64)  # Adam mu, nu (+ step counters)
  assert r['batch_bytes_per_chip'] == 6 * 4 * 128 * 4  # 6 int32/float32 fields, 4 rows each
  assert m['arguments'] == pytest.approx(r['parameter_bytes_per_chip'] + r[
      'optimizer_bytes_per_chip'] + r['batch_bytes_per_chip'], rel=0.01)
  assert r['model_flops_per_step'] == fit.model_flops_per_step(tiny())
  # executed > model: full (masked) T x T attention scores, not the causal half
  assert r['model_flops_per_step'] < r['flops_per_step'] < 1.2 * r['model_flops_per_step']
  assert r['step_seconds'] == r['model_flops_per_step'] / (4 * 197e12 * 0.5)
  assert r['steps'] == tiny().train.steps
  assert r['hours_to_finish'] == pytest.approx(r['step_seconds'] * r['steps'] / 3600)
  json.dumps(r)  # --json prints this object
  text = fit.format_result(r)
  assert 'FITS' in text and f'{r["step_seconds"]:.2f} s/step' in text
  assert '  attention: dense, remat none, compute float32' in text


def test_fsdp_shards_parameters_and_optimizer_state(cpu_result):
  cfg = tiny()
  cfg.mesh.update(data=1, fsdp=-1)
  mesh = sharding.make_mesh(cfg, jax.devices()[:4])
  _, state, _ = loop.make_train_step(cfg, mesh)
  assert dict(mesh.shape) == {'data': 1, 'fsdp': 4, 'tensor': 1}
  # every matrix has an 'embed' axis (128, split 4 ways); only the norm scales stay whole
  norms = 4 * (2 * 2 * 128 + 128)
  whole = cpu_result['parameter_bytes_per_chip']
  assert fit.per_chip_bytes_of(state.params) == (whole - norms) / 4 + norms
  assert fit.per_chip_bytes_of(state.opt_state) <= 2 * ((whole - norms) / 4 + norms) + 64


OOM_SHORT = ('RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO '
             'temporaries (75.95G) exceeds available HBM (15.75G).')
OOM_LONG = '''RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran out of memory in memory space hbm. Used 20.50G of 15.75G hbm. Exceeded hbm capacity by 4.75G.

  Largest program allocations in hbm:

  1. Size: 2.00G
     Operator: op_name="jit(train_step)/attn/dot_general" source_file="layers.py" source_line=3
     Shape: f32[2,8,8192,8192]{3,2,1,0:T(8,128)}
     Allocation type: HLO temp
     ==========================

  2. Size: 512.00M
     Operator: op_name="jit(train_step)/mlp/gelu"
     Shape: bf16[2,8192,16384]{2,1,0:T(8,128)(2,1)}
     Allocation type: HLO temp
     ==========================
'''


def test_parse_oom_messages():
  short = fit.parse_oom(OOM_SHORT)
  assert short == {'required_bytes': int(75.95 * GIB), 'available_bytes': int(15.75 * GIB),
                   'allocations': []}
  long = fit.parse_oom(OOM_LONG)
  assert (long['required_bytes'], long['available_bytes']) == (int(20.5 * GIB),
                                                               int(15.75 * GIB))
  assert long['allocations'] == [
      {'bytes': 2 * GIB, 'operator': 'jit(train_step)/attn/dot_general',
       'shape': 'f32[2,8,8192,8192]{3,2,1,0:T(8,128)}'},
      {'bytes': 512 * 2 ** 20, 'operator': 'jit(train_step)/mlp/gelu',
       'shape': 'bf16[2,8192,16384]{2,1,0:T(8,128)(2,1)}'}]


def test_consumers_are_listed_largest_first():
  r = {'parameter_bytes_per_chip': 3 * GIB, 'optimizer_bytes_per_chip': 6 * GIB,
       'batch_bytes_per_chip': 1, 'memory': None, 'xla_temporaries_bytes': 40 * GIB,
       'largest_allocations': fit.parse_oom(OOM_LONG)['allocations']}
  assert [size for _, size in fit.consumers(r)] == [40 * GIB, 6 * GIB, 3 * GIB, 2 * GIB,
                                                    512 * 2 ** 20, 1]


def test_topology_names():
  t = tpu_topology.describe('v5e:16x16')
  assert (t.chip.hbm_bytes, t.chip.peak_bf16_flops, t.num_chips) == (16 * GIB, 197e12, 256)
  assert tpu_topology.describe('v4:8x8x8', num_slices=2).num_chips == 1024
  assert tpu_topology.describe('v5p:4x4x4').chip.hbm_bytes == 95 * GIB
  assert tpu_topology.describe('v6e:8x8').chip.peak_bf16_flops == 918e12
  for name, message in [('v9:2x2', 'unknown TPU; allowed chips: v4, v5e, v5p, v6e'),
                        ('v5e:2x2x2', 'must look like v5e:4x4'),
                        ('v4:8x8', 'must look like v4:4x4x4'), ('v5e:0x4', 'must look like')]:
    with pytest.raises(ConfigError, match=message):
      tpu_topology.describe(name)
  with pytest.raises(ConfigError, match='--num_slices=0 is not allowed; it must be an integer >= 1'):
    tpu_topology.describe('v5e:2x2', num_slices=0)


def run_cli(*args):
  return subprocess.run([sys.executable, '-m', 'ropex.compile', *args], capture_output=True,
                        text=True, timeout=900, cwd=ROOT)


def test_cli_rejects_a_bad_topology_before_compiling():
  out = run_cli('--config', 'configs/tiny.py', '--topology', 'v5e:3')
  assert out.returncode == 2 and "--topology='v5e:3' must look like v5e:4x4" in out.stderr


# --- real AOT compiles through libtpu ----------------------------------------------------------

def require_libtpu():
  assert importlib.util.find_spec('libtpu') is not None, (
      "AOT compilation for TPU needs libtpu: pip install -e '.[dev,tpu]' (make test installs it)")


def test_aot_compile_for_v5e_2x2_matches_the_cpu_figures(cpu_result):
  require_libtpu()
  out = run_cli('--config', 'configs/tiny.py', '--topology', 'v5e:2x2', '--json', '--mfu=0.5',
                '--config.model.attention_impl=dense')
  assert out.returncode == 0, out.stderr[-2000:]
  r = json.loads(out.stdout)
  cpu = cpu_result
  assert r['attention_impl'] == cpu['attention_impl'] == 'dense'
  assert r['fits'] is True and r['chip'] == 'v5e' and r['num_chips'] == 4
  m = r['memory']
  assert r['per_chip_bytes'] == (m['arguments'] + m['outputs'] - m['aliased'] +
                                 m['temporaries'] + m['generated_code']) < r['hbm_bytes']
  assert r['hbm_bytes'] == 16 * GIB
  for key in ('flops_per_step', 'model_flops_per_step', 'step_seconds',
              'parameter_bytes_per_chip', 'optimizer_bytes_per_chip', 'batch_bytes_per_chip'):
    assert r[key] == cpu[key], key
  # XLA counts each loop body once: fewer FLOPs than executed, per chip
  assert 0 < r['xla_flops_per_chip'] * r['num_chips'] < r['flops_per_step']


def test_aot_compile_that_does_not_fit_exits_1_naming_consumers():
  require_libtpu()
  args = ('--config', 'configs/tiny.py', '--topology', 'v5e:2x2',
          '--config.train.batch_size=256', '--config.train.seq_len=4096',
          '--config.model.attention_impl=dense')  # XLA's out-of-memory path (dense scores)
  out = run_cli(*args, '--json')
  assert out.returncode == 1, out.stderr[-2000:]
  r = json.loads(out.stdout)
  assert r['fits'] is False and r['memory'] is None
  assert r['xla_temporaries_bytes'] > r['xla_available_bytes'] > 15 * GIB
  arguments = sum(r[f'{k}_bytes_per_chip'] for k in ('parameter', 'optimizer', 'batch'))
  assert r['per_chip_bytes'] == r['xla_temporaries_bytes'] + arguments > r['hbm_bytes']
  text = fit.format_result(r)  # what the CLI prints without --json
  assert 'DOES NOT FIT' in text and 'largest consumers per chip:' in text
  assert text.index('temporaries (activations, gradients, workspace; XLA total)') < text.index(
      'optimizer state:')


TABLE2 = ['nope_2b.py', 'rope_2b.py', 'rope_2b.py:theta=500000', 'prope_reversed_2b.py',
          'partial_2b.py', 'prope_2b.py:p=0.25', 'prope_2b.py']


@pytest.mark.slow
@pytest.mark.parametrize('spec', TABLE2)
def test_every_table2_config_fits_on_v5e_16x16(spec):
  require_libtpu()
  out = run_cli('--config', f'configs/{spec}', '--topology', 'v5e:16x16', '--json')
  assert out.returncode == 0, out.stdout + out.stderr[-2000:]
  r = json.loads(out.stdout)
  assert (r['batch_size'], r['seq_len'], r['num_chips']) == (512, 8192, 256)
  assert r['mesh'] == {'data': 1, 'fsdp': 256, 'tensor': 1}
  assert r['fits'] and r['per_chip_bytes'] < 16 * GIB
  assert math.isfinite(r['step_seconds']) and r['hours_to_finish'] > 0


def test_cli_modules_import_without_defining_flags():
  # The CLIs define their flags only when run, so one process can import all of them.
  from ropex.experiments import report  # pylint: disable=g-import-not-at-top
  assert report.define_flags and sweep.define_flags and fit.define_flags
  assert not {'topology', 'launcher', 'diverge_margin'} & set(flags.FLAGS)


SPLASH_LOWERING = r'''
import json, os
from ropex.config import loading
from ropex.model import platform
from ropex.tools import fit_check, tpu_topology
from ropex.training import loop, sharding
config = loading.load('configs/tiny.py')
config.model.update(attention_impl='auto', head_dim=128)
devices = tpu_topology.compile_devices(tpu_topology.describe('v5e:2x2'))
step, state, batch = loop.make_train_step(config, sharding.make_mesh(config, devices))
with platform.target('tpu'):
  hlo = step.trace(state, batch).lower().as_text()
print(json.dumps({'impls': fit_check.attention_impls(config, 'tpu'),
                  'kernels': hlo.count('tpu_custom_call'), 'shard_map': 'shard_map' in hlo}))
'''


def test_splash_attention_lowers_to_tpu_kernels_for_v5e():
  """auto on TPU is the Pallas splash kernel, lowered (not interpreted) for v5e: the forward
  and the two backward kernels (dq, dkv) appear as TPU custom calls in the train step."""
  require_libtpu()
  out = subprocess.run([sys.executable, '-c', SPLASH_LOWERING], capture_output=True, text=True,
                       timeout=600, cwd=ROOT)
  assert out.returncode == 0, out.stderr[-3000:]
  r = json.loads(out.stdout.strip().splitlines()[-1])
  assert r['impls'] == ['splash'] and r['kernels'] >= 3


IMPORTS = r'''
import os, sys
import ropex, ropex.tools.fit_check, ropex.tools.fit_check, ropex.train, ropex.training.loop
import ropex.evaluation.suite, ropex.analysis.pipeline, ropex.data.pipeline
import jax
print(sorted(m for m in sys.modules if m.split('.')[0] == 'tensorflow'),
      os.environ.get('JAX_PLATFORMS'), jax.config.jax_platforms)
'''


def test_importing_ropex_sets_no_platform_and_imports_no_tensorflow():
  env = {k: v for k, v in os.environ.items() if k != 'JAX_PLATFORMS'}
  out = subprocess.run([sys.executable, '-c', IMPORTS], capture_output=True, text=True,
                       timeout=300, cwd=ROOT, env=env)
  assert out.returncode == 0, out.stderr[-2000:]
  assert out.stdout.split() == ['[]', 'None', 'None']
