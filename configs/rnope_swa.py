"""RNoPE-SWA (Yang et al., "Rope to Nope and Back Again", 2501.18795; Cohere Command A: three
sliding-window layers with RoPE, window 4096, then one full-attention layer without positional
encoding): RoPE θ = 10k + sliding window on layers 1-3 of every 4, NoPE with full causal
attention on every 4th layer.
Args: arch (any preset; tiny for a CPU run), window, theta.
"""
from ropex.config.loading import parse_arg
from ropex.config import defaults
from ropex.model.config import pe_block, set_schedule


def get_config(arg=None):
  a = parse_arg(arg, arch='gemma_2b', window=4096, theta=10_000.0)
  c = defaults.base_config(a.arch)
  set_schedule(c.model, ('swa', 'swa', 'swa', 'nope'), {
      'swa': {'pe': pe_block('rope', max_wavelength=a.theta), 'window': a.window},
      'nope': {'pe': pe_block('none')},
  })
  c.name = f'rnope_swa_{a.arch}'
  return c
