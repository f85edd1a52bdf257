"""Evaluation-time overrides of the model config (extrapolation studies).

``--override model.pe.max_wavelength=500000`` (a different θ), ``--override
model.pe.position_scale=4`` (position interpolation: positions divided by 4, an alias of
``model.pe.scaling.type=linear`` with ``factor=4``) or a RoPE scaling (``--override
model.pe.scaling.type=yarn --override model.pe.scaling.factor=8 --override
model.pe.scaling.original_max_position=128``; per layer type:
``model.layer_types.global.pe.scaling.type=...``) changes a field of the run's ``config.model``; the :class:`~ropex.model_config.ModelConfig` is then rebuilt from the
changed block and validated as any config is. The model never looks at names: an override is a
config value like any other. Overrides must keep every parameter shape (the trained weights are
reused as they are) and are recorded in the results.
"""

from __future__ import annotations

import ast
import copy
from typing import Any, Sequence

import flax.linen as nn
import jax
import ml_collections

from ropex import model as model_lib
from ropex.model_config import ModelConfig
from ropex.positional import ConfigError


def parse(texts: Sequence[str]) -> dict[str, Any]:
  """``['model.pe.max_wavelength=5e5']`` -> ``{'model.pe.max_wavelength': 500000.0}``.

  Values are Python literals (numbers, strings, tuples, None); anything else is a string."""
  out = {}
  for text in texts:
    key, sep, raw = text.partition('=')
    key = key.strip()
    if not sep or not key.startswith('model.') or len(key) == len('model.'):
      raise ConfigError(f'--override={text!r} must look like model.<field>=<value> (e.g. '
                        'model.pe.max_wavelength=500000); only model fields can be overridden')
    try:
      value = ast.literal_eval(raw.strip())
    except (ValueError, SyntaxError):
      value = raw.strip()
    out[key] = value
  return out


def apply(config: ml_collections.ConfigDict, overrides: dict[str, Any]) -> ml_collections.ConfigDict:
  """A copy of ``config`` with the overrides set (each field must exist)."""
  config = copy.deepcopy(config)
  for key, value in overrides.items():
    *parents, leaf = key.split('.')
    node = config
    for part in parents:
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        raise ConfigError(f'--override {key}: {".".join(parents)} is not a config block')
      node = node[part]
    if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
      allowed = ', '.join(sorted(node.keys())) if isinstance(node, ml_collections.ConfigDict) \
          else 'none'
      raise ConfigError(f'--override {key}: {leaf!r} is not a field of '
                        f'{".".join(parents)}; allowed: {allowed}')
    current = node[leaf]
    field_type = type(current) if current is not None else _placeholder_type(node, leaf)
    if field_type is float and isinstance(value, int) and not isinstance(value, bool):
      value = float(value)    # recorded as the float the field holds
    try:
      node[leaf] = value
    except TypeError:
      ref = node.get_ref(leaf)
      raise ConfigError(f'--override {key}={value!r} has the wrong type; allowed: a '
                        f'{ref.get_type().__name__}') from None
  return config


def _placeholder_type(node: ml_collections.ConfigDict, leaf: str):
  """The declared type of a None field (a typed placeholder), or None if it has none (e.g. a
  config read back from JSON)."""
  try:
    return node.get_ref(leaf).get_type()
  except ValueError:
    return None


def lookup(config: ml_collections.ConfigDict, key: str) -> Any:
  """The value at dotted ``key`` (as applied, e.g. an int set on a float field is a float)."""
  node = config
  for part in key.split('.'):
    node = node[part]
  return node.to_dict() if isinstance(node, ml_collections.ConfigDict) else node


def model_config(config: ml_collections.ConfigDict, overrides: dict[str, Any],
                 params: dict | None = None) -> ModelConfig:
  """The validated ModelConfig of ``config.model`` with ``overrides``; with ``params``, checks
  that the overridden model has exactly the parameter shapes of the trained one."""
  cfg = ModelConfig.from_config(apply(config, overrides).model)
  if params is not None:
    want = jax.tree.map(lambda x: tuple(x.shape), nn.unbox(params))
    got = jax.tree.map(lambda x: tuple(x.shape), nn.unbox(model_lib.abstract_params(cfg)))
    if want != got:
      raise ConfigError(f'--override {", ".join(overrides) or "(none)"}: the model config does '
                        'not match the parameter shapes of the checkpoint; allowed: overrides '
                        'that keep every shape (e.g. model.pe.* fields)')
  return cfg
