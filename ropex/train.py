r"""``python -m ropex.train --config configs/X.py[:args] --workdir DIR [--config.a.b=v ...]``

Validates the whole config first (a bad value: one sentence on stderr, exit status 2, nothing
in DIR touched), then trains, resuming from the latest complete checkpoint in DIR if there is
one. SIGTERM / SIGINT save a checkpoint and exit with status 0; a NaN / Inf loss stops the run
with status 3 and leaves the last good checkpoint intact.

Multi-host: ``--coordinator_address=HOST:PORT --num_processes=N --process_id=I`` on every host
(or the JAX_* environment variables); on TPU pods and SLURM this is detected automatically.
"""

from __future__ import annotations

import os
import sys

from absl import flags, logging
from ml_collections import config_flags

from ropex import errors
from ropex.config import loading
from ropex.training import distributed

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Experiment config file '
                                          '(configs/X.py[:args]).', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics, config.')
distributed.define_flags()   # --coordinator_address, --num_processes, --process_id, --distributed
flags.mark_flags_as_required(['config', 'workdir'])

def main(argv):
  if len(argv) > 1:
    loading.fail('ropex.train', f'unexpected arguments {argv[1:]}; allowed: --config, '
                 '--workdir, --config.<field>=v')
  logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO
  distributed.initialize_from_flags()
  from ropex.training import checkpoint, loop, metrics  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value
  try:
    config.get('model')
  except OSError as e:
    loading.fail('ropex.train', f'--config could not be loaded: {e}')
  try:
    loop.train(config, _WORKDIR.value)
  except metrics.NonFiniteLossError as e:
    loading.fail('ropex.train', str(e), errors.EXIT_NONFINITE)
  except checkpoint.CheckpointSaveError as e:
    # The failed background write's threads may still print their own traceback at interpreter
    # shutdown; the run has already stopped and its last complete checkpoint is intact, so it
    # exits at once after the one line that says so.
    print(f'ropex.train: {e}', file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(errors.EXIT_SAVE)  # pylint: disable=protected-access


def run():
  loading.run(main, 'ropex.train')


if __name__ == '__main__':
  run()
