"""``python -m ropex.report``: the paper's table from finished runs (see :mod:`ropex.experiments.report`)."""

from ropex.config import loading

from ropex.experiments import report

if __name__ == '__main__':
  report.define_flags()
  loading.run(report.main, 'ropex.report', config_flag=None)
