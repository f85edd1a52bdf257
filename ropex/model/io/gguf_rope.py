"""llama.cpp's ``rope_freqs`` tensor (Llama 3.1-style rope scaling) back to transformers' ``llama3``
rope parameters.

llama.cpp's converter (``convert_hf_to_gguf.py``, ``LlamaModel.generate_extra_tensors``) does not
store ``rope_scaling = {rope_type: llama3, ...}`` as metadata: it stores one float32 factor per
rotary chunk k (``head_dim / 2`` of them) in the tensor ``rope_freqs.weight``, computed from the
float32 frequencies ``θ^(-2k/d)`` with wavelength ``w = 2π / freq`` as::

    1                              if w < L0 / high_freq_factor
    factor                         if w > L0 / low_freq_factor
    1 / ((1 - s) / factor + s)     otherwise, s = (L0 / w - low_freq_factor)
                                                  / (high_freq_factor - low_freq_factor)

and llama.cpp divides each frequency by its factor (``ggml_rope_ext``'s ``freq_factors``): the
factor is transformers' ``inv_freq / inv_freq_llama``. (``L0`` is read from the config's
top-level ``original_max_position_embeddings``, default 8192: 8192 for every Llama 3.x release.)

Recovery. ``s = a/w - b`` with ``a = L0 / (high - low)``, ``b = low / (high - low)``, and every
factor is ``1 / ((1 - clip(s, 0, 1)) / factor + clip(s, 0, 1))``: the factors determine
``factor`` (their largest value) and the line ``(a, b)`` only, never ``(L0, low, high)`` apart —
scaling all three together changes nothing. So:

* ``a, b``: the least-squares line through the chunks strictly between 1 and ``factor`` (two or
  more: Llama 3.1 8B has 6, Llama 3.2 1B 3). With one such chunk ``b`` is taken as 1/3
  (``high_freq_factor = 4 · low_freq_factor``, Meta's ratio); with none, also ``b = 1/3`` and
  ``a`` the geometric middle of the values that keep every chunk on its side.
* The representative of ``(L0, low, high)``: ``L0`` = the file's
  ``<arch>.rope.scaling.original_context_length`` when it stores one, else ``round(a / b)``
  (``low_freq_factor`` = 1, as in every Llama 3.x release); then ``low = b·L0/a``,
  ``high = (1 + b)·L0/a`` (6 significant digits: the factors are float32).

The recovered parameters are then run through ropex's own ``llama3`` scaling
(:mod:`ropex.model.rope_scaling`, transformers' semantics) and the factors it gives must equal the
stored tensor within rtol 1e-6 (float32 rounding is ~2e-7); anything else — a factor below 1, a
shape other than ``head_dim / 2``, factors no ``llama3`` scaling gives — is refused in one line
naming the tensor, never imported as some other scaling. Factors that are all 1 are no scaling.
"""

from __future__ import annotations

import math

import numpy as np

from ropex.errors import ConfigError

TENSOR = 'rope_freqs.weight'
RTOL = 1e-6
_B_CONVENTION = 1.0 / 3.0   # high_freq_factor = 4 * low_freq_factor where the factors leave it open


