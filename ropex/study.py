r"""``python -m ropex.study``: a whole length-generalisation study from one config file — runs x
evaluation-time variants x lengths x suite — written as one report (``study.md`` and figures).

  python -m ropex.study --config configs/study_tiny.py
  python -m ropex.study --config configs/study_tiny.py --config.runs='/tmp/ropex-demo/*' \
      --config.out=/tmp/study

The config format and the outputs: :mod:`ropex.evaluation.study`.
"""

from __future__ import annotations

from absl import app, logging
from ml_collections import config_flags

from ropex.config import loading

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Study config file, e.g. '
                                          'configs/study_tiny.py.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments {argv[1:]}')
  logging.set_verbosity(logging.WARNING)
  if _CONFIG.value is None:
    raise app.UsageError('--config is required (e.g. configs/study_tiny.py)')
  from ropex.evaluation import study  # pylint: disable=g-import-not-at-top
  out = study.run(_CONFIG.value, progress=lambda msg: print(msg, flush=True))
  print(out['markdown'])
  print(f'wrote {out["path"]} and {len(out["figures"])} figures')


if __name__ == '__main__':
  loading.run(main, 'ropex.study')
