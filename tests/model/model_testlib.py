"""Shared helpers of the model tests: a small model config."""

from ropex.model.config import ModelConfig, model_block


def make_cfg(**overrides) -> ModelConfig:
  """A small GQA model (4 query / 2 kv heads, head dim 8), with ``overrides``."""
  base = dict(vocab_size=64, num_layers=2, embed_dim=32, num_heads=4, num_kv_heads=2,
              head_dim=8, hidden_dim=48)
  base.update(overrides)
  return ModelConfig.from_config(model_block('tiny', **base))
