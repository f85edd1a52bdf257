"""The paper's quantitative claims, each against an independent numpy computation."""
import functools
import math
import os
import re

import numpy as np
import pytest

from ropex.analysis import theory
import reference


def rope_np(x_TH, positions_T, theta):
  """Half-split RoPE in float64 (the shared reference)."""
  return reference.rope(x_TH, positions_T, theta)

def test_gaussian_scores_have_zero_mean_at_every_distance_but_ones_decay():
  d, draws = 64, 4000
  r = theory.rope_no_decay(head_dim=d, draws=draws, max_distance=4096, seed=0)
  n = r.numbers
  se = math.sqrt(d / draws)            # Var(q^T R k) = tr(R R^T) = d for q, k ~ N(0, I)
  assert n['analytic_stderr'] == pytest.approx(se)
  mean = np.asarray(n['mean'])
  # Band: 4.5 standard errors at each of the 72 distances (two-sided p ~ 7e-6 each).
  assert np.all(np.abs(mean) <= 4.5 * se)
  np.testing.assert_allclose(n['stderr'], se, rtol=0.1)
  distances = np.asarray(n['distances'])
  assert distances[0] == 0 and distances[-1] == 4096 and len(distances) == 72
  g = 10_000.0 ** (-2 * np.arange(d // 2) / d)
  ones = 2 * np.cos(distances[:, None] * g).sum(-1)
  np.testing.assert_allclose(n['ones_score'], ones, atol=1e-3 * d)
  assert n['ones_score'][0] == pytest.approx(d, rel=1e-5)
  far = np.abs(np.asarray(n['ones_score'])[distances >= 512])
  assert far.mean() < 0.2 * d


@pytest.mark.parametrize('kind', ['diagonal', 'previous'])
@pytest.mark.parametrize('eps', [0.1, 1e-2, 1e-3, 1e-4])
def test_constructed_heads_reach_one_minus_eps(kind, eps):
  length, d = 64, 64
  h = theory.construct_head(kind, eps, length=length, head_dim=d)
  assert h['min_target_attention'] >= 1 - eps
  # Independent check: rotate the returned pre-PE vectors ourselves, causal softmax.
  pos = np.arange(length)
  q = rope_np(np.broadcast_to(h['q'], (length, d)), pos, 10_000.0)
  k = rope_np(np.broadcast_to(h['k'], (length, d)), pos, 10_000.0)
  logits = q @ k.T / math.sqrt(d)
  logits = np.where(np.tril(np.ones((length, length), bool)), logits, -np.inf)
  p = np.exp(logits - logits.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  t = np.arange(1, length)
  target = p[t, t] if kind == 'diagonal' else p[t, t - 1]
  assert target.min() >= 1 - eps
  np.testing.assert_allclose(p, h['attention'], atol=1e-4)
  # The norm only lives in the highest-frequency chunk (dims 0 and d/2).
  assert np.count_nonzero(np.asarray(h['q'])[[i for i in range(d) if i not in (0, d // 2)]]) == 0
  # delta is the smallest 1 - cos(r) over the distances of the sequence.
  assert h['delta'] == pytest.approx(min(1 - math.cos(r) for r in range(1, length)))


def test_nope_self_attention_on_bos_x_x_never_exceeds_one_half():
  r = theory.nope_self_attention_bound(draws=600, seed=1, eps=0.01)
  n = r.numbers
  assert n['nope_max_self_attention'] <= 0.5 + theory.NOPE_BOUND_SLACK  # float32 rounding
  assert n['rope_max_self_attention'] > 0.5 + theory.NOPE_BOUND_SLACK  # RoPE breaks the tie ...
  assert n['rope_fraction_above_half'] > 0.0
  assert n['constructed_rope_self_attention'] >= 0.99  # ... and a built head reaches 1 - eps


def closed_form_break(theta, d, similarity):
  """First distance where cos(r g) < similarity, g the lowest RoPE frequency."""
  g = theta ** (-2 * (d // 2 - 1) / d)
  phi = math.acos(similarity)
  assert 0.02 < (phi / g) % 1 < 0.98   # not a float tie at the boundary
  return math.floor(phi / g) + 1


def test_semantic_channel_breaking_distances_match_the_closed_form():
  d, sim = 256, 0.9
  r = theory.semantic_channels(head_dim=d, similarity=sim, max_distance=1_000_000)
  channels = r.numbers['channels']
  ten_k, five_hundred_k, unrotated = (channels[k] for k in channels)
  assert ten_k['breaking_distance'] == closed_form_break(10_000.0, d, sim) == 4198
  assert five_hundred_k['breaking_distance'] == closed_form_break(500_000.0, d, sim) == 203540
  assert unrotated['breaking_distance'] is None and unrotated['frequency'] == 0.0
  assert ten_k['chunk'] == five_hundred_k['chunk'] == unrotated['chunk'] == d // 2 - 1


def test_breaking_distance_for_other_similarities():
  from ropex.model import positional
  for sim in (0.5, 0.99):
    pe = positional.from_config({'kind': 'rope', 'max_wavelength': 10_000.0}, 64)
    got = theory.breaking_distance(pe, 64, sim, 200_000)['distance']
    assert got == closed_form_break(10_000.0, 64, sim)


def test_run_all_writes_a_report_with_existing_figures(tmp_path):
  checks = (functools.partial(theory.rope_no_decay, draws=200, max_distance=256),
            functools.partial(theory.positional_heads, length=16),
            functools.partial(theory.nope_self_attention_bound, draws=64),
            theory.semantic_channels)
  theory.run_all(str(tmp_path), html=True, checks=checks)
  md = (tmp_path / 'theory.md').read_text()
  links = re.findall(r'!\[[^]]*\]\(([^)]+)\)', md)
  assert len(links) == 4
  for link in links:
    assert not os.path.isabs(link) and (tmp_path / link).stat().st_size > 1000
  assert (tmp_path / 'theory.html').exists() and (tmp_path / 'theory.json').exists()
  assert 'breaking distance 4198' in md and 'never' in md
