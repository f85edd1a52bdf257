"""The Gemma-style decoder.

``Transformer(cfg)(tokens_BT, positions_BT, segment_ids_BT)`` returns logits [B, T, V].
Layers are scanned in groups of one pattern period (``cfg.pattern``) when
``cfg.scan_layers``; unscanned, the tree is exactly the official Gemma one
(``layer_0`` ... ``layer_{L-1}``). :func:`unstack_layers` / :func:`stack_layers` convert.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ropex.model import pe_interface, platform
from ropex.model.layers import Attention, Embedder, FeedForward, PEParams, RMSNorm, pe_dims
from ropex.model.config import LayerSpec, ModelConfig

_REMAT = {
    'full': None,
    'dots': jax.checkpoint_policies.checkpoint_dots,
    'dots_no_batch': jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


class Block(nn.Module):
  """Pre-norm residual block: RMSNorm -> attention -> RMSNorm -> GeGLU."""
  cfg: ModelConfig
  spec: LayerSpec

  @nn.compact
  def __call__(self, x_BTD, positions_BT, segment_ids_BT):
    cfg = self.cfg
    h = RMSNorm(cfg.param_dtype, name='pre_attention_norm')(x_BTD)
    x_BTD = x_BTD + Attention(cfg, self.spec, name='attn')(h, positions_BT, segment_ids_BT)
    h = RMSNorm(cfg.param_dtype, name='pre_ffw_norm')(x_BTD)
    x_BTD = x_BTD + FeedForward(cfg.embed_dim, cfg.hidden_dim, cfg.dtype, cfg.param_dtype,
                                platform.cpu_tunings(cfg.remat), name='mlp')(h)
    return nn.with_logical_constraint(x_BTD, ('batch', 'length', 'act_embed'))


def _block_class(cfg: ModelConfig):
  if cfg.remat == 'none':
    return Block
  return nn.remat(Block, policy=_REMAT[cfg.remat], prevent_cse=not cfg.scan_layers)


class PatternGroup(nn.Module):
  """One period of the layer pattern (``layer_0`` .. ``layer_{P-1}``); the scanned unit."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x_BTD, positions_BT, segment_ids_BT):
    block = _block_class(self.cfg)
    for j, spec in enumerate(self.cfg.pattern):
      x_BTD = block(self.cfg, spec, name=f'layer_{j}')(x_BTD, positions_BT, segment_ids_BT)
    return x_BTD, None


class Transformer(nn.Module):
  cfg: ModelConfig

  def setup(self):
    cfg = self.cfg
    self.embedder = Embedder(cfg.vocab_size, cfg.embed_dim, cfg.dtype, cfg.param_dtype)
    if cfg.scan_layers:
      self.layers = nn.scan(
          PatternGroup, variable_axes={'params': 0, 'intermediates': 0},
          split_rngs={'params': True}, in_axes=(nn.broadcast, nn.broadcast),
          length=cfg.num_groups, metadata_params={nn.PARTITION_NAME: 'layers'})(cfg)
    else:
      block = _block_class(cfg)
      for i, spec in enumerate(cfg.layers):  # attribute names give the official `layer_i`
        setattr(self, f'layer_{i}', block(cfg, spec))
    self.final_norm = RMSNorm(cfg.param_dtype)
    if cfg.input_pe is not None:  # an absolute encoding acts once on the input embedding
      specs = pe_interface.as_encoding(cfg.input_pe).embedding_param_specs(pe_dims(cfg))
      self.pe_embedding = PEParams(tuple(specs.items()), cfg.param_dtype) if specs else None

  def hidden(self, tokens_BT, positions_BT=None, segment_ids_BT=None):
    """Final-normed hidden states [B, T, D] (the input of the tied-embedding logits)."""
    if positions_BT is None:
      positions_BT = jnp.broadcast_to(jnp.arange(tokens_BT.shape[1]), tokens_BT.shape)
    if segment_ids_BT is None:
      segment_ids_BT = jnp.ones(tokens_BT.shape, jnp.int32)
    x_BTD = self.embedder.encode(tokens_BT)
    if self.cfg.input_pe is not None:
      params = self.pe_embedding() if self.pe_embedding is not None else {}
      x_BTD = pe_interface.as_encoding(self.cfg.input_pe).embed(x_BTD, positions_BT, params)
    x_BTD = nn.with_logical_constraint(x_BTD, ('batch', 'length', 'act_embed'))
    if self.cfg.scan_layers:
      x_BTD, _ = self.layers(x_BTD, positions_BT, segment_ids_BT)
    else:
      for i in range(self.cfg.num_layers):
        x_BTD = getattr(self, f'layer_{i}')(x_BTD, positions_BT, segment_ids_BT)
    return self.final_norm(x_BTD)

  def logits(self, x_BTD):
    """Tied-embedding logits [B, T, V] in float32 (whatever ``cfg.dtype``), soft-capped if
    configured."""
    logits_BTV = self.embedder.decode(x_BTD, platform.cpu_tunings(self.cfg.remat))
    return softcap(logits_BTV, self.cfg.final_logit_softcap)

  def embedding(self):
    """The tied embedding table [V, D] (for losses that never materialise all logits)."""
    return self.embedder.input_embedding

  def __call__(self, tokens_BT, positions_BT=None, segment_ids_BT=None):
    return self.logits(self.hidden(tokens_BT, positions_BT, segment_ids_BT))


def softcap(logits, cap: float):
  return jnp.tanh(logits / cap) * cap if cap else logits


def abstract_params(cfg: ModelConfig, batch: int = 1, length: int = 8):
  """Parameter shapes (boxed with logical axes) via ``jax.eval_shape``: no memory used."""
  tokens = jax.ShapeDtypeStruct((batch, length), jnp.int32)
  variables = jax.eval_shape(lambda t: Transformer(cfg).init(jax.random.key(0), t), tokens)
  return variables['params']


def count_params(cfg: ModelConfig) -> dict[str, int]:
  """Total / embedding / non-embedding parameter counts, without allocating anything."""
  leaves = jax.tree_util.tree_leaves_with_path(nn.unbox(abstract_params(cfg)))
  total = sum(math.prod(x.shape) for _, x in leaves)
  embedding = sum(math.prod(x.shape) for path, x in leaves
                  if 'input_embedding' in jax.tree_util.keystr(path))
  return {'params_total': total, 'params_embedding': embedding,
          'params_non_embedding': total - embedding}


def unstack_layers(params: dict, cfg: ModelConfig) -> dict:
  """Scanned tree (``layers/layer_j`` stacked over groups) -> official ``layer_i`` tree."""
  params = dict(params)
  stacked = params.pop('layers')
  period = len(cfg.pattern)
  for i in range(cfg.num_layers):
    group, j = divmod(i, period)
    params[f'layer_{i}'] = jax.tree.map(lambda a, g=group: a[g], stacked[f'layer_{j}'])
  return params


def stack_layers(params: dict, cfg: ModelConfig) -> dict:
  """Official ``layer_i`` tree -> scanned tree (inverse of :func:`unstack_layers`)."""
  params = dict(params)
  period = len(cfg.pattern)
  per_layer = [params.pop(f'layer_{i}') for i in range(cfg.num_layers)]
  params['layers'] = {
      f'layer_{j}': jax.tree.map(lambda *xs: np.stack(xs) if isinstance(xs[0], np.ndarray)
                                 else jnp.stack(xs), *per_layer[j::period])
      for j in range(period)}
  return params
