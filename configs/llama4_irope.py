"""Llama 4's iRoPE (Meta's Llama 4 release; HF transformers Llama4TextConfig: rope_theta 500k,
no_rope_layer_interval 4, attention_chunk_size 8192, attn_temperature_tuning with floor_scale
8192 and attn_scale 0.1): layers 4, 8, 12, ... (every 4th) are NoPE with full causal attention
and the query-only temperature; the other layers are RoPE θ = 500k with chunked-local
attention (blocks of 8192 positions). Llama 4's QK-norm and MoE are not part of this preset.
Args: arch (any preset; tiny for a CPU run), chunk, theta.
"""
from ropex.config.loading import parse_arg
from ropex.config import defaults
from ropex.model.config import pe_block, set_schedule


def get_config(arg=None):
  a = parse_arg(arg, arch='gemma_2b', chunk=8192, theta=500_000.0)
  c = defaults.base_config(a.arch)
  set_schedule(c.model, ('rope', 'rope', 'rope', 'nope'), {
      'rope': {'pe': pe_block('rope', max_wavelength=a.theta), 'chunk_attention': a.chunk},
      'nope': {'pe': pe_block('none', attn_temperature_tuning=True, floor_scale=8192.0,
                              attn_scale=0.1)},
  })
  c.name = f'llama4_irope_{a.arch}'
  return c
