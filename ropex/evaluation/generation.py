"""Free greedy generation and RULER's string-match metrics.

:func:`greedy_decode` is the ONE place the evaluation generates text. It is the interim decoder:
every step runs the full forward pass over the prompt and what was generated so far (exact, no
KV cache, O(steps x T^2) attention); ``ropex.generate``'s cached ``generate(...)`` replaces its
body once it lands, with the same signature.

RULER's metrics (``scripts/eval/synthetic/constants.py`` of github.com/NVIDIA/RULER), per
example with prediction ``pred`` (the decoded generation) and references ``ref`` (the expected
answers, strings)::

  string_match_all:  sum(1.0 if r.lower() in pred.lower() else 0.0 for r in ref) / len(ref)
  string_match_part: max(1.0 if r.lower() in pred.lower() else 0.0 for r in ref)

averaged over examples and reported x 100, rounded to 2 decimals. Order never matters: an
answer counts when it occurs anywhere in the prediction. RULER's evaluation strips the
prediction and turns control characters into newlines first (``postprocess_pred`` in
``scripts/eval/evaluate.py``); :func:`postprocess` does the same.
"""

from __future__ import annotations

import functools
import re
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

ModelApply = Callable[..., jax.Array]   # (params, tokens_BT, at_B) -> logits_BV


@functools.partial(jax.jit, static_argnums=(0, 4))
def _decode(model_apply, params, tokens_BT, lengths_B, max_new_tokens: int):
  B = tokens_BT.shape[0]

  def step(i, tokens_BT):
    at_B = lengths_B - 1 + i              # the last known token of every row
    next_B = jnp.argmax(model_apply(params, tokens_BT, at_B), axis=-1).astype(tokens_BT.dtype)
    return tokens_BT.at[jnp.arange(B), at_B + 1].set(next_B)

  tokens_BT = jax.lax.fori_loop(0, max_new_tokens, step, tokens_BT)
  idx_BN = lengths_B[:, None] + jnp.arange(max_new_tokens)[None, :]
  return jnp.take_along_axis(tokens_BT, idx_BN, axis=1)


def greedy_decode(model_apply: ModelApply, params, prompts_BT: np.ndarray,
                  lengths_B: np.ndarray, max_new_tokens: int, width: int | None = None,
                  put: Callable = jnp.asarray, get: Callable = np.asarray) -> np.ndarray:
  """``tokens_BN``: the ``max_new_tokens`` tokens greedy decoding writes after row ``b``'s
  first ``lengths_B[b]`` tokens of ``prompts_BT`` (the rest of a row is ignored).

  ``model_apply(params, tokens_BT, at_B) -> logits_BV`` gives the next-token logits after
  position ``at_B[b]`` of row ``b`` (a hashable callable: it is a static argument of the jitted
  loop). Rows run at ``width`` tokens (default: ``T + max_new_tokens``); causal attention makes
  the tokens after ``at_B`` irrelevant, so one buffer serves every step. ``put`` places a host
  batch (e.g. split over a mesh's batch axes), ``get`` brings the result back to the host."""
  prompts_BT = np.asarray(prompts_BT, np.int32)
  lengths_B = np.asarray(lengths_B, np.int32)
  B, T = prompts_BT.shape
  if max_new_tokens < 1:
    return np.zeros((B, 0), np.int32)
  if lengths_B.shape != (B,) or (lengths_B < 1).any() or (lengths_B > T).any():
    raise ValueError(f'lengths_B must hold {B} prompt lengths in [1, {T}], got {lengths_B}')
  width = int(width or T + max_new_tokens)
  if width < int(lengths_B.max()) + max_new_tokens:
    raise ValueError(f'width {width} cannot hold the prompts and {max_new_tokens} new tokens')
  buf = np.zeros((B, width), np.int32)
  keep = np.arange(T)[None, :] < lengths_B[:, None]
  buf[:, :T] = np.where(keep, prompts_BT, 0)
  out = _decode(model_apply, params, put(buf), put(lengths_B), int(max_new_tokens))
  return np.asarray(get(out), np.int32)


_CONTROL = re.compile(r'[\x00-\x1f]')


def postprocess(pred: str) -> str:
  """RULER's ``postprocess_pred``: strip, control characters -> newline, strip."""
  return _CONTROL.sub('\n', pred.strip()).strip()


def match_all(pred: str, refs: Sequence[str]) -> float:
  """One example's ``string_match_all``: the fraction of ``refs`` found in ``pred``."""
  p = pred.lower()
  return sum(1.0 if r.lower() in p else 0.0 for r in refs) / len(refs)


def match_part(pred: str, refs: Sequence[str]) -> float:
  """One example's ``string_match_part``: 1 when any of ``refs`` is found in ``pred``."""
  p = pred.lower()
  return max(1.0 if r.lower() in p else 0.0 for r in refs)


def string_match_all(preds: Sequence[str], refs: Sequence[Sequence[str]]) -> float:
  """RULER's ``string_match_all`` over a set of examples (in %, 2 decimals)."""
  return round(sum(match_all(p, r) for p, r in zip(preds, refs)) / len(preds) * 100, 2)


def string_match_part(preds: Sequence[str], refs: Sequence[Sequence[str]]) -> float:
  """RULER's ``string_match_part`` over a set of examples (in %, 2 decimals)."""
  return round(sum(match_part(p, r) for p, r in zip(preds, refs)) / len(preds) * 100, 2)


METRICS = {'string_match_all': match_all, 'string_match_part': match_part}
