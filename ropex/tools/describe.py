"""What a config builds, allocating nothing: parameter counts (from ``jax.eval_shape``) and,
per layer, the attention shape and the positional encoding (kind, θ, which frequency chunks
rotate, 0 = highest frequency; window). ``python -m ropex.describe`` prints it."""

from __future__ import annotations

from ropex import model
from ropex.model.config import ModelConfig


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


def describe(model_cfg: ModelConfig, name: str = '') -> dict:
  """The description as a JSON-ready dict."""
  layers = []
  for i, spec in enumerate(model_cfg.layers):
    summary = spec.pe.summary()
    layers.append({'layer': i, 'type': spec.type_name, 'window': spec.window,
                   'num_heads': model_cfg.num_heads, 'num_kv_heads': model_cfg.num_kv_heads,
                   'head_dim': model_cfg.head_dim, **summary})
  return {'name': name, **model.count_params(model_cfg),
          'num_layers': model_cfg.num_layers, 'embed_dim': model_cfg.embed_dim,
          'hidden_dim': model_cfg.hidden_dim, 'vocab_size': model_cfg.vocab_size,
          'frequency_chunks': model_cfg.head_dim // 2, 'layers': layers}


def format_table(d: dict) -> str:
  lines = [f'{d["name"]}: {d["num_layers"]} layers, d_model {d["embed_dim"]}, '
           f'GeGLU hidden {d["hidden_dim"]}, vocab {d["vocab_size"]}',
           f'parameters: total {d["params_total"]:,}  embedding {d["params_embedding"]:,}  '
           f'non-embedding {d["params_non_embedding"]:,}',
           f'{"layer":>5}  {"type":<8} {"heads":>9}  {"pe":<15} {"theta":>10}  '
           f'{"rotated chunks (of " + str(d["frequency_chunks"]) + ", 0 = highest)":<34} window']
  for layer in d['layers']:
    theta = layer.get('max_wavelength')
    lines.append(
        f'{layer["layer"]:>5}  {layer["type"]:<8} {layer["num_heads"]:>3}q/{layer["num_kv_heads"]}kv'
        f'x{layer["head_dim"]:<3} {layer["pe_kind"]:<15} {theta if theta else "-":>10}  '
        f'{_ranges(layer["rotated_chunks"]):<34} {layer["window"] or "full"}')
  return '\n'.join(lines)
