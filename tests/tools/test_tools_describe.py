"""`python -m ropex.describe`: counts and per-layer PE summary without allocating anything."""
import json
import subprocess
import sys

import pytest

from ropex.tools import describe
from ropex.model.config import ModelConfig, model_block, pe_block


def run(*args):
  return subprocess.run([sys.executable, '-m', 'ropex.describe', *args], capture_output=True,
                        text=True, timeout=300)


def test_json_for_prope_2b_names_counts_and_rotated_chunks():
  out = run('--config', 'configs/prope_2b.py:p=0.25', '--json')
  assert out.returncode == 0, out.stderr
  d = json.loads(out.stdout)
  assert d['params_total'] == 2_506_434_560 and d['params_embedding'] == 524_550_144
  assert len(d['layers']) == 18
  assert all(l['pe_kind'] == 'prope' and l['rotated_chunks'] == list(range(32))
             for l in d['layers'])


def test_table_for_a_layer_schedule_and_bad_override():
  cfg = ModelConfig.from_config(model_block(
      'tiny', num_layers=4, layer_pattern=('local', 'global'),
      layer_types={'local': {'pe': pe_block('rope'), 'window': 64},
                   'global': {'pe': pe_block('prope_reversed', fraction=0.5)}}))
  d = describe.describe(cfg, 'sched')
  assert [l['pe_kind'] for l in d['layers']] == ['rope', 'prope_reversed'] * 2
  assert [l['window'] for l in d['layers']] == [64, 0] * 2
  assert d['layers'][1]['rotated_chunks'] == list(range(8, 16))
  table = describe.format_table(d)
  assert '8-15' in table and '0-15' in table and ' 64' in table
  bad = run('--config', 'configs/tiny.py', '--config.model.pe.kind=prope',
            '--config.model.pe.fraction=1.5')
  assert bad.returncode == 2
  assert 'model.pe.fraction=1.5 is not allowed; it must be a number in [0, 1]' in bad.stderr
  assert 'Traceback' not in bad.stderr


@pytest.mark.parametrize('chunks, text', [([], '-'), ([0, 1, 2, 5, 6, 9], '0-2, 5-6, 9')])
def test_chunk_ranges(chunks, text):
  assert describe._ranges(chunks) == text


def _describe_json(*args):
  out = run(*args, '--json')
  assert out.returncode == 0, out.stderr
  return json.loads(out.stdout)


