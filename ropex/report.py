"""``python -m ropex.report``: the paper's table from finished runs (see :mod:`ropex.experiments.report`)."""

from absl import app

from ropex.experiments import report

if __name__ == '__main__':
  report.define_flags()
  app.run(report.main)
