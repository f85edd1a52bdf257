"""The offline default: a tiny Gemma-style model on in-process synthetic tasks (2 CPU cores,
a few minutes). Args: pe=nope|rope|prope|prope_reversed|partial, p=<fraction>, theta=<θ>.

  python -m ropex.train --config configs/tiny.py:pe=prope,p=0.75 --workdir /tmp/ropex-tiny
"""
from ropex.config.loading import parse_arg
from ropex.config import defaults


def get_config(arg=None):
  a = parse_arg(arg, pe='rope', p=0.75, theta=10_000.0)
  c = defaults.base_config('tiny', pe=defaults.pe_from_args(a))
  c.name = f'tiny_{a.pe}' + (f'{a.p:g}' if a.pe in ('prope', 'prope_reversed', 'partial') else '')
  return c
