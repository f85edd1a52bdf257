"""``python -m ropex.bench``: speed and MFU on this machine (see :mod:`ropex.tools.bench`)."""

from ropex.config import loading

from ropex.tools import bench

if __name__ == '__main__':
  bench.define_flags()
  loading.run(bench.main, 'ropex.bench', config_flag=None)
