"""Context-extension recipes from a trained run (``train.init_from``); the optimizer starts fresh.
Args: src (the source workdir[:step], required), recipe=theta|yarn|pi|drope, arch (the source's
preset; tiny for a CPU run), factor (length multiple, default 4), base_len (the source's
train.seq_len, default 128), theta (the source's θ, default 10k), steps.

  theta  θ bump: RoPE θ × factor² at factor × the length (ABF-style, as in Code Llama's θ raise)
  yarn   YaRN (2309.00071) ×factor with original_max_position = base_len, at factor × the length
  pi     position interpolation (2306.15595): linear scaling ×factor, at factor × the length
  drope  DroPE (2512.12167): remove the positional encoding (kind none) and recalibrate briefly
         at the same length

  python -m ropex.train --config configs/context_extension.py:src=/tmp/rope,recipe=yarn \\
      --workdir /tmp/rope_yarn4
"""
from ropex.config import defaults
from ropex.config.loading import parse_arg
from ropex.errors import ConfigError
from ropex.model.config import pe_block

RECIPES = ('theta', 'yarn', 'pi', 'drope')


def get_config(arg=None):
  a = parse_arg(arg, src='', recipe='yarn', arch='tiny', factor=4, base_len=128,
                theta=10_000.0, steps=100)
  if not a.src:
    raise ConfigError('config argument src is required: the source run, e.g. src=/tmp/rope')
  if a.recipe not in RECIPES:
    raise ConfigError(f'config argument recipe={a.recipe!r} is not known; allowed: '
                      f'{", ".join(RECIPES)}')
  pe, seq_len = {
      'theta': (pe_block('rope', max_wavelength=a.theta * a.factor ** 2), a.base_len * a.factor),
      'yarn': (pe_block('rope', max_wavelength=a.theta, scaling={
          'type': 'yarn', 'factor': float(a.factor), 'original_max_position': a.base_len}),
               a.base_len * a.factor),
      'pi': (pe_block('rope', max_wavelength=a.theta, scaling={
          'type': 'linear', 'factor': float(a.factor)}), a.base_len * a.factor),
      'drope': (pe_block('none'), a.base_len),
  }[a.recipe]
  c = defaults.base_config(a.arch, pe=pe)
  c.name = f'{a.recipe}_x{a.factor}' if a.recipe != 'drope' else 'drope'
  c.train.update(init_from=a.src, steps=a.steps, seq_len=seq_len, warmup_steps=min(10, a.steps),
                 learning_rate=1e-3)
  c.checkpoint.every_steps = a.steps
  c.eval.every_steps = a.steps
  return c
