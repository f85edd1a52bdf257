"""Context-extension recipes from a trained run (``train.init_from``); the optimizer starts fresh.

The source run's own ``config.json`` is the base of the new run (architecture, encoding, θ,
data, lengths, optimizer); the recipe changes only what it names and refuses, in one line, a
source whose encoding it does not apply to. See :mod:`ropex.training.context_extension` and
docs/context_extension.md.

Args: src (the source workdir[:step], required), recipe=theta|yarn|pi|drope, factor (length
multiple, default 4), steps (0: the recipe's default), theta_scale (theta: θ multiple, default
100 as Code Llama's 10⁴ -> 10⁶), budget (drope: fraction of the source's steps, default 0.02).

  theta  θ × theta_scale at factor × the source's trained length (Code Llama, 2308.12950)
  yarn   YaRN ×factor, original_max_position = the source's trained length (2309.00071)
  pi     position interpolation ×factor (2306.15595)
  drope  drop the positional encoding, recalibrate at the source's length (2512.12167)

  python -m ropex.train --config configs/context_extension.py:src=/tmp/rope,recipe=yarn \\
      --workdir /tmp/rope_yarn4
"""
from ropex.config.loading import parse_arg
from ropex.training import context_extension


def get_config(arg=None):
  a = parse_arg(arg, src='', recipe='yarn', factor=4, steps=0,
                theta_scale=context_extension.CODE_LLAMA_THETA_SCALE,
                budget=context_extension.DROPE_BUDGET)
  return context_extension.extend(a)
