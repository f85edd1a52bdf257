"""What a config builds, allocating nothing: parameter counts (from ``jax.eval_shape``) and,
per layer, the attention shape and what the positional encoding declares through its interface
(kind, θ, rotated chunks, ``inv_freq`` after scaling, attention factor, bias, learned PE
parameters; window). ``python -m ropex.describe`` prints it."""

from __future__ import annotations

from ropex import model
from ropex.model import pe_interface
from ropex.model.config import BLOCK_FIELDS, ModelConfig
from ropex.model.layers import pe_dims


def _ranges(chunks: list[int]) -> str:
  """[0, 1, 2, 5, 6] -> '0-2, 5-6'."""
  if not chunks:
    return '-'
  out, start, prev = [], chunks[0], chunks[0]
  for c in chunks[1:] + [None]:
    if c is not None and c == prev + 1:
      prev = c
      continue
    out.append(f'{start}-{prev}' if prev != start else f'{start}')
    if c is not None:
      start = prev = c
  return ', '.join(out)


def layer_pe(pe, dims: pe_interface.Dims, seq_len: int | None = None) -> dict:
  """What one layer's encoding declares (through the interface, for any kind)."""
  enc = pe_interface.as_encoding(pe)
  inv = enc.inv_freq(seq_len)
  out = {**enc.summary(), 'bias': enc.bias_kind,
         'inv_freq': None if inv is None else [float(v) for v in inv],
         'attention_factor': float(enc.attention_factor(seq_len)),
         'pe_params': pe_interface.count_params(enc.param_specs(dims))}
  if inv is not None and 'max_wavelength' in out:
    out.setdefault('scaling', {'type': 'none'})
  return out


def describe(model_cfg: ModelConfig, name: str = '', seq_len: int | None = None) -> dict:
  """The description as a JSON-ready dict (``seq_len``: for length-dependent scalings)."""
  dims = pe_dims(model_cfg)
  layers = []
  for i, spec in enumerate(model_cfg.layers):
    kv_heads, head_dim = model_cfg.attention_shape(spec)
    layers.append({'layer': i, 'type': spec.type_name, 'window': spec.window,
                   'chunk_attention': spec.chunk_attention,
                   'num_heads': model_cfg.num_heads, 'num_kv_heads': kv_heads,
                   'head_dim': head_dim, 'k_eq_v': spec.k_eq_v, 'kv_source': spec.kv_source,
                   'hidden_dim': model_cfg.mlp_dim(spec),
                   **layer_pe(spec.pe, pe_dims(model_cfg, spec), seq_len)})
  input_pe = None
  if model_cfg.input_pe is not None:
    enc = pe_interface.as_encoding(model_cfg.input_pe)
    input_pe = {**enc.summary(),
                'pe_params': pe_interface.count_params(enc.embedding_param_specs(dims))}
  return {'name': name, **model.count_params(model_cfg),
          'num_layers': model_cfg.num_layers, 'embed_dim': model_cfg.embed_dim,
          'hidden_dim': model_cfg.hidden_dim, 'vocab_size': model_cfg.vocab_size,
          'frequency_chunks': model_cfg.head_dim // 2, 'seq_len': seq_len,
          'block': {name: getattr(model_cfg, name) for name in BLOCK_FIELDS},
          'input_pe': input_pe,
          'pe_params_total': sum(l['pe_params'] for l in layers) + (
              input_pe['pe_params'] if input_pe else 0),
          'layers': layers}


def _extras(layer: dict) -> str:
  parts = []
  if layer.get('chunk_attention'):
    parts.append(f'chunks of {layer["chunk_attention"]}')
  scaling = layer.get('scaling') or {}
  if scaling.get('type', 'none') != 'none':
    parts.append(f'{scaling["type"]}' + (f'×{scaling["factor"]:g}' if scaling.get('factor')
                                         else ''))
  if layer.get('attention_factor', 1.0) != 1.0:
    parts.append(f'attn factor {layer["attention_factor"]:.4g}')
  if layer.get('bias'):
    parts.append(f'bias {layer["bias"]}')
  if layer.get('attn_temperature_tuning'):
    parts.append('query temperature')
  if layer.get('pe_params'):
    parts.append(f'{layer["pe_params"]:,} PE params')
  if layer.get('k_eq_v'):
    parts.append('keys = values')
  if layer.get('kv_source', -1) >= 0:
    parts.append(f'K/V of layer {layer["kv_source"]}')
  return ', '.join(parts)


def format_table(d: dict) -> str:
  glu = 'SwiGLU' if d.get('block', {}).get('hidden_activation') == 'silu' else 'GeGLU'
  lines = [f'{d["name"]}: {d["num_layers"]} layers, d_model {d["embed_dim"]}, '
           f'{glu} hidden {d["hidden_dim"]}, vocab {d["vocab_size"]}',
           f'parameters: total {d["params_total"]:,}  embedding {d["params_embedding"]:,}  '
           f'non-embedding {d["params_non_embedding"]:,}',
           f'{"layer":>5}  {"type":<8} {"heads":>9}  {"pe":<15} {"theta":>10}  '
           f'{"rotated chunks (of " + str(d["frequency_chunks"]) + ", 0 = highest)":<34} '
           f'{"window":<8} notes']
  source = d.get('source')
  if source:   # released weights: their format, family and (GGUF) quantisation
    lines.insert(1, f'source: {source.get("format")} {source.get("family")}' + (
        f', quantization {source["quantization"]}' if source.get('quantization') else ''))
  if d.get('input_pe'):
    lines.insert(2 + bool(source), f'input embedding: {d["input_pe"]["pe_kind"]} '
                 f'({d["input_pe"]["pe_params"]:,} PE params)')
  for layer in d['layers']:
    theta = layer.get('max_wavelength')
    lines.append(
        f'{layer["layer"]:>5}  {layer["type"]:<8} {layer["num_heads"]:>3}q/{layer["num_kv_heads"]}kv'
        f'x{layer["head_dim"]:<3} {layer["pe_kind"]:<15} {theta if theta else "-":>10}  '
        f'{_ranges(layer["rotated_chunks"]):<34} {str(layer["window"] or "full"):<8} '
        f'{_extras(layer)}'.rstrip())
  return '\n'.join(lines)
