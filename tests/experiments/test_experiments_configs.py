"""The paper's Table 2 configs: each file builds the ablation it names, at the paper's scale,
and its runlocal version keeps the same positional encoding."""
import os

import numpy as np
import pytest

from ropex.config import loading
from ropex.experiments import paper, run_summary
from ropex.model.config import ModelConfig
from ropex.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = os.path.join(ROOT, 'configs')
THETA = 10_000.0
D = 256  # Gemma 2B head dim


def load(spec):
  return loading.load(os.path.join(CONFIGS, spec))


def layer_pe(cfg):
  model = ModelConfig.from_config(cfg.model)
  pes = {layer.pe for layer in model.layers}
  assert len(pes) == 1  # every layer has the same encoding
  return model, pes.pop()


def rope_timescales(theta, denominator, chunks):
  return theta ** (2.0 * np.asarray(chunks, np.float64) / denominator)


# config spec -> (paper row, rotated chunks, timescales of those chunks)
TABLE2 = {
    'nope_2b.py': ('NoPE', [], []),
    'rope_2b.py': ('RoPE θ=10k', range(128), rope_timescales(THETA, D, range(128))),
    'rope_2b.py:theta=500000': ('RoPE θ=500k', range(128),
                                rope_timescales(500_000.0, D, range(128))),
    'prope_reversed_2b.py': ('0.75-RoPE reversed', range(32, 128),
                             rope_timescales(THETA, D, range(32, 128))),
    # NeoX partial: the leading 192 dims rotate, frequencies recomputed over 192.
    'partial_2b.py': ('0.75 partial (NeoX)', range(96), rope_timescales(THETA, 192, range(96))),
    'prope_2b.py:p=0.25': ('0.25-RoPE', range(32), rope_timescales(THETA, D, range(32))),
    'prope_2b.py': ('0.75-RoPE', range(96), rope_timescales(THETA, D, range(96))),
}


@pytest.mark.parametrize('spec', list(TABLE2))
def test_table2_config_builds_its_encoding_at_paper_scale(spec):
  row, chunks, timescales = TABLE2[spec]
  cfg = load(spec)
  model, pe = layer_pe(cfg)
  assert list(pe.rotated_chunks()) == list(chunks)
  if len(chunks):
    np.testing.assert_allclose(pe.timescales, timescales, rtol=1e-12)
    assert pe.layout == 'half'
  assert run_summary.model_label(cfg.model.to_dict()) == row
  # Gemma 2B from scratch: 18 layers, d 2048, MQA, head dim 256, vocab 256128.
  assert (model.num_layers, model.embed_dim, model.num_heads, model.num_kv_heads,
          model.head_dim, model.hidden_dim, model.vocab_size) == (
              18, 2048, 8, 1, 256, 16_384, 256_128)
  assert (cfg.train.seq_len, cfg.train.batch_size, cfg.train.steps) == (8192, 512, 10_000)
  assert cfg.train.loss_chunk > 0 and cfg.train.seq_len % cfg.train.loss_chunk == 0
  assert (model.dtype, model.param_dtype, model.remat) == ('bfloat16', 'float32', 'full')
  assert (cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor) == (1, -1, 1)
  assert cfg.data.source == 'tfds' and cfg.data.tfds_name == 'wikipedia/20230601.en'
  assert cfg.data.tokenizer == 'sentencepiece'


def test_the_seven_configs_are_exactly_the_papers_rows():
  assert sorted(row for row, _, _ in TABLE2.values()) == sorted(paper.PAPER_TABLE2)


@pytest.mark.parametrize('spec', list(TABLE2))
def test_flan_and_runlocal_keep_the_encoding(spec):
  sep = ',' if ':' in spec else ':'
  paper = layer_pe(load(spec))[1]
  flan = load(spec + sep + 'data=flan')
  assert layer_pe(flan)[1] == paper
  assert run_summary.dataset_label(flan.data.to_dict()) == 'flan'
  local = load(spec + sep + 'runlocal')
  model, pe = layer_pe(local)
  assert model.embed_dim == 128 and model.vocab_size == 512  # the tiny preset
  assert local.data.source == 'synthetic' and local.train.loss_chunk == 0
  assert pe.kind == paper.kind
  if pe.kind != 'none':
    assert pe.max_wavelength == paper.max_wavelength
  assert run_summary.model_label(local.model.to_dict()) == run_summary.model_label(
      load(spec).model.to_dict())


def test_runlocal_prope_keeps_the_highest_frequencies_of_its_head_dim():
  model, pe = layer_pe(load('prope_2b.py:p=0.75,runlocal'))
  half = model.head_dim // 2  # tiny: head dim 32 -> 16 chunks, 12 rotated
  assert pe.rotated_chunks() == tuple(range(int(0.75 * half)))
  model, pe = layer_pe(load('prope_reversed_2b.py:runlocal'))
  assert pe.rotated_chunks() == tuple(range(half - int(0.75 * half), half))


@pytest.mark.parametrize('spec, message', [
    ('prope_reversed_2b.py:data=c4', "data='c4' is not known; allowed: wiki, flan"),
    ('partial_2b.py:q=1', "'q' is not known; allowed: p, theta, data, runlocal"),
    ('paper_table2.py', 'has no get_config'),
])
def test_bad_arguments_name_the_field(spec, message):
  with pytest.raises(ConfigError, match=message.replace('(', r'\(').replace(')', r'\)')):
    load(spec)


def test_paper_data_columns_match_config_base():
  assert set(paper.PAPER_DATA) == set(paper.DATASET_TITLES)
