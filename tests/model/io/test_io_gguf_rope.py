"""Llama 3.1 rope scaling in GGUF files (ropex.model.io.gguf_rope): llama.cpp's precomputed
``rope_freqs`` factors read back as transformers' ``llama3`` parameters, to transformers' logits
(the llama fixture, ``test_io_gguf.py``), or refused in one line."""

import os
import shutil

import numpy as np
import pytest

import repo_scripts
from ropex.errors import ConfigError
from ropex.model import io
from ropex.model.io import gguf as gguf_io
from ropex.model.io import gguf_rope

GGUF = os.path.join(os.path.dirname(__file__), '..', '..', 'fixtures', 'gguf')


def _load_converter():
  """The fixture generator's copy of llama.cpp's converter formula (one copy serves both)."""
  return repo_scripts.load('make_gguf_fixtures').converter_rope_freqs


_converter_factors = _load_converter()


def _llama3(factor, low, high, original):
  return {'rope_type': 'llama3', 'factor': factor, 'low_freq_factor': low,
          'high_freq_factor': high, 'original_max_position_embeddings': original}


# Meta's released values (config.json rope_scaling): Llama 3.1 8B/70B, Llama 3.2 1B, 3B.
RELEASED = {'llama3.1-8b': (500_000.0, 128, _llama3(8.0, 1.0, 4.0, 8192)),
            'llama3.2-1b': (500_000.0, 64, _llama3(32.0, 1.0, 4.0, 8192)),
            'llama3.2-3b': (500_000.0, 128, _llama3(32.0, 1.0, 4.0, 8192))}


@pytest.mark.parametrize('name', sorted(RELEASED))
def test_released_llama_factors_give_back_the_released_parameters(name):
  theta, dim, params = RELEASED[name]
  factors = _converter_factors(theta, dim, *(params[k] for k in (
      'factor', 'low_freq_factor', 'high_freq_factor', 'original_max_position_embeddings')))
  assert 2 <= ((factors > 1) & (factors < params['factor'])).sum()   # the fitted band
  assert gguf_rope.llama3_rope_scaling(factors, theta, dim) == params


def test_scaled_band_is_the_same_scaling_and_comes_back_with_low_freq_factor_1():
  """(L0, low, high) scaled together give the same factors: the representative has low 1,
  unless the file stores original_context_length, which then fixes L0."""
  factors = _converter_factors(500_000.0, 128, 8.0, 2.0, 8.0, 16384)
  assert gguf_rope.llama3_rope_scaling(factors, 500_000.0, 128) == _llama3(8.0, 1.0, 4.0, 8192)
  assert gguf_rope.llama3_rope_scaling(factors, 500_000.0, 128, original=16384) == _llama3(
      8.0, 2.0, 8.0, 16384)


def test_llama_fixture_gets_its_checkpoint_rope_parameters():
  """One factor lies in the smoothing band here (head dim 16): high = 4 x low is the
  convention, which the checkpoint follows (test_io_gguf.py: transformers' logits within
  1e-4 and the same model block as the Hugging Face import)."""
  config = gguf_io.hf_config(gguf_io.Reader(os.path.join(GGUF, 'llama.gguf')))
  assert config['rope_scaling'] == _llama3(8.0, 1.0, 4.0, 64)


def test_all_ones_is_no_scaling():
  assert gguf_rope.llama3_rope_scaling(np.ones(8, np.float32), 10_000.0, 16) is None


def _tampered(tmp_path, k, value):
  """llama.gguf with factor k of rope_freqs set to value (the bytes patched in place)."""
  path = tmp_path / 'tampered.gguf'
  shutil.copyfile(os.path.join(GGUF, 'llama.gguf'), path)
  t = gguf_io.Reader(str(path)).tensors[gguf_rope.TENSOR]
  with open(path, 'r+b') as f:
    f.seek(int(t.data_offset) + 4 * k)
    f.write(np.float32(value).tobytes())
  return str(path)


@pytest.mark.parametrize('k, value', [(1, 2.4422593 * 1.01), (0, 1.5), (7, 6.0), (3, 0.5)])
def test_tampered_rope_freqs_is_refused_in_one_line(tmp_path, k, value):
  """A smoothed factor moved by 1 %, a high frequency scaled, a low one off the plateau, a
  factor below 1: no llama3 scaling gives them, so nothing is imported."""
  path = _tampered(tmp_path, k, value)
  with pytest.raises(ConfigError) as err:
    io.load_model(path)
  message = str(err.value)
  assert 'rope_freqs.weight' in message and 'tampered.gguf' in message and '\n' not in message


def test_untampered_copy_is_accepted(tmp_path):
  """The patching itself changes nothing when it writes the stored value back."""
  stored = gguf_io.Reader(os.path.join(GGUF, 'llama.gguf')).tensor(gguf_rope.TENSOR)
  path = _tampered(tmp_path, 1, stored[1])
  assert gguf_io.hf_config(gguf_io.Reader(path))['rope_scaling'] == _llama3(8.0, 1.0, 4.0, 64)


def test_wrong_number_of_factors_is_refused():
  with pytest.raises(ConfigError, match=r'rope_freqs\.weight.*8 finite factors'):
    gguf_rope.llama3_rope_scaling(np.ones(4, np.float32) * 2, 10_000.0, 16, where='f.gguf')


class _WithOriginalContext(gguf_io.Reader):
  """llama.gguf as if it stored llama.rope.scaling.original_context_length = 32."""

  def field(self, key, default=None):
    if key == 'llama.rope.scaling.original_context_length':
      return 32
    return super().field(key, default)


def test_stored_original_context_length_fixes_the_representative():
  """L0 = 32 instead of the checkpoint's 64: low and high halve with it, the same scaling."""
  config = gguf_io.hf_config(_WithOriginalContext(os.path.join(GGUF, 'llama.gguf')))
  assert config['rope_scaling'] == _llama3(8.0, 0.5, 2.0, 32)
