"""Paper Table 2 control: "0.75-RoPE reversed" on Gemma 2B — keeps the int(p*d/2) LOWEST
frequencies and leaves the highest unrotated (the opposite of p-RoPE), θ = 10k.
Args: p (default 0.75), theta, data=wiki|flan, runlocal.

  python -m ropex.train --config configs/prope_reversed_2b.py:data=flan
"""
from ropex import config_base
from ropex.model_config import pe_block


def get_config(arg=None):
  a = config_base.parse_arg(arg, p=0.75, theta=10_000, data='wiki', runlocal=False)
  pe = pe_block('prope_reversed', fraction=a.p, max_wavelength=a.theta)
  return config_base.paper_config(pe, a, name=f'prope_reversed{a.p:g}_2b')
