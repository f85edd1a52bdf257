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
