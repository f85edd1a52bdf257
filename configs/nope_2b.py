"""Paper Table 2: NoPE on Gemma 2B. Args: data=wiki|flan, runlocal."""
from ropex.config.loading import parse_arg
from ropex.experiments import paper
from ropex.model.config import pe_block


def get_config(arg=None):
  a = parse_arg(arg, data='wiki', runlocal=False)
  return paper.paper_config(pe_block('none'), a, name='nope_2b')
