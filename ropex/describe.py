r"""``python -m ropex.describe --config CONFIG [--json]``: what a config builds, allocating nothing.

Prints parameter counts (from ``jax.eval_shape``) and, per layer, the attention shape and the
positional encoding: kind, θ, which frequency chunks rotate (0 = highest frequency), window.
"""

from __future__ import annotations

import json
import sys

from absl import app, flags
from ml_collections import config_flags

from ropex.model.config import ModelConfig
from ropex.tools.describe import describe, format_table
from ropex.config import loading
from ropex.errors import ConfigError

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file.',
                                          lock_config=True)
_JSON = flags.DEFINE_bool('json', False, 'Print one JSON object instead of a table.')


def main(argv):
  del argv
  config = _CONFIG.value
  if config is None:
    raise app.UsageError('--config is required, e.g. --config configs/prope_2b.py:p=0.25')
  try:
    model_cfg = ModelConfig.from_config(config.model)
  except ConfigError as err:
    loading.fail('ropex.describe', str(err))
  d = describe(model_cfg, config.get('name', ''))
  print(json.dumps(d, indent=1) if _JSON.value else format_table(d))
  return 0


if __name__ == '__main__':
  loading.run(main, 'ropex.describe')
