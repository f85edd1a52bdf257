"""Gemma 4's positional schedule (Hugging Face transformers' Gemma 4 config: global layers
rope_type="proportional", partial_rotary_factor 0.25, θ = 1M; sliding layers default RoPE,
θ = 10k): local layers full RoPE θ = 10k with a 1024-token sliding window (window=512 for the
models with a 512 window), global layers p-RoPE ("proportional") p = 0.25 θ = 1M, 5 local :
1 global (local_per_global=4 for the 4:1 E2B schedule).
Args: arch (any preset; tiny for a CPU run), window, local_per_global.

This is the schedule on any preset's block (default: the Gemma v1 2B block, an ablation of the
paper's model); the released model, its block fields and schedule, is
configs/family.py:arch=gemma4_e2b (docs/models.md).
"""
from ropex.config.loading import parse_arg
from ropex.config import defaults
from ropex.model.config import pe_block, set_schedule


def get_config(arg=None):
  a = parse_arg(arg, arch='gemma_2b', window=1024, local_per_global=5)
  c = defaults.base_config(a.arch)
  set_schedule(c.model, ('local',) * a.local_per_global + ('global',), {
      'local': {'pe': pe_block('rope', max_wavelength=10_000), 'window': a.window},
      'global': {'pe': pe_block('proportional', fraction=0.25, max_wavelength=1_000_000)},
  })
  c.name = f'gemma4_schedule_{a.arch}'
  return c
