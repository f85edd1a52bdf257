"""Fixtures of the evaluation tests (helpers live in evaluation_testlib.py)."""

import pytest

from evaluation_testlib import init_params, micro_config


@pytest.fixture(scope='module')
def micro_rope():
  c = micro_config('rope', max_wavelength=10_000)
  return c, init_params(c)
