"""The released families ropex reads from Hugging Face checkpoints: one row per family.

A row says which block fields the family sets (:data:`ropex.model.config.BLOCK_FIELDS`), the
defaults transformers' config class uses for fields a config.json may leave out, and which HF
norm weight fills which ropex norm. The tensor mapping itself (:mod:`ropex.model.io.hf_mapping`)
is shared: every family names its projections ``model.layers.N.self_attn.{q,k,v,o}_proj`` and
``mlp.{gate,up,down}_proj``. Adding a family touches this table only.
"""

from __future__ import annotations

import dataclasses

# HF layer norm -> ropex norm. v1 / Llama / Qwen call the pre-FFW norm post_attention_layernorm.
_PRE_NORMS = {'input_layernorm': 'pre_attention_norm', 'post_attention_layernorm': 'pre_ffw_norm'}
_SANDWICH_NORMS = {'input_layernorm': 'pre_attention_norm',
                   'post_attention_layernorm': 'post_attention_norm',
                   'pre_feedforward_layernorm': 'pre_ffw_norm',
                   'post_feedforward_layernorm': 'post_ffw_norm'}


@dataclasses.dataclass(frozen=True)
class Family:
  name: str
  fields: dict                 # block fields the family always sets
  defaults: dict               # transformers' defaults for config.json fields that may be absent
  norms: dict = dataclasses.field(default_factory=lambda: dict(_PRE_NORMS))
  scale_from_config: bool = False   # query_pre_attn_scalar read from config.json
  activation_field: str = 'hidden_activation'   # the config field transformers' MLP reads


_LLAMA_LIKE = dict(norm_unit_offset=False, scale_embeddings=False, hidden_activation='silu')
_LLAMA_DEFAULTS = dict(rope_theta=10_000.0, tie_word_embeddings=False, hidden_act='silu')
_GEMMA2_DEFAULTS = dict(query_pre_attn_scalar=256, sliding_window=4096, head_dim=256,
                        tie_word_embeddings=True, hidden_activation='gelu_pytorch_tanh')

FAMILIES = {
    'llama': Family('llama', dict(_LLAMA_LIKE), dict(_LLAMA_DEFAULTS),
                    activation_field='hidden_act'),
    'qwen2': Family('qwen2', dict(_LLAMA_LIKE, qkv_bias=True), dict(_LLAMA_DEFAULTS),
                    activation_field='hidden_act'),
    'qwen3': Family('qwen3', dict(_LLAMA_LIKE, qk_norm=True),
                    dict(_LLAMA_DEFAULTS, head_dim=128), activation_field='hidden_act'),
    'gemma': Family('gemma', {}, dict(rope_theta=10_000.0, head_dim=256, tie_word_embeddings=True,
                                      hidden_act='gelu_pytorch_tanh'),
                    activation_field='hidden_act'),
    'gemma2': Family('gemma2', dict(post_attention_norm=True, post_ffw_norm=True),
                     dict(_GEMMA2_DEFAULTS, attn_logit_softcapping=50.0,
                          final_logit_softcapping=30.0, rope_theta=10_000.0),
                     dict(_SANDWICH_NORMS), scale_from_config=True),
    'gemma3': Family('gemma3', dict(post_attention_norm=True, post_ffw_norm=True, qk_norm=True),
                     dict(_GEMMA2_DEFAULTS, rope_theta=1_000_000.0, rope_local_base_freq=10_000.0),
                     dict(_SANDWICH_NORMS), scale_from_config=True),
    'gemma4': Family('gemma4', dict(norm_unit_offset=False, post_attention_norm=True,
                                    post_ffw_norm=True, qk_norm=True, v_norm=True,
                                    layer_scalar=True, query_pre_attn_scalar=1.0),
                     dict(sliding_window=512, head_dim=256, global_head_dim=512,
                          hidden_size_per_layer_input=256, vocab_size_per_layer_input=262_144,
                          tie_word_embeddings=True, hidden_activation='gelu_pytorch_tanh'),
                     dict(_SANDWICH_NORMS)),
}

# config.json model_type -> family
MODEL_TYPES = {'llama': 'llama', 'qwen2': 'qwen2', 'qwen3': 'qwen3', 'gemma': 'gemma',
               'gemma2': 'gemma2', 'gemma3_text': 'gemma3', 'gemma3': 'gemma3',
               'gemma4_text': 'gemma4', 'gemma4': 'gemma4'}
# families ropex knows of but does not build (one line each)
REFUSED = {
    'qwen2_moe': 'mixture-of-experts feed-forward layers (Qwen MoE)',
    'qwen3_moe': 'mixture-of-experts feed-forward layers (Qwen MoE)',
    'gemma3n': 'Gemma 3n (AltUp, Laurel, activation sparsity)',
    'llama4': 'Llama 4 (mixture of experts, vision)',
    'mixtral': 'mixture-of-experts feed-forward layers',
}
