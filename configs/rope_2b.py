"""Paper Table 2: RoPE on Gemma 2B. Args: theta (10000 or 500000), data=wiki|flan, runlocal.

  python -m ropex.train --config configs/rope_2b.py:theta=500000
"""
from ropex.config.loading import parse_arg
from ropex.experiments import paper
from ropex.model.config import pe_block


def get_config(arg=None):
  a = parse_arg(arg, theta=10_000, data='wiki', runlocal=False)
  return paper.paper_config(pe_block('rope', max_wavelength=a.theta), a,
                                  name=f'rope{a.theta // 1000}k_2b')