def _rope_inv(theta, d=256, kept=None, factor=1.0):
  kept = d // 2 if kept is None else kept
  inv = [theta ** (-2 * k / d) / factor for k in range(kept)]
  return inv + [0.0] * (d // 2 - kept)


def _check(layer, kind, theta, window, inv, scaling=None, chunk=0):
  assert (layer['pe_kind'], layer['window'], layer['chunk_attention']) == (kind, window, chunk)
  if theta is not None:
    assert layer['max_wavelength'] == theta
    assert layer['scaling'] == (scaling or {'type': 'none'})
  assert layer['inv_freq'] == pytest.approx(inv, rel=1e-12)
  assert layer['attention_factor'] == 1.0 and layer['bias'] is None


def test_gemma3_schedule_layer_by_layer():
  d = _describe_json('--config', 'configs/gemma3_schedule.py')
  assert len(d['layers']) == 18
  for i, layer in enumerate(d['layers']):
    if i % 6 == 5:   # global: θ 1M, linear ×8 on the global layers only, full attention
      assert layer['type'] == 'global'
      _check(layer, 'rope', 1e6, 0, _rope_inv(1e6, factor=8.0), {'type': 'linear', 'factor': 8.0})
    else:            # local: θ 10k, window 1024, no scaling
      assert layer['type'] == 'local'
      _check(layer, 'rope', 1e4, 1024, _rope_inv(1e4))


def test_gemma4_schedule_layer_by_layer():
  d = _describe_json('--config', 'configs/gemma4_schedule.py')
  for i, layer in enumerate(d['layers']):
    if i % 6 == 5:   # global: proportional p = 0.25 (32 of 128 chunks), θ 1M
      _check(layer, 'proportional', 1e6, 0, _rope_inv(1e6, kept=32))
      assert layer['rotated_chunks'] == list(range(32))
    else:
      _check(layer, 'rope', 1e4, 1024, _rope_inv(1e4))
  d = _describe_json('--config', 'configs/gemma4_schedule.py:arch=tiny,window=512,'
                     'local_per_global=4')
  assert [l['type'] for l in d['layers']] == ['local'] * 4 + ['global']
  assert [l['window'] for l in d['layers']] == [512] * 4 + [0]
  assert d['layers'][4]['inv_freq'] == pytest.approx(_rope_inv(1e6, d=32, kept=4), rel=1e-12)


def test_llama4_irope_layer_by_layer():
  d = _describe_json('--config', 'configs/llama4_irope.py')
  assert len(d['layers']) == 18
  for i, layer in enumerate(d['layers']):
    if (i + 1) % 4 == 0:   # layers 4, 8, 12, 16 (1-based): NoPE, full attention, temperature
      _check(layer, 'none', None, 0, [0.0] * 128)
      assert (layer['attn_temperature_tuning'], layer['floor_scale'], layer['attn_scale']) == (
          True, 8192.0, 0.1)
    else:                  # RoPE θ 500k in chunks of 8192 positions
      _check(layer, 'rope', 5e5, 0, _rope_inv(5e5), chunk=8192)
      assert 'attn_temperature_tuning' not in layer


def test_rnope_swa_layer_by_layer():
  d = _describe_json('--config', 'configs/rnope_swa.py:arch=tiny')
  assert [l['type'] for l in d['layers']] == ['swa', 'swa', 'swa', 'nope']
  for layer in d['layers'][:3]:
    _check(layer, 'rope', 1e4, 4096, _rope_inv(1e4, d=32))
  _check(d['layers'][3], 'none', None, 0, [0.0] * 16)
  assert 'attn_temperature_tuning' not in d['layers'][3]


def test_describe_reports_length_dependent_scaling_bias_and_learned_params():
  flags = ('--config', 'configs/tiny.py', '--config.model.pe.scaling.type=dynamic_ntk',
           '--config.model.pe.scaling.factor=4', '--config.model.pe.scaling.original_max_position=64')
  at_train = _describe_json(*flags)          # train.seq_len = 128
  at_1k = _describe_json(*flags, '--seq_len=1024')
  for d, L in ((at_train, 128), (at_1k, 1024)):
    base = 1e4 * (4 * L / 64 - 3) ** (32 / 30)
    assert d['seq_len'] == L
    assert d['layers'][0]['inv_freq'] == pytest.approx(_rope_inv(base, d=32), rel=1e-12)
  cfg = ModelConfig.from_config(model_block(
      'tiny', pe=pe_block('learned_absolute', max_positions=256), num_layers=2,
      layer_pattern=('a', 'f'), layer_types={'a': {'pe': pe_block('alibi')},
                                             'f': {'pe': pe_block('fire')}}))
  d = describe.describe(cfg)
  alibi, fire = d['layers']
  assert (alibi['bias'], alibi['inv_freq'], alibi['pe_params']) == ('alibi', None, 0)
  assert fire['bias'] == 'fire' and fire['pe_params'] == 32 + 32 + 32 * 4 + 4 + 2
  assert d['input_pe']['pe_kind'] == 'learned_absolute'
  assert d['input_pe']['pe_params'] == 256 * 128
  from ropex import model  # pylint: disable=g-import-not-at-top
  assert d['pe_params_total'] == 256 * 128 + fire['pe_params']
  plain = ModelConfig.from_config(model_block('tiny', pe=pe_block('none'), num_layers=2))
  # The learned PE parameters are exactly what the model's tree adds over NoPE.
  assert d['params_total'] - model.count_params(plain)['params_total'] == d['pe_params_total']
  table = describe.format_table(d)
  assert 'bias alibi' in table and 'input embedding: learned_absolute (32,768 PE params)' in table
