"""Architecture presets of released models: one row each, the published ``config.json`` values
(the text model) with their source, built into a ``model`` block by the Hugging Face config
reader (:mod:`ropex.model.io.hf_config`), so a preset is exactly what importing the released
checkpoint gives: the family's block fields AND its positional schedule (layer pattern,
windows, local/global θ, scalings).

``published`` is the parameter count the row's ``count_source`` states; ``compare`` says which
part ropex builds when the published figure counts more (a vision tower). ``python -m
ropex.describe --config configs/family.py:arch=NAME`` prints ropex's counts;
tests/model/test_model_families.py asserts they equal ``published`` minus ``not_built``.
"""

from __future__ import annotations

import copy

import ml_collections

_HUB = 'https://huggingface.co/{}/blob/main/config.json'
_L3_SCALING = dict(rope_type='llama3', low_freq_factor=1.0, high_freq_factor=4.0,
                   original_max_position_embeddings=8192)
_G3 = dict(model_type='gemma3_text', head_dim=256, query_pre_attn_scalar=256, rms_norm_eps=1e-6,
           hidden_activation='gelu_pytorch_tanh', rope_theta=1_000_000.0,
           rope_local_base_freq=10_000.0, tie_word_embeddings=True, vocab_size=262_144)
_G4 = dict(model_type='gemma4_text', head_dim=256, global_head_dim=512, rms_norm_eps=1e-6,
           hidden_activation='gelu_pytorch_tanh', final_logit_softcapping=30.0,
           vocab_size=262_144, tie_word_embeddings=True,
           rope_parameters={'sliding_attention': {'rope_type': 'default', 'rope_theta': 10_000.0},
                            'full_attention': {'rope_type': 'proportional', 'rope_theta': 1e6,
                                               'partial_rotary_factor': 0.25}})
_LLAMA3 = dict(model_type='llama', vocab_size=128_256, rms_norm_eps=1e-5, hidden_act='silu',
               rope_theta=500_000.0)
_QWEN3 = dict(model_type='qwen3', vocab_size=151_936, head_dim=128, rms_norm_eps=1e-6,
              hidden_act='silu', rope_theta=1_000_000.0)


def _config(base: dict, layers: int, width: int, heads: int, kv_heads: int, mlp: int,
            **fields) -> dict:
  """A config.json: ``base`` (the family's shared fields), the size (transformers'
  num_hidden_layers, hidden_size, num_attention_heads, num_key_value_heads,
  intermediate_size) and the preset's own ``fields``."""
  return dict(base, num_hidden_layers=layers, hidden_size=width, num_attention_heads=heads,
              num_key_value_heads=kv_heads, intermediate_size=mlp, **fields)


def _row(repo: str, published: int | None, config: dict, text_config: bool = False,
         count_source: str | None = None, **extra) -> dict:
  """A preset row: the config.json of ``repo`` on the Hub (its ``text_config`` part with
  ``text_config``) and the count ``published`` (default source: the repo's HF safetensors
  metadata total); ``extra``: ``not_built`` and ``compare``."""
  return dict(source=_HUB.format(repo) + (' (text_config)' if text_config else ''),
              published=published,
              count_source=count_source or f'HF safetensors metadata total ({repo})',
              config=config, **extra)


