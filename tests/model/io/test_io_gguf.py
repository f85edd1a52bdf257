"""GGUF import (ropex.model.io.gguf) against the Hugging Face fixtures the GGUF files were made from
(scripts/make_gguf_fixtures.py, llama.cpp's conversion conventions): transformers' logits, the
same parameters, the same tokenizer, quantisation within its bound, bad files in one line."""

import os
import shutil
import tempfile

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

import cli_runs
from ropex import model as model_lib
from ropex.errors import ConfigError
from ropex.model import io
from ropex.model.config import ModelConfig

import gguf  # noqa: F401  an install requirement (setup.cfg): its absence fails here
from ropex.model.io import gguf as gguf_io  # noqa: E402  pylint: disable=wrong-import-position

ROOT = os.path.join(os.path.dirname(__file__), '..', '..', 'fixtures')
HF, GGUF = os.path.join(ROOT, 'hf'), os.path.join(ROOT, 'gguf')


def _golden(family):
  return np.load(os.path.join(HF, family, 'golden.npz'))


def _logits(cfg, params, tokens):
  return np.asarray(model_lib.Transformer(cfg).apply({'params': params}, jnp.asarray(tokens)))


@pytest.mark.parametrize('family', ['llama', 'qwen2', 'qwen3', 'gemma'])
def test_float32_gguf_gives_transformers_logits(family):
  imported = io.load_model(os.path.join(GGUF, f'{family}.gguf'))
  golden = _golden(family)
  assert np.abs(_logits(imported.cfg, imported.params, golden['input_ids'])
                - golden['logits']).max() < 1e-4
  assert imported.source['format'] == 'gguf' and imported.source['quantization'] == 'F32'


# Fields llama.cpp does not store and derives by its own rule, where the fixtures chose otherwise
# on purpose: Gemma 2's attention scale (hidden/heads only for the 27B size; fixture: 16 with
# head_dim 32) and Gemma 3's layer schedule (period 6 with local θ 10k: the fixture's 3 layers
# are all sliding; fixture: sliding, global, sliding).
SCHEDULE = {'layer_pattern', 'layer_types', 'sliding_window', 'pe'}
HARD_CODED = {'gemma2': {'query_pre_attn_scalar'}, 'gemma3': SCHEDULE}


def _schedule(cfg):
  return [(spec.window, spec.pe.max_wavelength) for spec in cfg.layers]


@pytest.mark.parametrize('family', ['llama', 'qwen2', 'qwen3', 'gemma', 'gemma2', 'gemma3'])
def test_float32_gguf_holds_the_checkpoint_exactly(family):
  """Every parameter equals the Hugging Face import's (norms up to the float32 rounding of
  llama.cpp's +1 / ropex's -1); every model field too, except the ones llama.cpp hard-codes,
  which follow llama.cpp's rule; with the checkpoint's values for those, transformers' logits."""
  ours = io.load_model(os.path.join(GGUF, f'{family}.gguf'))
  theirs = io.load_model(os.path.join(HF, family))
  flat = lambda t: {'/'.join(map(str, k)): np.asarray(v) for k, v in _flat(t)}
  a, b = flat(ours.params), flat(theirs.params)
  assert a.keys() == b.keys()
  for name in a:
    np.testing.assert_allclose(a[name], b[name], atol=1.2e-7 if 'norm' in name else 0, rtol=0,
                               err_msg=name)
  differing = {k for k in theirs.model if ours.model.get(k) != theirs.model.get(k)}
  assert differing <= HARD_CODED.get(family, set()) and (differing or family not in HARD_CODED)
  if family == 'gemma2':
    assert (ours.model.query_pre_attn_scalar, theirs.model.query_pre_attn_scalar) == (32, 16)
  if family == 'gemma3':
    assert _schedule(ours.cfg) == [(8, 10_000.0)] * 3
    assert _schedule(theirs.cfg) == [(8, 10_000.0), (0, 1_000_000.0), (8, 10_000.0)]
  golden = _golden(family)
  np.testing.assert_allclose(_logits(theirs.cfg, ours.params, golden['input_ids']),
                             golden['logits'], atol=1e-4, rtol=0)


def _flat(tree, prefix=()):
  for k, v in tree.items():
    if isinstance(v, dict):
      yield from _flat(v, prefix + (k,))
    else:
      yield prefix + (k,), v


