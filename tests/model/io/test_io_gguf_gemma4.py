"""Gemma 4 GGUF import (ropex.model.io.gguf_layers): tests/fixtures/gguf/gemma4.gguf, written from
the Hugging Face Gemma 4 fixture the way llama.cpp's converter does (scripts/make_gguf_fixtures.py:
per-layer arrays, K as V on the full layers, KV-shared layers, double-wide MLP, per-layer inputs,
proportional RoPE as rope_freqs), gives transformers' logits; files it cannot express are refused
in one line."""

import os
import shutil

import gguf
import jax.numpy as jnp
import numpy as np
import pytest

import cli_runs
import repo_scripts
from ropex import model as model_lib
from ropex.errors import ConfigError
from ropex.model import io
from ropex.model.config import ModelConfig
from ropex.model.io import gguf as gguf_io

ROOT = os.path.join(os.path.dirname(__file__), '..', '..', 'fixtures')
HF, GGUF = os.path.join(ROOT, 'hf', 'gemma4'), os.path.join(ROOT, 'gguf', 'gemma4.gguf')


def _flat(tree, prefix=()):
  for k, v in tree.items():
    if isinstance(v, dict):
      yield from _flat(v, prefix + (k,))
    else:
      yield '/'.join(prefix + (k,)), np.asarray(v)


def test_gemma4_gguf_gives_transformers_logits_and_the_checkpoint():
  """transformers' golden logits (tests/fixtures/hf/gemma4/golden.npz) within 1e-4; every
  parameter and every model field equal to the Hugging Face import's (nothing hard-coded
  differs: Gemma 4 stores its layer schedule, and its norms are not shifted)."""
  ours = io.load_model(GGUF)
  theirs = io.load_model(HF)
  golden = np.load(os.path.join(HF, 'golden.npz'))
  logits = np.asarray(model_lib.Transformer(ours.cfg).apply({'params': ours.params},
                                                            jnp.asarray(golden['input_ids'])))
  assert np.abs(logits - golden['logits']).max() < 1e-4
  a, b = dict(_flat(ours.params)), dict(_flat(theirs.params))
  assert a.keys() == b.keys()
  for name in a:
    np.testing.assert_array_equal(a[name], b[name], err_msg=name)
  assert {k for k in theirs.model if ours.model.get(k) != theirs.model.get(k)} == set()
  assert ours.source['format'] == 'gguf' and ours.source['quantization'] == 'F32'


def test_describe_reads_the_layer_schedule_from_the_metadata():
  block, source = io.read_model(GGUF)
  cfg = ModelConfig.from_config(block)
  assert source['family'] == 'gemma4' and cfg.num_layers == 4
  assert [spec.window for spec in cfg.layers] == [8, 0, 8, 0]
  assert [cfg.attention_shape(spec) for spec in cfg.layers] == [(2, 16), (1, 32)] * 2


def test_gemma4_vocabulary_without_merges_is_not_rebuilt_and_generate_says_so_in_one_line():
  """The fixture's stand-in 'gemma4' vocabulary (SentencePiece pieces, no tokenizer.ggml.merges:
  the Hugging Face fixture has no tokenizer.json) cannot be rebuilt as llama.cpp's merge-ranked
  BPE: the import has no tokenizer, its source says why, and generate stops with that reason
  in one line naming the field (a 'gemma4' vocabulary with merges: test_io_gguf_sp_bpe.py)."""
  imported = io.load_model(GGUF)
  assert imported.tokenizer is None and imported.tokenizer_path is None
  assert "tokenizer.ggml.model='gemma4' has no tokenizer.ggml.merges" in imported.source[
      'tokenizer']
  r = cli_runs.run_module('ropex.generate', f'--model={GGUF}', '--prompt=hi')
  lines = [x for x in r.stderr.splitlines() if x.startswith('ropex.generate: ')]
  assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr[-1500:]
  assert len(lines) == 1 and "'gemma4' has no tokenizer.ggml.merges" in lines[0], r.stderr[-1500:]


def _patched(tmp_path, key, index, value):
  """gemma4.gguf with element ``index`` of the array metadata ``key`` set to ``value`` (patched
  in place through gguf's own reader, as llama.cpp's gguf_set_metadata does)."""
  path = tmp_path / 'tampered.gguf'
  shutil.copyfile(GGUF, path)
  field = gguf.GGUFReader(str(path), 'r+').get_field(key)
  field.parts[field.data[index]][0] = value
  field.parts[field.data[index]].flush()
  return str(path)