PRESETS = {
    'gemma2_2b': _row('google/gemma-2-2b', 2_614_341_888, _config(
        dict(model_type='gemma2', vocab_size=256_000), 26, 2304, 8, 4, 9216, head_dim=256,
        query_pre_attn_scalar=256, sliding_window=4096, attn_logit_softcapping=50.0,
        final_logit_softcapping=30.0, rope_theta=10_000.0, rms_norm_eps=1e-6,
        hidden_activation='gelu_pytorch_tanh', tie_word_embeddings=True)),
    'gemma3_270m': _row('google/gemma-3-270m', 268_098_176,
                        _config(_G3, 18, 640, 4, 1, 2048, sliding_window=512)),
    'gemma3_1b': _row('google/gemma-3-1b-pt', 999_885_952,
                      _config(_G3, 26, 1152, 4, 1, 6912, sliding_window=512)),
    'gemma3_4b': _row(
        'google/gemma-3-4b-pt', 4_300_079_472,
        _config(_G3, 34, 2560, 8, 4, 10240, vocab_size=262_208, sliding_window=1024,
                rope_scaling={'rope_type': 'linear', 'factor': 8.0}),
        text_config=True,
        count_source='HF safetensors metadata total (google/gemma-3-4b-pt), image+text',
        not_built=416_866_032 + 2_949_120 + 1152,
        compare='the text model: the total less the SigLIP vision tower (416,866,032: 27 '
                'layers of width 1152, MLP 4304, 4096 patch positions) and the multimodal '
                'projector (1152 x 2560 + a 1152 norm)'),
    'gemma4_e2b': _row(
        'google/gemma-4-E2B', None,
        _config(_G4, 35, 1536, 8, 1, 6144, sliding_window=512, hidden_size_per_layer_input=256,
                vocab_size_per_layer_input=262_144, num_kv_shared_layers=20,
                use_double_wide_mlp=True,
                layer_types=(['sliding_attention'] * 4 + ['full_attention']) * 7),
        text_config=True,
        count_source='no verified text-only figure (the model card\'s 5.1B counts vision and '
                     'audio towers)'),
    'gemma4_31b': _row(
        'google/gemma-4-31B', None,
        _config(_G4, 60, 5376, 32, 16, 21504, num_global_key_value_heads=4,
                attention_k_eq_v=True, sliding_window=1024, hidden_size_per_layer_input=0,
                num_kv_shared_layers=0,
                layer_types=(['sliding_attention'] * 5 + ['full_attention']) * 10),
        text_config=True,
        count_source='no verified text-only figure (the model card\'s 31B counts the vision '
                     'tower)'),
    'llama3_2_1b': _row('meta-llama/Llama-3.2-1B', 1_235_814_400, _config(
        _LLAMA3, 16, 2048, 32, 8, 8192, head_dim=64, tie_word_embeddings=True,
        rope_scaling=dict(_L3_SCALING, factor=32.0))),
    'llama3_1_8b': _row('meta-llama/Llama-3.1-8B', 8_030_261_248, _config(
        _LLAMA3, 32, 4096, 32, 8, 14336, head_dim=128, tie_word_embeddings=False,
        rope_scaling=dict(_L3_SCALING, factor=8.0))),
    'qwen2_5_0_5b': _row('Qwen/Qwen2.5-0.5B', 494_032_768, _config(
        dict(model_type='qwen2', vocab_size=151_936), 24, 896, 14, 2, 4864, rms_norm_eps=1e-6,
        hidden_act='silu', tie_word_embeddings=True, rope_theta=1_000_000.0)),
    'qwen3_0_6b': _row(
        'Qwen/Qwen3-0.6B', 751_632_384,
        _config(_QWEN3, 28, 1024, 16, 8, 3072, tie_word_embeddings=True),
        count_source='HF safetensors metadata total (Qwen/Qwen3-0.6B); the files also store '
                     'the tied lm_head (151,936 x 1024), which the model ties to the embedding',
        not_built=151_936 * 1024,
        compare='the model as built (tied: the stored lm_head copy is not a parameter); the '
                'model card\'s non-embedding 0.44B is 440,467,456 here'),
    'qwen3_8b': _row('Qwen/Qwen3-8B', 8_190_735_360,
                     _config(_QWEN3, 36, 4096, 32, 8, 12288, tie_word_embeddings=False)),
}


def apply(block: ml_collections.ConfigDict, arch: str, keep_pe: bool = False) -> None:
  """Sets ``block`` (a complete model block) to preset ``arch``. With ``keep_pe`` the block's
  own ``pe`` acts on every layer (the per-type encodings are dropped; windows, head shapes and
  the rest of the schedule stay)."""
  from ropex.model.io import hf_config  # pylint: disable=g-import-not-at-top
  pe = copy.deepcopy(block.pe)   # update() below changes nested blocks in place
  built, _ = hf_config.model_block_from_hf(PRESETS[arch]['config'], arch=arch)
  block.update(built.to_dict())
  block.layer_types = built.layer_types.to_dict() if isinstance(
      built.layer_types, ml_collections.ConfigDict) else built.layer_types
  if keep_pe:
    block.pe = pe
    block.layer_types = {k: {f: v for f, v in dict(t).items() if f != 'pe'}
                         for k, t in dict(block.layer_types).items()}
  block.scan_layers = _scannable(block)


def _scannable(block) -> bool:
  """Scan the layers when every layer follows the pattern (no per-layer inputs, no K/V
  sharing) and the pattern's period divides the layer count."""
  period = len(block.layer_pattern) or 1
  return (not block.hidden_size_per_layer_input and not block.num_kv_shared_layers
          and block.num_layers % period == 0)


def expected_count(arch: str) -> int | None:
  """The published parameter count less what ropex does not build (None: no figure)."""
  row = PRESETS[arch]
  if row['published'] is None:
    return None
  return row['published'] - row.get('not_built', 0)


def shrink(block: ml_collections.ConfigDict) -> None:
  """A CPU-sized version of a family preset, in place: tiny shapes (vocab 512, width 64, 4
  heads of 16, MLP 128, two periods of its layer pattern), every block field and the schedule
  kept; per-type head dims, windows and Gemma 4's per-layer inputs and K/V sharing shrink
  with it."""
  period = len(block.layer_pattern) or 1
  kv = 1 if block.num_kv_heads < block.num_heads else 4
  block.update(vocab_size=512, embed_dim=64, num_heads=4, num_kv_heads=kv, head_dim=16,
               hidden_dim=128, num_layers=2 * period)
  types = {}
  for name, t in dict(block.layer_types).items():
    t = dict(t)
    if t.get('head_dim'):
      t['head_dim'] = 32
    if t.get('window'):
      t['window'] = 8
    if t.get('num_kv_heads'):
      t['num_kv_heads'] = 1
    types[name] = t
  block.layer_types = types
  if block.sliding_window:
    block.sliding_window = 8
  if block.hidden_size_per_layer_input:
    block.update(hidden_size_per_layer_input=8, vocab_size_per_layer_input=512)
  if block.num_kv_shared_layers:
    block.num_kv_shared_layers = period
