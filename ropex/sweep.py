"""``python -m ropex.sweep``: list / run / launch a sweep (see :mod:`ropex.experiments.sweep`)."""

from absl import app

from ropex.experiments import sweep

if __name__ == '__main__':
  sweep.define_flags()
  app.run(sweep.main)
