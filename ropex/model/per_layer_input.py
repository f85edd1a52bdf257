"""Gemma 4's per-layer input embeddings (``model.hidden_size_per_layer_input`` = P > 0).

Every layer gets a P-wide input of its own, made once from the tokens and the input embedding
(:class:`ModelInputs`, ``[B, T, L, P]``) and added to the layer's output through a gated
projection (:class:`LayerInput`), as transformers' ``Gemma4TextModel.get_per_layer_inputs`` /
``project_per_layer_inputs`` and ``Gemma4TextDecoderLayer``:

    inputs_BTLP = (norm(x_BTD W_proj / sqrt(D)) + E_ple[tokens] * sqrt(P)) / sqrt(2)
    layer:  x += norm(act(x W_gate) * inputs_BTP  W_out)

Parameters (names documented in :mod:`ropex.model.layers`): ``per_layer_inputs/
{input_embedding [V_ple, L*P], model_projection [D, L*P], projection_norm/scale [P]}`` and per
layer ``per_layer_input/{gate [D, P], projection [P, D], post_norm/scale [D]}``.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from ropex.model import ops
from ropex.model.config import ModelConfig
from ropex.model.layers import _ACTIVATIONS, _fan_in, _param, norm


class ModelInputs(nn.Module):
  """``[B, T, L, P]`` per-layer inputs from the tokens and the (scaled) input embedding."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, tokens_BT, x_BTD):
    cfg = self.cfg
    L, P, D = cfg.num_layers, cfg.hidden_size_per_layer_input, cfg.embed_dim
    vocab = cfg.vocab_size_per_layer_input or cfg.vocab_size
    table = _param(self, 'input_embedding', nn.initializers.normal(stddev=P ** -0.5),
                   ('vocab', None), (vocab, L * P), cfg.param_dtype)
    w = _param(self, 'model_projection', _fan_in(0, 1), ('embed', None), (D, L * P),
               cfg.param_dtype).astype(cfg.dtype)
    B, T = tokens_BT.shape
    tok_BTLP = jnp.take(table, tokens_BT, axis=0).astype(cfg.dtype).reshape(B, T, L, P)
    tok_BTLP = tok_BTLP * jnp.sqrt(jnp.asarray(P, jnp.float32)).astype(cfg.dtype)
    proj_BTLP = ops.dense(x_BTD, w).reshape(B, T, L, P)
    proj_BTLP = proj_BTLP * jnp.asarray(D ** -0.5, cfg.dtype)
    proj_BTLP = norm(cfg, 'projection_norm')(proj_BTLP)
    return (proj_BTLP + tok_BTLP) * jnp.asarray(2.0 ** -0.5, cfg.dtype)


class LayerInput(nn.Module):
  """What one layer adds to its residual from its per-layer input ``[B, T, P]``."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BTD, ple_BTP):
    cfg = self.cfg
    P, D = cfg.hidden_size_per_layer_input, cfg.embed_dim
    gate = _param(self, 'gate', _fan_in(0, 1), ('embed', None), (D, P),
                  cfg.param_dtype).astype(cfg.dtype)
    out = _param(self, 'projection', _fan_in(0, 1), (None, 'embed'), (P, D),
                 cfg.param_dtype).astype(cfg.dtype)
    h_BTP = _ACTIVATIONS[cfg.hidden_activation](ops.dense(x_BTD, gate)) * ple_BTP
    return norm(cfg, 'post_norm')(ops.dense(h_BTP, out))
