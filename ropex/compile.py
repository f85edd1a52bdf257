"""``python -m ropex.compile``: TPU fit check (ahead-of-time compile for a topology) from a CPU host (see :mod:`ropex.tools.fit_check`)."""

from ropex.config import loading

from ropex.tools import fit_check

if __name__ == '__main__':
  fit_check.define_flags()
  loading.run(fit_check.main, 'ropex.compile')
