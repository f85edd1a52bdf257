"""`ropex.tools.step_profile`: the category of each HLO instruction and the bookkeeping of a
real trace (no time is asserted, only where it is filed)."""
import collections

import jax
import jax.numpy as jnp
import pytest

from ropex.tools import step_profile


def test_categories_and_accounting():
  f = jax.jit(lambda a, b: (a @ b, jax.nn.logsumexp(a, axis=1), jnp.tanh(a) * 2.0 + b))
  a = jnp.ones((256, 256))
  compiled = f.lower(a, a).compile()
  cats = step_profile.hlo_categories(compiled.as_text())
  # The dot is a matmul (alone or in a library fusion), logsumexp a reduction fusion, the rest
  # an elementwise fusion.
  assert {'matmul', 'reduction fusion', 'elementwise fusion'} <= set(cats.values())
  result = step_profile.profile(lambda: jax.block_until_ready(compiled(a, a)),
                                compiled.as_text(), steps=2)
  assert set(result['share']) == set(step_profile.CATEGORIES)
  assert abs(sum(result['share'].values()) - 1.0) < 1e-9
  assert sum(result['seconds_per_step'].values()) == pytest.approx(result['thunk_s_per_step'])
  assert result['seconds_per_step']['matmul'] > 0
  assert all(t['category'] == cats.get(t['name'], 'other') for t in result['top'])


def test_summarize_files_unknown_thunks_as_other():
  times = collections.Counter({'dot.1': 3e9, 'fusion.2': 1e9, 'mystery': 2e9})
  out = step_profile.summarize(times, {'dot.1': 'matmul', 'fusion.2': 'elementwise fusion'},
                               wall_s=4.0, steps=2)
  assert out['seconds_per_step'] == {'matmul': 1.5, 'copy/transpose': 0.0,
                                     'reduction fusion': 0.0, 'elementwise fusion': 0.5,
                                     'other': 1.0}
  assert out['share']['matmul'] == 0.5 and out['thunk_s_per_step'] == pytest.approx(3.0)
