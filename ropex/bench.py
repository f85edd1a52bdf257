"""``python -m ropex.bench``: speed and MFU on this machine (see :mod:`ropex.tools.bench`)."""

from absl import app

from ropex.tools import bench

if __name__ == '__main__':
  bench.define_flags()
  app.run(bench.main)
