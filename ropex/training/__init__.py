"""Training: validated config -> mesh -> jitted sharded step -> optax -> orbax checkpoints.

Modules: :mod:`~ropex.training.validation` (the whole config, before anything compiles),
:mod:`~ropex.training.sharding` and :mod:`~ropex.training.distributed` (mesh, logical axes,
multi-host), :mod:`~ropex.training.optim` (AdamW and schedules), :mod:`~ropex.training.step`
(the train step), :mod:`~ropex.training.checkpoint` (orbax state + data iterator),
:mod:`~ropex.training.metrics` (JSONL + TensorBoard), :mod:`~ropex.training.loop`.
"""
