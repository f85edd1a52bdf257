"""Gemma 3's positional schedule (Gemma 3 Technical Report, 2503.19786, Sec. 2.1/2.3): local
layers RoPE θ = 10k with a 1024-token sliding window, global layers RoPE θ = 1M with linear
RoPE scaling ×8 on the global layers only, 5 local : 1 global.
Args: arch (any preset; tiny for a CPU run), window, factor.

  python -m ropex.describe --config configs/gemma3_schedule.py:arch=tiny --json

This is the schedule on any preset's block (default: the Gemma v1 2B block, an ablation of the
paper's model); the released model, its block fields and schedule, is
configs/family.py:arch=gemma3_1b (docs/models.md).
"""
from ropex.config.loading import parse_arg
from ropex.config import defaults
from ropex.model.config import pe_block, set_schedule


def get_config(arg=None):
  a = parse_arg(arg, arch='gemma_2b', window=1024, factor=8.0)
  c = defaults.base_config(a.arch)
  set_schedule(c.model, ('local',) * 5 + ('global',), {
      'local': {'pe': pe_block('rope', max_wavelength=10_000), 'window': a.window},
      'global': {'pe': pe_block('rope', max_wavelength=1_000_000,
                                scaling={'type': 'linear', 'factor': a.factor})},
  })
  c.name = f'gemma3_schedule_{a.arch}'
  return c
