"""Paper Table 2 control: "0.75 partial" (GPT-NeoX style) on Gemma 2B — rotates the leading
fraction p of each head's dims with frequencies recomputed over that slice, θ = 10k. It keeps
the lowest frequency, so it is NOT p-RoPE. Args: p (default 0.75), theta, data=wiki|flan, runlocal.

  python -m ropex.train --config configs/partial_2b.py:data=flan
"""
from ropex import config_base
from ropex.model_config import pe_block


def get_config(arg=None):
  a = config_base.parse_arg(arg, p=0.75, theta=10_000, data='wiki', runlocal=False)
  pe = pe_block('partial', rotary_fraction=a.p, max_wavelength=a.theta)
  return config_base.paper_config(pe, a, name=f'partial{a.p:g}_2b')