def llama3_rope_scaling(factors, theta: float, dim: int, original: int | None = None,
                        where: str = '') -> dict | None:
  """transformers' ``rope_scaling`` (``rope_type`` llama3) whose factors are ``factors`` (None:
  all factors 1, no scaling); ``original``: the file's ``original_context_length`` if stored."""
  f_K = np.asarray(factors, np.float64).reshape(-1)
  if f_K.shape != (dim // 2,) or not np.all(np.isfinite(f_K)) or f_K.min() < 1.0:
    raise _refusal(where, f'it holds {f_K.size} factors (min {np.min(f_K, initial=np.inf):.7g}); '
                   f'allowed: {dim // 2} finite factors >= 1 (one per rotary chunk of head dim '
                   f'{dim})')
  if np.all(f_K == 1.0):
    return None
  factor = float(str(np.float32(f_K.max())))
  freq_K = 1.0 / np.float32(theta) ** (np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim))
  x_K = freq_K.astype(np.float32).astype(np.float64) / (2 * math.pi)   # the converter's float32
  a, b = _line(x_K, f_K, factor, where)
  if original is None and b <= 0:
    raise _refusal(where, 'its smoothing band has low_freq_factor 0')
  L0 = int(original) if original is not None else int(round(a / b))
  low, high = (float(f'{v:.6g}') for v in (b * L0 / a, (1 + b) * L0 / a))
  scaling = {'rope_type': 'llama3', 'factor': factor, 'low_freq_factor': low,
             'high_freq_factor': high, 'original_max_position_embeddings': L0}
  _check(scaling, f_K, float(theta), dim, where)
  return scaling


def _line(x_K, f_K, factor: float, where: str) -> tuple[float, float]:
  """``(a, b)`` of ``s = a·x - b`` (x = 1/wavelength) through the smoothed chunks."""
  s_K = (1.0 / f_K - 1.0 / factor) / (1.0 - 1.0 / factor)
  medium = (f_K > 1.0) & (f_K < factor)
  if medium.sum() >= 2:
    slope, intercept = np.polyfit(x_K[medium], s_K[medium], 1)
    return float(slope), float(-intercept)
  b = _B_CONVENTION
  if medium.sum() == 1:
    return float((s_K[medium][0] + b) / x_K[medium][0]), b
  ones, full = f_K == 1.0, f_K == factor
  lowest = (1 + b) / x_K[ones].min() if ones.any() else 0.0     # every 1-chunk at s >= 1
  highest = b / x_K[full].max()                                  # every factor-chunk at s <= 0
  if lowest > highest:
    raise _refusal(where, 'its step from 1 to factor is steeper than a smoothing band with '
                   'high_freq_factor = 4 x low_freq_factor allows')
  return float(math.sqrt(lowest * highest) if lowest else highest / 2), b


def _check(scaling: dict, f_K, theta: float, dim: int, where: str) -> None:
  """The factors ropex's llama3 scaling gives for ``scaling`` must be the stored ones."""
  from ropex.model import rope_scaling  # pylint: disable=g-import-not-at-top
  ours = rope_scaling.Scaling(
      type='llama3', factor=scaling['factor'], low_freq_factor=scaling['low_freq_factor'],
      high_freq_factor=scaling['high_freq_factor'],
      original_max_position=scaling['original_max_position_embeddings'])
  if not (scaling['high_freq_factor'] > scaling['low_freq_factor'] > 0 and
          scaling['original_max_position_embeddings'] >= 2):
    raise _refusal(where, f'the nearest llama3 parameters are not valid ({_show(scaling)})')
  unscaled_K = np.power(theta, -np.arange(0, dim, 2, dtype=np.float64) / dim)
  ran_K = unscaled_K / ours.inv_freq(theta, dim)
  bad = np.flatnonzero(~np.isclose(ran_K, f_K, rtol=RTOL, atol=0.0))
  if bad.size:
    k = int(bad[0])
    raise _refusal(where, f'factor {k} is {f_K[k]:.7g} where the nearest llama3 scaling '
                   f'({_show(scaling)}) gives {ran_K[k]:.7g} (rtol {RTOL:g})')


def _show(scaling: dict) -> str:
  return ', '.join(f'{k} {v:g}' for k, v in scaling.items() if k != 'rope_type')


def _refusal(where: str, why: str) -> ConfigError:
  return ConfigError(f'{where}{": " if where else ""}tensor {TENSOR} (llama.cpp\'s Llama 3.1 rope '
                     f'factors) is not a llama3 rope scaling: {why}; ropex imports it only as '
                     'one (or import the Hugging Face checkpoint)')
