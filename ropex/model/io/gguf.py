"""Reads a GGUF file (llama.cpp) through the ``gguf`` package: its metadata become the Hugging Face
``config.json`` the families reader understands (:mod:`ropex.model.io.hf_config`), its tensors,
dequantised to float32 (``gguf.quants.dequantize``: F32, F16, BF16, Q4_0, Q5_0, Q8_0, the
K-quants ...), the HF tensors the shared mapping (:mod:`ropex.model.io.hf_mapping`) consumes; so
adding a family is still one row of :mod:`ropex.model.io.hf_families` plus one row here
(:data:`ARCHS`). Tensor names come from llama.cpp's own table (``gguf.TensorNameMap``).

llama.cpp's conventions undone here (facts from its ``convert_hf_to_gguf.py`` and
``llama-model.cpp``):

* Gemma 1-3 norm weights are stored with the ``+1`` of ``x * (1 + w)`` already added (q/k norms
  too): 1 is subtracted.
* Llama's q/k rows are permuted from half-split to interleaved rotary pairs (``permute`` in the
  converter): the inverse permutation restores transformers' order. Qwen and Gemma are not.
* Fields llama.cpp hard-codes rather than stores: Gemma 2's sliding-window period 2, Gemma 3's
  period 6 and local θ 10k, and the attention scale of both (``hidden/heads`` for the 27B sizes
  — 46 / 62 layers — else the head dim).
* Llama 3.1-style rope scaling is stored as the converter's precomputed per-frequency factors
  (tensor ``rope_freqs``), not as parameters: transformers' ``llama3`` parameters are recovered
  from them and must reproduce them (:mod:`ropex.model.io.gguf_rope`), else the file is refused
  in one line.
* Gemma 4 (``gemma4``, llama.cpp's ``Gemma4Model`` converter, a ``Gemma3Model`` with
  ``norm_shift`` 0): norms stored as they are; the layer schedule, head dims, key/value heads,
  KV sharing and MLP widths as per-layer metadata arrays, K as V on full layers as an absent
  ``attn_v``, proportional RoPE as a ``rope_freqs`` tensor of 1 / 1e30 factors, the attention
  scale 1 hard-coded: all read back by :mod:`ropex.model.io.gguf_layers` (facts and sources
  there); mixture-of-experts layers are refused in one line.

Tensors are read one at a time with plain file reads at their offsets (``GGUFReader`` maps the
file for its metadata; mapped tensor pages would stay resident until the end of the import).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from ropex.errors import ConfigError
from ropex.model.io import gguf_rope

@dataclasses.dataclass(frozen=True)
class Arch:
  """A ``general.architecture``: its HF ``model_type`` and what llama.cpp hard-codes for it."""
  model_type: str
  hidden_act: str = 'silu'        # llama.cpp's graph for the architecture (never stored)
  norm_shift: float = 0.0         # added to every *norm.weight by the converter
  permute_qk: bool = False        # q/k rows permuted to interleaved pairs by the converter
  swa_period: int = 0             # sliding-window layer period llama.cpp hard-codes (0: none)
  local_theta: float = 0.0        # θ of the sliding layers llama.cpp hard-codes
  scale_27b_layers: int = 0       # layer count whose attention scale is hidden/heads
  per_layer: bool = False         # per-layer metadata arrays and proportional rope_freqs
                                  # (llama.cpp's Gemma 4 scheme, :mod:`gguf_layers`)


_GELU = 'gelu_pytorch_tanh'
ARCHS = {
    'llama': Arch('llama', permute_qk=True),
    'qwen2': Arch('qwen2'),
    'qwen3': Arch('qwen3'),
    'gemma': Arch('gemma', _GELU, norm_shift=1.0),
    'gemma2': Arch('gemma2', _GELU, norm_shift=1.0, swa_period=2, scale_27b_layers=46),
    'gemma3': Arch('gemma3_text', _GELU, norm_shift=1.0, swa_period=6, local_theta=10_000.0,
                   scale_27b_layers=62),
    'gemma4': Arch('gemma4_text', _GELU, per_layer=True),
}


def _gguf():
  try:
    import gguf  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ConfigError('reading .gguf files needs the gguf package (pip install '
                      '"gguf>=0.10,<1")') from None
  return gguf


class Reader:
  """An open GGUF file: metadata fields, tensors by their GGUF names (memory-mapped)."""

  def __init__(self, path: str):
    gguf = _gguf()
    try:
      self._r = gguf.GGUFReader(path, 'r')
    except (ValueError, OSError, KeyError, IndexError, EOFError) as e:
      raise ConfigError(f'--model={path!r} is not a readable GGUF file ({type(e).__name__}: '
                        f'{str(e).splitlines()[0][:120] if str(e) else "truncated"})') from None
    self.path = path
    self.tensors = {t.name: t for t in self._r.tensors}

  def field(self, key: str, default=None):
    """A metadata value; float32 numbers as the shortest decimal that is that float32
    (``1e-06``, not ``9.99999997e-07``: the value the writer meant)."""
    f = self._r.get_field(key)
    if f is None:
      return default
    value = f.contents()
    return float(str(np.float32(value))) if isinstance(value, float) else value

  def tensor(self, name: str) -> np.ndarray:
    """Float32 ``[out, in]`` (numpy order) of a GGUF tensor, dequantised."""
    gguf = _gguf()
    t = self.tensors[name]
    # read with a plain file read, not through the reader's memory map: pages of a map stay
    # resident (and count as this process's memory) until the map closes
    raw = np.fromfile(self.path, dtype=t.data.dtype, count=t.data.size,
                      offset=int(t.data_offset)).reshape(t.data.shape)
    data = gguf.quants.dequantize(raw, t.tensor_type)
    return np.asarray(data, np.float32).reshape(tuple(int(n) for n in reversed(t.shape)))

  def quantization(self) -> str:
    """The quantisation types of the file's tensors, most common first (e.g. ``Q4_K+F32``)."""
    counts: dict[str, int] = {}
    for t in self.tensors.values():
      counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
    return '+'.join(sorted(counts, key=lambda k: -counts[k]))


