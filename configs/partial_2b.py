"""Paper Table 2 control: "0.75 partial" (GPT-NeoX style) on Gemma 2B — rotates the leading
fraction p of each head's dims with frequencies recomputed over that slice, θ = 10k. It keeps
the lowest frequency, so it is NOT p-RoPE. Args: p (default 0.75), theta, data=wiki|flan, runlocal.

  python -m ropex.train --config configs/partial_2b.py:data=flan
"""
from ropex.config.loading import parse_arg
from ropex.experiments import paper
from ropex.model.config import pe_block


def get_config(arg=None):
  a = parse_arg(arg, p=0.75, theta=10_000, data='wiki', runlocal=False)
  pe = pe_block('partial', rotary_fraction=a.p, max_wavelength=a.theta)
  return paper.paper_config(pe, a, name=f'partial{a.p:g}_2b')
