"""The demo's config loading (same as --config) and its comparison table."""

from ropex import demo
from ropex.config import loading


def test_load_config_passes_args_like_the_cli():
  c = loading.load('configs/tiny.py:pe=prope,p=0.25', '--run')
  assert c.model.pe.kind == 'prope' and c.model.pe.fraction == 0.25
  assert c.name == 'tiny_prope0.25'


def test_comparison_table_has_one_row_per_run_and_every_task():
  rows = [('tiny_nope', {'train/loss': 1.23456, 'eval/loss': 1.5e-4, 'eval/perplexity': 4.4817,
                         'eval/accuracy/copy_offset': 0.5, 'train/tokens_per_s': 9000.4}),
          ('tiny_rope', {'train/loss': 0.5, 'eval/accuracy/induction': 1.0})]
  lines = demo.comparison_table(rows).splitlines()
  assert lines[0].split() == ['run', 'train', 'loss', 'eval', 'loss', 'perplexity', 'acc',
                              'copy_offset', 'acc', 'induction', 'tokens/s']
  assert lines[2].split() == ['tiny_nope', '1.23', '0.00015', '4.482', '0.500', '-', '9000']
  assert lines[3].split() == ['tiny_rope', '0.5', '-', '-', '-', '1.000', '-']
