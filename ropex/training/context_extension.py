"""Context-extension recipes: a new run built from a trained run's own ``config.json``.

The source's config (architecture, encoding, θ, data, lengths, optimizer) is the base of the new
run; a recipe changes only the fields it names and refuses, in one line, a source whose encoding
it does not apply to. ``train.init_from`` points at the source (fresh optimizer at step 0).

The source's *trained length* ``L0`` is the longest context it saw: its ``train.seq_len``, or
for synthetic data with ``data.reset_positions`` (positions restart in every example) its longest
example. The extending recipes train at ``L1 = factor · L0`` on data that reaches it: synthetic
examples of exactly ``L1`` prediction pairs (as YaRN and PI fine-tune on chunks of the target
length), in rows of a multiple of ``L1`` so packing never lengthens the last example; other
sources get ``train.seq_len = factor · seq_len`` (positions then reach ``L1`` only where documents
are that long, or with ``data.reset_positions=False``: see ``train/max_position``).

========  ===================================================================================
recipe    fields changed (besides ``name``, ``train.init_from/steps/warmup_steps`` and the
          checkpoint / eval cadence)
========  ===================================================================================
theta     every rotary ``pe.max_wavelength`` × ``theta_scale`` (default 100: Code Llama,
          2308.12950 §2.4, raised θ from 10⁴ to 10⁶ to go from 4k to 16k), the length and data
yarn      ``pe.scaling = yarn(factor, original_max_position = L0)`` (2309.00071), length, data;
          default steps 400 (the paper's Llama 2 s = 16 run)
pi        ``pe.scaling = linear(factor)`` (position interpolation, 2306.15595), length, data;
          default steps 1000 (the paper's fine-tuning)
drope     every ``pe`` -> ``kind none`` (2512.12167), same length and data; default steps
          ``budget`` (2%) of the source's ``train.steps``: a short recalibration at the original
          context
========  ===================================================================================

The extending recipes warm up over ``min(20, steps // 2)`` steps (YaRN and PI warm up for 20);
learning rate, schedule and optimizer settings are the source's.
"""

from __future__ import annotations

import math

import ml_collections

from ropex.data import sources
from ropex.errors import ConfigError
from ropex.model import positional
from ropex.model.config import pe_block, scaling_block
from ropex.training import init_from, workdir as workdir_lib

RECIPES = ('theta', 'yarn', 'pi', 'drope')
DEFAULT_STEPS = {'yarn': 400, 'pi': 1000}
PAPER_WARMUP = 20          # YaRN (2309.00071) and PI (2306.15595) warm up for 20 steps
CODE_LLAMA_THETA_SCALE = 100.0
DROPE_BUDGET = 0.02


def trained_length(config) -> int:
  """``L0``: the longest context (positions 0 .. L0 - 1) the run's data gives the model."""
  seq_len = int(config.train.seq_len)
  d = config.data
  if d.source != 'synthetic' or not d.reset_positions:
    return seq_len
  lo, hi = sources.synthetic_pairs(d, seq_len)
  # packing gives a row's last example the remainder, which can reach 2 * lo - 1 pairs
  return min(seq_len, max(hi, 2 * lo - 1)) if d.pack else hi


def _pe_blocks(config) -> list[tuple[str, ml_collections.ConfigDict]]:
  """(field, block) of ``model.pe`` and of every ``model.layer_types.<type>.pe``."""
  out = [('model.pe', config.model.pe)]
  for name, spec in sorted((config.model.get('layer_types') or {}).items()):
    if spec and spec.get('pe') is not None:
      out.append((f'model.layer_types.{name}.pe', spec.pe))
  return out


def _encoding(block, head_dim: int, field: str):
  return positional.from_config(block.to_dict() if hasattr(block, 'to_dict') else block,
                                head_dim, field)


def _refuse(recipe: str, src: str, field: str, block, why: str) -> ConfigError:
  return ConfigError(f'config argument recipe={recipe} does not apply to the source {src}: its '
                     f'{field}.kind={block.kind!r} {why}')


