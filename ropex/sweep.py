"""``python -m ropex.sweep``: list / run / launch a sweep (see :mod:`ropex.experiments.sweep`)."""

from ropex.config import loading

from ropex.experiments import sweep

if __name__ == '__main__':
  sweep.define_flags()
  loading.run(sweep.main, 'ropex.sweep', config_flag=None)
