"""Shared helpers for the analysis tests (imported by name; not a conftest, so it cannot
clash with other test folders)."""
import flax.linen as nn
import jax
import numpy as np

from ropex import model as model_lib


def random_params(cfg, seed=0):
  """Random parameters of the right tree and shapes, without compiling an init (fast on a
  loaded CPU): N(0, 1/fan_in) weights, N(0, 0.1) norm scales, N(0, 1/D) embedding."""
  rng = np.random.default_rng(seed)
  shapes = nn.unbox(model_lib.abstract_params(cfg))

  def fill(path, leaf):
    name = jax.tree_util.keystr(path)
    if 'scale' in name:
      return (0.1 * rng.standard_normal(leaf.shape)).astype(np.float32)
    fan_in = cfg.embed_dim if 'input_embedding' in name else leaf.shape[-2]
    return (rng.standard_normal(leaf.shape) / np.sqrt(fan_in)).astype(np.float32)

  return jax.tree_util.tree_map_with_path(fill, shapes)
