"""The model: positional-encoding registry, model config, layers, ops, the Gemma decoder.

Imports run one way: ``decoder -> layers -> ops``; ``layers -> config -> positional``;
nothing here imports training, data, evaluation or analysis.

Tensor names carry their shapes, in one alphabet used everywhere in ropex::

    B  batch (rows)                     D  model (embedding) dim
    T  query positions (sequence)       F  GeGLU hidden dim
    S  key/value positions              V  vocabulary
    N  query heads                      L  layers
    K  key/value heads                  C  rotary chunks (head_dim / 2)
    G  query heads per kv head (N / K)  M  flattened rows (B * T)
    H  head dim

e.g. ``q_BTNH``, ``k_BSKH``, ``logits_BKGTS``, ``positions_BT``; a ``1`` marks a broadcast axis.

Public API of the decoder (:mod:`ropex.model.decoder`) is re-exported here, so
``from ropex import model; model.Transformer(cfg)`` works.
"""

from ropex.model.decoder import (Transformer, abstract_params, count_params, softcap,
                                 stack_layers, unstack_layers)

__all__ = ['Transformer', 'abstract_params', 'count_params', 'softcap', 'stack_layers',
           'unstack_layers']
