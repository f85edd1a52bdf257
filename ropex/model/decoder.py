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
from ropex.model import per_layer_input
from ropex.model.layers import Attention, Embedder, FeedForward, PEParams, norm, pe_dims
from ropex.model.config import LayerSpec, ModelConfig

_REMAT = {
    'full': None,
    'dots': jax.checkpoint_policies.checkpoint_dots,
    'dots_no_batch': jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


class Block(nn.Module):
  """Pre-norm residual block: RMSNorm -> attention -> (post-norm) -> RMSNorm -> gated MLP ->
  (post-norm), then (Gemma 4) the per-layer input and the layer scalar. Returns the new
  residual and this layer's keys and values (for layers that share them)."""
  cfg: ModelConfig
  spec: LayerSpec

  @nn.compact
  def __call__(self, x_BTD, positions_BT, segment_ids_BT, shared_kv=None, ple_BTP=None):
    cfg = self.cfg
    h = norm(cfg, 'pre_attention_norm')(x_BTD)
    h, kv = Attention(cfg, self.spec, name='attn')(h, positions_BT, segment_ids_BT, shared_kv)
    if cfg.post_attention_norm:
      h = norm(cfg, 'post_attention_norm')(h)
    x_BTD = x_BTD + h
    h = norm(cfg, 'pre_ffw_norm')(x_BTD)
    h = FeedForward(cfg.embed_dim, cfg.mlp_dim(self.spec), cfg.dtype, cfg.param_dtype,
                    platform.cpu_tunings(cfg.remat), cfg.hidden_activation, name='mlp')(h)
    if cfg.post_ffw_norm:
      h = norm(cfg, 'post_ffw_norm')(h)
    x_BTD = x_BTD + h
    if ple_BTP is not None:
      x_BTD = x_BTD + per_layer_input.LayerInput(cfg, name='per_layer_input')(x_BTD, ple_BTP)
    if cfg.layer_scalar:
      scalar = self.param('layer_scalar', nn.with_logical_partitioning(
          nn.initializers.ones_init(), ('norm',)), (1,), cfg.param_dtype)
      x_BTD = x_BTD * scalar.astype(x_BTD.dtype)
    x_BTD = nn.with_logical_constraint(x_BTD, ('batch', 'length', 'act_embed'))
    return x_BTD, kv


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
      x_BTD, _ = block(self.cfg, spec, name=f'layer_{j}')(x_BTD, positions_BT, segment_ids_BT)
    return x_BTD, None


class Transformer(nn.Module):
  cfg: ModelConfig

  def setup(self):
    cfg = self.cfg
    self.embedder = Embedder(cfg.vocab_size, cfg.embed_dim, cfg.dtype, cfg.param_dtype,
                             cfg.scale_embeddings, cfg.tie_word_embeddings)
    if cfg.scan_layers:
      self.layers = nn.scan(
          PatternGroup, variable_axes={'params': 0, 'intermediates': 0},
          split_rngs={'params': True}, in_axes=(nn.broadcast, nn.broadcast),
          length=cfg.num_groups, metadata_params={nn.PARTITION_NAME: 'layers'})(cfg)
    else:
      block = _block_class(cfg)
      for i, spec in enumerate(cfg.layers):  # attribute names give the official `layer_i`
        setattr(self, f'layer_{i}', block(cfg, spec))
    self.final_norm = norm(cfg)
    if cfg.hidden_size_per_layer_input:
      self.per_layer_inputs = per_layer_input.ModelInputs(cfg)
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
    ple_BTLP = (self.per_layer_inputs(tokens_BT, x_BTD) if self.cfg.hidden_size_per_layer_input
                else None)
    if self.cfg.input_pe is not None:
      params = self.pe_embedding() if self.pe_embedding is not None else {}
      x_BTD = pe_interface.as_encoding(self.cfg.input_pe).embed(x_BTD, positions_BT, params)
    x_BTD = nn.with_logical_constraint(x_BTD, ('batch', 'length', 'act_embed'))
    if self.cfg.scan_layers:
      x_BTD, _ = self.layers(x_BTD, positions_BT, segment_ids_BT)
    else:
      x_BTD = self._unscanned(x_BTD, ple_BTLP, positions_BT, segment_ids_BT)
    return self.final_norm(x_BTD)

  def _unscanned(self, x_BTD, ple_BTLP, positions_BT, segment_ids_BT):
    """The layers one by one, with per-layer inputs and shared K/V where configured."""
    kvs = {}
    for i, spec in enumerate(self.cfg.layers):
      shared = kvs[spec.kv_source] if spec.kv_source >= 0 else None
      ple = ple_BTLP[:, :, i] if ple_BTLP is not None else None
      x_BTD, kvs[i] = getattr(self, f'layer_{i}')(x_BTD, positions_BT, segment_ids_BT, shared,
                                                  ple)
    return x_BTD

  def logits(self, x_BTD):
    """Tied-embedding logits [B, T, V] in float32 (whatever ``cfg.dtype``), soft-capped if
    configured."""
    logits_BTV = self.embedder.decode(x_BTD, platform.cpu_tunings(self.cfg.remat))
    return softcap(logits_BTV, self.cfg.final_logit_softcap)

  def embedding(self):
    """The output embedding table [V, D] (for losses that never materialise all logits)."""
    return self.embedder.table()

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
                  if is_embedding(jax.tree_util.keystr(path)))
  return {'params_total': total, 'params_embedding': embedding,
          'params_non_embedding': total - embedding}


def is_embedding(name: str) -> bool:
  """Embedding tables (input, untied output, per-layer input) by parameter path."""
  return 'input_embedding' in name or 'output_embedding' in name


def output_table(params: dict):
  """The output embedding [V, D] of a parameter tree (tied: the input embedding)."""
  embedder = params['embedder']
  return embedder['output_embedding'] if 'output_embedding' in embedder else (
      embedder['input_embedding'])


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