def _patched_rope_freqs(tmp_path, k, value):
  path = tmp_path / 'tampered.gguf'
  shutil.copyfile(GGUF, path)
  t = gguf_io.Reader(str(path)).tensors['rope_freqs.weight']
  with open(path, 'r+b') as f:
    f.seek(int(t.data_offset) + 4 * k)
    f.write(np.float32(value).tobytes())
  return str(path)


TAMPERED = {   # what is changed: (key, index, value), a text the one-line refusal must hold
    'last layer sliding': (('gemma4.attention.sliding_window_pattern', 3, True),
                           'makes the last layer sliding'),
    'a full layer made sliding': (('gemma4.attention.sliding_window_pattern', 1, True),
                                  'differs between sliding_attention layers'),
    'one full layer with other kv heads': (('gemma4.attention.head_count_kv', 3, 2),
                                           'differs between full_attention layers'),
    'a KV-shared layer not doubled': (('gemma4.feed_forward_length', 3, 96),
                                      'doubled on the 2 KV-shared layers'),
}


@pytest.mark.parametrize('case', sorted(TAMPERED))
def test_tampered_metadata_is_refused_in_one_line(tmp_path, case):
  (key, index, value), text = TAMPERED[case]
  path = _patched(tmp_path, key, index, value)
  with pytest.raises(ConfigError) as err:
    io.read_model(path)
  message = str(err.value)
  assert text in message and 'tampered.gguf' in message and '\n' not in message, message


@pytest.mark.parametrize('k, value', [(9, 2.0), (10, 1.0), (0, 1e30), (5, np.inf)])
def test_tampered_rope_freqs_is_refused_in_one_line(tmp_path, k, value):
  """A factor neither 1 nor 1e30, a rotated pair after an unrotated one, none rotated at
  first: not the converter's proportional-RoPE factors."""
  with pytest.raises(ConfigError, match=r"tampered\.gguf: tensor 'rope_freqs\.weight' is not"):
    io.read_model(_patched_rope_freqs(tmp_path, k, value))


def _converter_rope_freqs():
  """The fixture generator's copy of llama.cpp's Gemma4Model.generate_extra_tensors."""
  return repo_scripts.load('make_gguf_fixtures').gemma4_rope_freqs


@pytest.mark.parametrize('k, value', [(4, 1.0), (3, 1e30)])
def test_other_rope_freqs_give_the_factor_the_converter_wrote_them_for(tmp_path, k, value):
  """One rotated pair more or fewer is another partial_rotary_factor, not a tampering: the
  one read back makes the converter write exactly the stored factors."""
  path = _patched_rope_freqs(tmp_path, k, value)
  config = gguf_io.hf_config(gguf_io.Reader(path))
  p = config['rope_parameters']['full_attention']['partial_rotary_factor']
  assert p != 0.25
  np.testing.assert_array_equal(_converter_rope_freqs()(config),
                                gguf_io.Reader(path).tensor('rope_freqs.weight'))


def test_patching_writes_back_unchanged(tmp_path):
  """The patching itself is not what is refused: writing the stored values back imports."""
  path = _patched(tmp_path, 'gemma4.attention.sliding_window_pattern', 1, False)
  assert gguf_io.hf_config(gguf_io.Reader(path)) == gguf_io.hf_config(gguf_io.Reader(GGUF))
  path = _patched_rope_freqs(tmp_path, 3, 1.0)
  assert gguf_io.hf_config(gguf_io.Reader(path)) == gguf_io.hf_config(gguf_io.Reader(GGUF))


class _WithExperts(gguf_io.Reader):
  """gemma4.gguf as if it stored gemma4.expert_count = 8 (Gemma 4's mixture-of-experts size)."""

  def field(self, key, default=None):
    return 8 if key == 'gemma4.expert_count' else super().field(key, default)


def test_mixture_of_experts_is_refused_in_one_line():
  with pytest.raises(ConfigError, match=r'gemma4\.expert_count=8 \(mixture-of-experts'):
    gguf_io.hf_config(_WithExperts(GGUF))


def test_sliding_layer_without_v_is_refused_in_one_line():
  """K as V exists on full layers only (transformers' attention_k_eq_v)."""
  reader = gguf_io.Reader(GGUF)
  del reader.tensors['blk.0.attn_v.weight']
  with pytest.raises(ConfigError, match=r'tensor blk\.0\.attn_v\.weight is missing; allowed: K '):
    gguf_io.hf_config(reader)