# Per 32-value block with largest magnitude a: Q8_0 stores d = a/127 (float16) and
# round(x/d) in [-127, 127]: |error| <= d/2 + 127 |d - f16(d)| <= a (0.5 + 127 * 2**-11) / 127.
# Q5_0 / Q4_0 store d = -m/16 / -m/8 (m: the signed extreme) and levels [-16, 15] / [-8, 7]:
# the opposite extreme may clip by one step, |error| <= a/16 / a/8 (+ float16 slack).
BOUND = {'Q8_0': (0.5 + 127 * 2 ** -11) / 127, 'Q5_0': 1 / 16 * (1 + 2 ** -9),
         'Q4_0': 1 / 8 * (1 + 2 ** -9)}


@pytest.mark.parametrize('name', ['qwen3.Q8_0', 'qwen3.Q5_0', 'qwen3.Q4_0', 'gemma.Q8_0'])
def test_quantised_tensors_within_their_format_bound(name):
  family, quant = name.split('.')
  reader = gguf_io.Reader(os.path.join(GGUF, f'{name}.gguf'))
  config = gguf_io.hf_config(reader)
  source = gguf_io.TensorSource(reader, config)
  float_weights = load_file(os.path.join(HF, family, 'model.safetensors'))
  checked = 0
  for hf_name in source.files:
    w = float_weights[hf_name]
    if w.ndim != 2:
      continue
    blocks = w.reshape(-1, 32)
    err = np.abs(source.get(hf_name).reshape(-1, 32) - blocks).max(-1)
    assert (err <= BOUND[quant] * np.abs(blocks).max(-1) + 1e-12).all(), hf_name
    checked += 1
  assert checked >= 7 * int(config['num_hidden_layers'])
  assert reader.quantization().startswith(quant)


@pytest.mark.parametrize('name, bound', [('qwen3.Q8_0', 0.25), ('gemma.Q8_0', 0.25)])
def test_q8_0_logits_stay_close(name, bound):
  """Measured, not derived: Q8_0 moves these tiny models' logits by 0.17 (qwen3) and 0.11
  (gemma) at most (|logits| up to ~8); the import is the dequantised float model."""
  imported = io.load_model(os.path.join(GGUF, f'{name}.gguf'))
  golden = _golden(name.split('.')[0])
  logits = _logits(imported.cfg, imported.params, golden['input_ids'])
  assert np.abs(logits - golden['logits']).max() < bound
  assert imported.source['quantization'] == 'Q8_0+F32'


