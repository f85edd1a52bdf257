"""Paper Table 2 control: "0.75-RoPE reversed" on Gemma 2B — keeps the int(p*d/2) LOWEST
frequencies and leaves the highest unrotated (the opposite of p-RoPE), θ = 10k.
Args: p (default 0.75), theta, data=wiki|flan, runlocal.

  python -m ropex.train --config configs/prope_reversed_2b.py:data=flan
"""
from ropex.config.loading import parse_arg
from ropex.experiments import paper
from ropex.model.config import pe_block


def get_config(arg=None):
  a = parse_arg(arg, p=0.75, theta=10_000, data='wiki', runlocal=False)
  pe = pe_block('prope_reversed', fraction=a.p, max_wavelength=a.theta)
  return paper.paper_config(pe, a, name=f'prope_reversed{a.p:g}_2b')
