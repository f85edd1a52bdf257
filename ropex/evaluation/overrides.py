"""Evaluation-time overrides of the model config (extrapolation studies).

``--override model.pe.max_wavelength=500000`` (a different θ), ``--override
model.pe.position_scale=4`` (position interpolation: positions divided by 4, an alias of
``model.pe.scaling.type=linear`` with ``factor=4``) or a RoPE scaling (``--override
model.pe.scaling.type=yarn --override model.pe.scaling.factor=8 --override
model.pe.scaling.original_max_position=128``; per layer type:
``model.layer_types.global.pe.scaling.type=...``) changes a field of the run's ``config.model``; the :class:`~ropex.model.config.ModelConfig` is then rebuilt from the
changed block and validated as any config is. The model never looks at names: an override is a
config value like any other. Overrides must keep every parameter shape (the trained weights are
reused as they are) and are recorded in the results.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import ml_collections

from ropex import model as model_lib
from ropex.config import overrides as config_overrides
from ropex.model.config import ModelConfig
from ropex.errors import ConfigError


def parse(texts: Sequence[str]) -> dict[str, Any]:
  """``['model.pe.max_wavelength=5e5']`` -> ``{'model.pe.max_wavelength': 500000.0}``.

  Values are Python literals (numbers, strings, tuples, None); anything else is a string."""
  out = {}
  for text in texts:
    key, value = config_overrides.parse(text)
    if not key.startswith('model.') or len(key) == len('model.'):
      raise ConfigError(f'--override={text!r} must look like model.<field>=<value> (e.g. '
                        'model.pe.max_wavelength=500000); only model fields can be overridden')
    out[key] = config_overrides.literal(value)
  return out


def apply(config: ml_collections.ConfigDict, overrides: dict[str, Any]) -> ml_collections.ConfigDict:
  """A copy of ``config`` with the overrides set (each field must exist)."""
  return config_overrides.applied(config, overrides)


lookup = config_overrides.lookup


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