def arch_of(reader: Reader) -> tuple[str, Arch]:
  name = reader.field('general.architecture')
  if name not in ARCHS:
    raise ConfigError(f'{reader.path}: general.architecture={name!r} is not one ropex reads; '
                      f'allowed: {", ".join(ARCHS)}')
  return name, ARCHS[name]


def hf_config(reader: Reader) -> dict:
  """The Hugging Face ``config.json`` equivalent of the file's metadata."""
  name, arch = arch_of(reader)
  get = lambda key, default=None: reader.field(f'{name}.{key}', default)
  need = lambda key: _required(reader, f'{name}.{key}')
  hidden, heads, layers = int(need('embedding_length')), int(need('attention.head_count')), int(
      need('block_count'))
  head_dim = int(get('attention.key_length') or hidden // heads)
  first = lambda v: v[0] if isinstance(v, list) and v else v   # per-layer arrays: gguf_layers
  c = dict(model_type=arch.model_type, hidden_act=arch.hidden_act, hidden_size=hidden, num_hidden_layers=layers,
           intermediate_size=int(first(need('feed_forward_length'))), num_attention_heads=heads,
           num_key_value_heads=int(first(get('attention.head_count_kv')) or heads),
           head_dim=head_dim,
           rms_norm_eps=float(need('attention.layer_norm_rms_epsilon')),
           rope_theta=float(get('rope.freq_base') or 10_000.0),
           max_position_embeddings=int(get('context_length') or 0) or None,
           vocab_size=int(reader.tensors['token_embd.weight'].shape[-1]),
           tie_word_embeddings='output.weight' not in reader.tensors,
           bos_token_id=reader.field('tokenizer.ggml.bos_token_id'),
           eos_token_id=reader.field('tokenizer.ggml.eos_token_id'))
  for key, field in (('attn_logit_softcapping', 'attn_logit_softcapping'),
                     ('final_logit_softcapping', 'final_logit_softcapping')):
    if get(key) is not None:
      c[field] = float(get(key))
  if get('rope.scaling.type') not in (None, 'none'):
    c['rope_scaling'] = {'rope_type': str(get('rope.scaling.type')),
                         'factor': float(get('rope.scaling.factor'))}
  if arch.per_layer:
    from ropex.model.io import gguf_layers  # pylint: disable=g-import-not-at-top
    c.update(gguf_layers.hf_fields(reader, name, c))
  elif gguf_rope.TENSOR in reader.tensors:
    c.update(_rope_freqs(reader, name, c))
  if arch.swa_period:
    c.update(_sliding(reader, name, arch, layers, head_dim, hidden // heads))
  return c


def _rope_freqs(reader: Reader, name: str, c: dict) -> dict:
  """``rope_scaling`` (llama3) recovered from llama.cpp's ``rope_freqs`` factors
  (:mod:`ropex.model.io.gguf_rope`); a file that also states a scaling type is refused."""
  if 'rope_scaling' in c:
    raise ConfigError(f'{reader.path}: tensor {gguf_rope.TENSOR} and {name}.rope.scaling.type='
                      f'{c["rope_scaling"]["rope_type"]!r} both scale RoPE; allowed: one of them')
  original = reader.field(f'{name}.rope.scaling.original_context_length')
  scaling = gguf_rope.llama3_rope_scaling(
      reader.tensor(gguf_rope.TENSOR), c['rope_theta'], int(c['head_dim']),
      None if original is None else int(original), where=reader.path)
  return {} if scaling is None else {'rope_scaling': scaling}


def _sliding(reader: Reader, name: str, arch: Arch, layers: int, head_dim: int,
             per_head: int) -> dict:
  window = reader.field(f'{name}.attention.sliding_window')
  out = {'query_pre_attn_scalar': per_head if layers == arch.scale_27b_layers else head_dim}
  if not window:
    out['layer_types'] = ['full_attention'] * layers
    return out
  out['sliding_window'] = int(window)
  out['layer_types'] = ['full_attention' if (i + 1) % arch.swa_period == 0 else
                        'sliding_attention' for i in range(layers)]
  if arch.local_theta:
    out['rope_local_base_freq'] = arch.local_theta
  return out


def _required(reader: Reader, key: str):
  value = reader.field(key)
  if value is None:
    raise ConfigError(f'{reader.path}: metadata {key!r} is missing (a truncated or foreign '
                      'GGUF file)')
  return value


class TensorSource:
  """The HF tensors of a GGUF file (``files``: HF name -> the file; ``get``: float32 array),
  llama.cpp's conventions undone; what :func:`ropex.model.io.huggingface.iter_params` reads."""

  def __init__(self, reader: Reader, config: dict):
    gguf = _gguf()
    name, self.arch = arch_of(reader)
    self.reader, self.config = reader, config
    arch_enum = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == name)
    layers = int(config['num_hidden_layers'])
    self._names = _hf_names(gguf.get_tensor_name_map(arch_enum, layers), reader.tensors, layers)
    self.files = {hf: reader.path for hf in self._names}

  def get(self, hf_name: str) -> np.ndarray:
    w = self.reader.tensor(self._names[hf_name])
    if self.arch.norm_shift and hf_name.endswith('norm.weight'):
      w = w - np.float32(self.arch.norm_shift)
    if self.arch.permute_qk and hf_name.endswith(('q_proj.weight', 'k_proj.weight')):
      n = self.config['num_attention_heads' if 'q_proj' in hf_name else 'num_key_value_heads']
      w = unpermute(w, int(n))
    return w


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
  """llama.cpp's q/k row order: per head, half-split rotary pairs made interleaved."""
  return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(
      w.shape)


def unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
  """The inverse of :func:`permute`: transformers' row order."""
  return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(
      w.shape)


# HF names (with the 'model.' prefix the families reader strips) that llama.cpp's table maps
_HF_TEMPLATES = (
    'embed_tokens', 'norm', 'lm_head',
    'layers.{i}.input_layernorm', 'layers.{i}.post_attention_layernorm',
    'layers.{i}.pre_feedforward_layernorm', 'layers.{i}.post_feedforward_layernorm',
    'layers.{i}.self_attn.q_proj', 'layers.{i}.self_attn.k_proj', 'layers.{i}.self_attn.v_proj',
    'layers.{i}.self_attn.o_proj', 'layers.{i}.self_attn.q_norm', 'layers.{i}.self_attn.k_norm',
    'layers.{i}.mlp.gate_proj', 'layers.{i}.mlp.up_proj', 'layers.{i}.mlp.down_proj',
    'embed_tokens_per_layer', 'per_layer_model_projection', 'per_layer_projection_norm',
    'layers.{i}.per_layer_input_gate', 'layers.{i}.per_layer_projection',
    'layers.{i}.post_per_layer_input_norm', 'layers.{i}.layer_scalar')
_NO_SUFFIX = ('layer_scalar',)   # HF names without '.weight' (the converter appends it)


def hf_to_gguf_names(name_map, layers: int) -> dict[str, str]:
  """Every HF tensor name (``model.``-prefixed except ``lm_head``) -> its GGUF name, by
  llama.cpp's ``TensorNameMap`` for the architecture."""
  out = {}
  for template in _HF_TEMPLATES:
    for i in (range(layers) if '{i}' in template else [None]):
      base = template.format(i=i)
      hf = base if base == 'lm_head' else 'model.' + base
      if base.endswith(_NO_SUFFIX):
        mapped = name_map.get_name(hf + '.weight', try_suffixes=('.weight',))
        if mapped is not None:
          out[hf] = mapped
        continue
      for suffix in ('.weight', '.bias'):
        mapped = name_map.get_name(hf + suffix, try_suffixes=('.weight', '.bias'))
        if mapped is not None:
          out[hf + suffix] = mapped
  return out


def _hf_names(name_map, tensors, layers: int) -> dict[str, str]:
  """HF name -> GGUF name of the tensors the file holds; a GGUF tensor nothing maps is an
  error naming it."""
  out = {hf: g for hf, g in hf_to_gguf_names(name_map, layers).items() if g in tensors}
  unmapped = sorted(set(tensors) - set(out.values()) - {gguf_rope.TENSOR})   # that one: config
  if unmapped:
    raise ConfigError(f'GGUF tensor {unmapped[0]!r} has no Hugging Face counterpart ropex maps '
                      '(a different model, or a feature ropex does not read)')
  return out


def read_model(path: str):
  """(model block, source) from the file's metadata alone."""
  from ropex.model.io import hf_config as hf_config_lib  # pylint: disable=g-import-not-at-top
  reader = Reader(path)
  config = hf_config(reader)
  block, parsed = hf_config_lib.model_block_from_hf(config)
  return block, _source(path, reader, parsed, config), reader, config


def _source(path, reader: Reader, parsed, config) -> dict:
  return {'format': 'gguf', 'path': os.path.abspath(path), 'family': parsed.family.name,
          'model_type': config['model_type'], 'quantization': reader.quantization()}


def load_model(path: str, *, placement=None, dtype: str = 'float32'):
  """:class:`ropex.model.io.Imported` of a GGUF file: the dequantised float model (in
  ``dtype``), its quantisation recorded in ``source['quantization']``."""
  from ropex.model import io  # pylint: disable=g-import-not-at-top
  from ropex.model.config import ModelConfig  # pylint: disable=g-import-not-at-top
  from ropex.model.io import hf_families, huggingface  # pylint: disable=g-import-not-at-top
  block, source, reader, config = read_model(path)
  block.update(param_dtype=dtype, dtype=dtype)
  cfg = ModelConfig.from_config(block)
  family = hf_families.FAMILIES[source['family']]
  params = huggingface.load_params(path, cfg, family.norms, placement,
                                   source=TensorSource(reader, config))
  from ropex.model.io import gguf_tokenizer  # pylint: disable=g-import-not-at-top
  rebuilt, tokenizer = gguf_tokenizer.describe(reader)   # rebuilt from this file when used
  return io.Imported(block, params, dict(source, dtype=dtype, tokenizer=tokenizer),
                     os.path.abspath(path) if rebuilt else None)
