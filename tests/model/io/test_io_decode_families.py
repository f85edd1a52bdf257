"""Cached decoding of every released family (the transformers-made fixtures of tests/fixtures/hf):
the prompt in one cached call, then the golden tokens one by one through the cache, gives
transformers' logits at every position (sliding windows, soft-caps, local/global θ, QK/V norms,
per-layer inputs and Gemma 4's shared K/V included); free greedy generation is the full
forward's argmax."""

import os

import jax
import numpy as np
import pytest

from ropex import model as model_lib
from ropex.model import decode, generation, io
from ropex.model.config import ModelConfig

FIXTURES = os.path.join(os.path.dirname(__file__), '..', '..', 'fixtures', 'hf')
FAMILIES = ('llama', 'qwen2', 'qwen3', 'gemma', 'gemma2', 'gemma3', 'gemma4')


def _cached_logits(cfg, params, tokens_BT, prefill):
  dcfg = generation.decoding_config(cfg)
  model = model_lib.Transformer(dcfg)
  cache = decode.empty_cache(model, params, tokens_BT.shape[0], tokens_BT.shape[1])
  apply = jax.jit(lambda c, t, p: model.apply({'params': params, 'cache': c}, t, p,
                                              mutable=['cache']))
  B, T = tokens_BT.shape
  positions = np.broadcast_to(np.arange(T), (B, T)).astype(np.int32)
  out = []
  for start, stop in [(0, prefill)] + [(t, t + 1) for t in range(prefill, T)]:
    logits, variables = apply(cache, tokens_BT[:, start:stop], positions[:, start:stop])
    cache = variables['cache']
    out.append(np.asarray(logits))
  return np.concatenate(out, axis=1)


@pytest.mark.parametrize('family', FAMILIES)
def test_cached_logits_equal_transformers(family):
  golden = np.load(os.path.join(FIXTURES, family, 'golden.npz'))
  imported = io.load_model(os.path.join(FIXTURES, family))
  cfg = ModelConfig.from_config(imported.model)
  tokens = golden['input_ids'][:, :24]   # 24 > every fixture's sliding window
  cached = _cached_logits(cfg, imported.params, tokens, prefill=10)
  assert np.abs(cached - golden['logits'][:, :24]).max() < 1e-4


@pytest.mark.parametrize('family', ['gemma2', 'gemma4'])
def test_free_greedy_generation_is_the_full_forward_argmax(family):
  imported = io.load_model(os.path.join(FIXTURES, family))
  cfg = ModelConfig.from_config(imported.model)
  golden = np.load(os.path.join(FIXTURES, family, 'golden.npz'))
  prompts = [golden['input_ids'][0, :7].tolist(), golden['input_ids'][1, :3].tolist()]
  out = generation.generate(cfg, imported.params, prompts, max_new_tokens=12)
  rows = [prompt + new for prompt, new in zip(prompts, out)]
  width = max(map(len, rows))   # right-padded: causal, so the pad changes no compared logit
  logits = jax.jit(model_lib.Transformer(cfg).apply)(
      {'params': imported.params}, np.asarray([r + [0] * (width - len(r)) for r in rows],
                                              np.int32))
  for row, prompt, new in zip(np.asarray(logits), prompts, out):
    assert np.argmax(row, -1)[len(prompt) - 1:len(prompt) + len(new) - 1].tolist() == new