def _rotate(x_NH, pos, pairs_C2, base=10_000.0):
  """RoPE of each head's chunks ``pairs_C2`` (dims (i, j) rotated by pos * base^(-2k/H))."""
  H = x_NH.shape[-1]
  angle = pos * base ** (-2 * np.arange(H // 2) / H)
  out = x_NH.copy()
  a, b = x_NH[:, pairs_C2[:, 0]], x_NH[:, pairs_C2[:, 1]]
  out[:, pairs_C2[:, 0]] = a * np.cos(angle) - b * np.sin(angle)
  out[:, pairs_C2[:, 1]] = a * np.sin(angle) + b * np.cos(angle)
  return out


def test_llama_qk_rows_pair_as_llama_cpp_rotates_and_are_unpermuted():
  """llama.cpp rotates Llama's q/k in adjacent pairs (2k, 2k+1), transformers in half-split
  pairs (k, k + H/2): the stored rows under adjacent rotation give transformers' attention
  scores; ropex's inverse permutation restores the checkpoint exactly."""
  import json  # pylint: disable=import-outside-toplevel
  reader = gguf_io.Reader(os.path.join(GGUF, 'llama.gguf'))
  with open(os.path.join(HF, 'llama', 'config.json')) as f:
    c = json.load(f)
  N, K, H = c['num_attention_heads'], c['num_key_value_heads'], c['head_dim']
  weights = load_file(os.path.join(HF, 'llama', 'model.safetensors'))
  hf_q, hf_k = (weights[f'model.layers.0.self_attn.{n}_proj.weight'] for n in 'qk')
  st_q, st_k = reader.tensor('blk.0.attn_q.weight'), reader.tensor('blk.0.attn_k.weight')
  np.testing.assert_array_equal(gguf_io.unpermute(st_q, N), hf_q)
  np.testing.assert_array_equal(gguf_io.unpermute(st_k, K), hf_k)
  half = np.stack([np.arange(H // 2), np.arange(H // 2) + H // 2], -1)
  adjacent = np.stack([np.arange(0, H, 2), np.arange(1, H, 2)], -1)
  x = np.random.default_rng(0).normal(size=(2, hf_q.shape[1]))
  scores = lambda q, k, pairs, n, m: np.einsum(
      'nh,nh->n', _rotate((q @ x[0]).reshape(n, H), 5, pairs)[:: n // m][:m],
      _rotate((k @ x[1]).reshape(m, H), 2, pairs))
  np.testing.assert_allclose(scores(st_q, st_k, adjacent, N, K), scores(hf_q, hf_k, half, N, K),
                             rtol=1e-5, atol=1e-6)
  assert not np.array_equal(st_q, hf_q)


@pytest.mark.parametrize('family', ['gemma', 'gemma2', 'gemma3'])
def test_tokenizer_rebuilt_from_the_gguf_vocabulary_equals_the_original(family):
  from ropex.data import tokenizers  # pylint: disable=import-outside-toplevel
  ours = io.load_model(os.path.join(GGUF, f'{family}.gguf')).tokenizer
  theirs = tokenizers.SentencePieceTokenizer(os.path.join(HF, family, 'tokenizer.model'))
  for text in ['hello world', ' leading space', 'Ünïcödé ✓ 日本', 'a\nb\t c  d', '<bos> x']:
    assert ours.encode(text) == theirs.encode(text)
    assert ours.decode(ours.encode(text)) == theirs.decode(theirs.encode(text))
  assert (ours.bos_id, ours.eos_id, ours.pad_id) == (theirs.bos_id, theirs.eos_id, theirs.pad_id)


@pytest.mark.parametrize('family, name', [('gemma', 'tokenizer.model'),
                                          ('qwen3', 'tokenizer.json')])
def test_rebuilt_tokenizer_writes_no_file_and_the_config_names_the_gguf(family, name, tmp_path,
                                                                        monkeypatch):
  """Importing a GGUF and using its tokenizer (the import's, the data pipeline's from the
  experiment config evaluate builds, the file export writes) leaves nothing in the temporary
  folder (each import used to leave a ropex-gguf-tokenizer-* folder there for good); the config
  names the .gguf as where the tokenizer comes from (data.tokenizer=gguf), and every one of
  them is the Hugging Face original's tokenizer."""
  from ropex.data import tokenizers  # pylint: disable=import-outside-toplevel
  from ropex.model.io import tokenizer as tokenizer_io  # pylint: disable=import-outside-toplevel
  (tmp_path / 'tmp').mkdir()
  monkeypatch.setattr(tempfile, 'tempdir', str(tmp_path / 'tmp'))
  path = os.path.join(GGUF, f'{family}.gguf')
  imported = io.load_model(path)
  config = io.experiment_config(imported, 64)
  assert (config.data.tokenizer, config.data.tokenizer_path) == ('gguf', os.path.abspath(path))
  file_name, data = tokenizer_io.file_of(config.data.tokenizer_path)
  (tmp_path / 'out').mkdir()
  (tmp_path / 'out' / file_name).write_bytes(data)
  theirs = tokenizer_io.load(os.path.join(HF, family, name))
  text = 'Hello world, ünïcödé ✓ 日本\n  two  spaces 12345'
  for ours in (imported.tokenizer, tokenizers.make_tokenizer(config.data)):
    assert ours.encode(text) == theirs.encode(text) and len(theirs.encode(text)) > 5
    assert (ours.bos_id, ours.eos_id, ours.vocab_size) == (theirs.bos_id, theirs.eos_id,
                                                           theirs.vocab_size)
  assert file_name == name
  assert tokenizer_io.load(str(tmp_path / 'out' / name)).encode(text) == theirs.encode(text)
  assert os.listdir(tmp_path / 'tmp') == []


def test_truncated_gguf_is_one_line_through_the_entry_points(tmp_path):
  data = open(os.path.join(GGUF, 'gemma.gguf'), 'rb').read()
  bad = tmp_path / 'cut.gguf'
  bad.write_bytes(data[:len(data) // 3])
  with pytest.raises(ConfigError, match='cut.gguf'):
    io.load_model(str(bad))
  for module, args in (('ropex.generate', ['--prompt=hi']), ('ropex.describe', [])):
    r = cli_runs.run_module(module, f'--model={bad}', *args)
    lines = [x for x in r.stderr.splitlines() if x.startswith(f'{module}: ')]
    assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr[-1500:]
    assert len(lines) == 1 and 'GGUF' in lines[0], r.stderr[-1500:]


def test_describe_names_the_quantisation(tmp_path):
  del tmp_path
  block, source = io.read_model(os.path.join(GGUF, 'qwen3.Q4_0.gguf'))
  assert source['quantization'] == 'Q4_0+F32' and ModelConfig.from_config(block).num_layers == 2
