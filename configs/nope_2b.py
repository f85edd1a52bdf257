"""Paper Table 2: NoPE on Gemma 2B. Args: data=wiki|flan, runlocal."""
from ropex import config_base
from ropex.model_config import pe_block


def get_config(arg=None):
  a = config_base.parse_arg(arg, data='wiki', runlocal=False)
  return config_base.paper_config(pe_block('none'), a, name='nope_2b')
