"""Gemma 7B shapes (MHA, 28 layers) with any encoding: the model the paper analyses.
Args: pe=nope|rope|prope|prope_reversed|partial, p, theta, data=wiki|flan, runlocal."""
from ropex.config.loading import parse_arg
from ropex.config import defaults
from ropex.experiments import paper
from ropex.model.config import model_block


def get_config(arg=None):
  a = parse_arg(arg, pe='rope', p=0.75, theta=10_000, data='wiki', runlocal=False)
  c = paper.paper_config(defaults.pe_from_args(a), a, name=f'{a.pe}_7b')
  if not a.runlocal:
    arch = model_block('gemma_7b')
    for key in ('arch', 'num_layers', 'embed_dim', 'num_heads', 'num_kv_heads', 'head_dim',
                'hidden_dim'):
      c.model[key] = arch[key]
  return c
