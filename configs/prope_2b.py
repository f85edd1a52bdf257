"""Paper Table 2: p-RoPE on Gemma 2B (keeps the int(p*d/2) highest frequencies, θ = 10k).
Args: p (default 0.75; the paper also runs 0.25), theta, data=wiki|flan, runlocal.

  python -m ropex.train --config configs/prope_2b.py:p=0.25
"""
from ropex.config.loading import parse_arg
from ropex.experiments import paper
from ropex.model.config import pe_block


def get_config(arg=None):
  a = parse_arg(arg, p=0.75, theta=10_000, data='wiki', runlocal=False)
  return paper.paper_config(pe_block('prope', fraction=a.p, max_wavelength=a.theta), a,
                                  name=f'prope{a.p:g}_2b')