def _new_pe(recipe: str, block, field: str, head_dim: int, a, L0: int, src: str):
  """The recipe's ``pe`` block for the source's ``block`` (ConfigError if it does not apply)."""
  encoding = _encoding(block, head_dim, field)
  if recipe == 'drope':
    if encoding == _encoding(pe_block('none'), head_dim, field):
      raise _refuse(recipe, src, field, block, 'has no positional encoding to drop')
    return pe_block('none')
  if not encoding.rotated_chunks():
    raise _refuse(recipe, src, field, block, 'rotates nothing (the recipe scales RoPE)')
  new = ml_collections.ConfigDict(block.to_dict())
  if recipe == 'theta':
    new.max_wavelength = float(encoding.max_wavelength) * float(a.theta_scale)
  else:
    if getattr(encoding, 'scaling', None) is not None and encoding.scaling.active:
      raise _refuse(recipe, src, field, block, f'already has scaling.type='
                    f'{encoding.scaling.type!r}')
    new.scaling = (scaling_block('yarn', factor=float(a.factor), original_max_position=L0)
                   if recipe == 'yarn' else scaling_block('linear', factor=float(a.factor)))
  try:
    _encoding(new, head_dim, field)
  except ConfigError as e:
    raise _refuse(recipe, src, field, block, f'does not take it ({e})') from None
  return new


def _extend_length(c, L0: int, factor: int) -> int:
  """Sets the data and ``train.seq_len`` of a run trained at ``factor · L0``; returns L1."""
  L1 = factor * L0
  seq_len = int(c.train.seq_len)
  if c.data.source == 'synthetic' and c.data.reset_positions:
    c.data.synthetic_length = (L1 + 1, L1 + 1)     # tokens = pairs + 1
    c.train.seq_len = L1 * max(1, math.ceil(seq_len / L1))
  else:
    c.train.seq_len = factor * seq_len
  return L1


def extend(args) -> ml_collections.ConfigDict:
  """The new run's config for parsed config arguments ``src``, ``recipe``, ``factor``,
  ``steps`` (0: the recipe's default), ``theta_scale``, ``budget``."""
  if not args.src:
    raise ConfigError('config argument src is required: the source run, e.g. src=/tmp/rope')
  if args.recipe not in RECIPES:
    raise ConfigError(f'config argument recipe={args.recipe!r} is not known; allowed: '
                      f'{", ".join(RECIPES)}')
  if int(args.factor) != args.factor or args.factor < 2:
    raise ConfigError(f'config argument factor={args.factor!r} must be an integer >= 2')
  source = init_from.parse(args.src)
  if source.kind != 'workdir':
    raise ConfigError(f'config argument src={args.src!r} is not a ropex workdir (a Gemma '
                      'checkpoint has no config.json to extend); allowed: a ropex workdir[:step]')
  c = workdir_lib.load_config(source.path)
  L0, head_dim = trained_length(c), int(c.model.head_dim)
  for field, block in _pe_blocks(c):
    new = _new_pe(args.recipe, block, field, head_dim, args, L0, args.src)
    if field == 'model.pe':
      c.model.pe = new
    else:
      c.model.layer_types[field.split('.')[2]].pe = new
  steps = int(args.steps) or _default_steps(args.recipe, c, args)
  if args.recipe != 'drope':
    _extend_length(c, L0, int(args.factor))
    c.train.warmup_steps = min(PAPER_WARMUP, steps // 2)
    c.name = f'{c.name}_{args.recipe}_x{int(args.factor)}'
  else:
    c.train.warmup_steps = min(int(c.train.warmup_steps), steps // 2)
    c.name = f'{c.name}_drope'
  c.train.update(init_from=args.src, steps=steps)
  c.checkpoint.every_steps = steps
  c.eval.every_steps = steps
  return c


def _default_steps(recipe: str, c, args) -> int:
  if recipe == 'drope':
    return max(1, round(float(args.budget) * int(c.train.steps)))
  if recipe == 'theta':
    raise ConfigError('config argument steps is required for recipe=theta (Code Llama\'s '
                      'long-context budget is not transferable to another model): e.g. steps=400')
  return DEFAULT_STEPS[recipe]
