"""The jitted, sharded train and eval steps and the directly-sharded initial state.

Gradient accumulation (``train.grad_accum_steps`` = A) runs inside the step as a ``lax.scan``
over A microbatches (row ``i`` of the batch goes to microbatch ``i % A``, so every device keeps
its rows). Every microbatch's loss is divided by the token weight of the *whole* batch, so the
accumulated gradient equals the big-batch gradient up to float summation order.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec

from ropex.model import loss as loss_lib
from ropex.training import optim, sharding
from ropex.model import Transformer
from ropex.model.config import ModelConfig

# Fields of a batch (all [B, T]) and their dtypes.
BATCH_DTYPES = {'inputs': np.int32, 'targets': np.int32, 'positions': np.int32,
                'segment_ids': np.int32, 'weights': np.float32, 'task_ids': np.int32}


class TrainState(flax.struct.PyTreeNode):
  step: jax.Array          # int32 scalar: optimizer updates applied so far
  params: Any              # float32 (``model.param_dtype``), scanned layer layout
  opt_state: Any


@dataclasses.dataclass(frozen=True)
class Setup:
  """Everything the steps are built from."""
  config: Any
  mesh: jax.sharding.Mesh
  model: Transformer
  optimizer: optax.GradientTransformation
  rules: tuple
  state_shardings: TrainState
  abstract_state: TrainState          # ShapeDtypeStructs carrying shardings
  batch_sharding: jax.sharding.NamedSharding


def make_setup(config, mesh) -> Setup:
  model = Transformer(ModelConfig.from_config(config.model))
  optimizer = optim.make_optimizer(config.train)
  rules = sharding.axis_rules(config)
  seed = int(config.train.seed)

  boxed_params = jax.eval_shape(
      lambda: model.init(jax.random.key(seed), jnp.zeros((1, 8), jnp.int32))['params'])
  param_specs = nn.get_partition_spec(boxed_params)
  abstract = jax.eval_shape(functools.partial(_init_state, model, optimizer, seed))
  is_spec = lambda x: isinstance(x, (PartitionSpec, optax.MaskedNode))
  opt_specs = optax.tree_map_params(optimizer, lambda _, spec: spec, abstract.opt_state,
                                    param_specs, transform_non_params=lambda _: PartitionSpec(),
                                    is_leaf=is_spec)
  specs = TrainState(step=PartitionSpec(), params=param_specs, opt_state=opt_specs)
  state_shardings = sharding.logical_to_sharding(specs, mesh, rules)
  sharding.check_divisible(abstract.params, state_shardings.params)
  abstract_state = jax.tree.map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, state_shardings)
  return Setup(config, mesh, model, optimizer, rules, state_shardings, abstract_state,
               sharding.batch_sharding(mesh, rules))


def _init_state(model, optimizer, seed) -> TrainState:
  params = nn.unbox(model.init(jax.random.key(seed), jnp.zeros((1, 8), jnp.int32))['params'])
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    opt_state=optimizer.init(params))


def init_state(setup: Setup) -> TrainState:
  """The initial state, created directly in its shards (never whole on one device)."""
  init = jax.jit(functools.partial(_init_state, setup.model, setup.optimizer,
                                   int(setup.config.train.seed)),
                 out_shardings=setup.state_shardings)
  with sharding.activation_rules(setup.mesh, setup.rules):
    return init()


def fresh_state(setup: Setup, params) -> TrainState:
  """A state at step 0 around given (sharded) ``params``: a fresh optimizer state."""
  init = jax.jit(lambda p: TrainState(step=jnp.zeros((), jnp.int32), params=p,
                                      opt_state=setup.optimizer.init(p)),
                 out_shardings=setup.state_shardings)
  with sharding.activation_rules(setup.mesh, setup.rules):
    return init(params)


def abstract_batch(setup: Setup, rows: int) -> dict[str, jax.ShapeDtypeStruct]:
  shape = (rows, int(setup.config.train.seq_len))
  return {k: jax.ShapeDtypeStruct(shape, dt, sharding=setup.batch_sharding)
          for k, dt in BATCH_DTYPES.items()}


def loss_sums(model: Transformer, params, batch, loss_chunk: int) -> loss_lib.LossSums:
  """Cross-entropy sums of the model on one batch (chunked if ``loss_chunk`` > 0)."""
  variables = {'params': params}
  hidden_BTD = model.apply(variables, batch['inputs'], batch['positions'],
                           batch['segment_ids'], method=Transformer.hidden)
  logits_fn = lambda x_BTD: model.apply(variables, x_BTD, method=Transformer.logits)
  if loss_chunk:
    return loss_lib.chunked_cross_entropy(hidden_BTD, logits_fn, batch['targets'],
                                          batch['weights'], loss_chunk)
  return loss_lib.cross_entropy(logits_fn(hidden_BTD), batch['targets'], batch['weights'])


def _grads(setup: Setup, params, batch):
  """(sum of ce, gradient of the objective) over the whole batch, accumulated if configured."""
  train = setup.config.train
  z_loss, chunk, accum = float(train.z_loss), int(train.loss_chunk), int(train.grad_accum_steps)
  total_weight = jnp.maximum(jnp.sum(batch['weights'].astype(jnp.float32)), 1.0)

  def objective(p, micro):
    sums = loss_sums(setup.model, p, micro, chunk)
    return (sums.ce_sum + z_loss * sums.z_sum) / total_weight, sums.ce_sum

  grad_fn = jax.value_and_grad(objective, has_aux=True)
  if accum == 1:
    (_, ce_sum), grads = grad_fn(params, batch)
    return ce_sum, grads, total_weight

  def split(x_BT):  # [B, T] -> [A, B/A, T], row i -> microbatch i % A
    x_ABT = jnp.swapaxes(x_BT.reshape((x_BT.shape[0] // accum, accum) + x_BT.shape[1:]), 0, 1)
    return nn.with_logical_constraint(x_ABT, (None,) + sharding.BATCH_AXES)

  def body(carry, micro):
    grads_acc, ce_acc = carry
    (_, ce), g = grad_fn(params, micro)
    return (jax.tree.map(jnp.add, grads_acc, g), ce_acc + ce), None

  zeros = jax.tree.map(jnp.zeros_like, params)
  (grads, ce_sum), _ = jax.lax.scan(body, (zeros, jnp.zeros((), jnp.float32)),
                                    jax.tree.map(split, batch))
  return ce_sum, grads, total_weight


def max_position(batch) -> jax.Array:
  """The largest position of a real (non-padding) token in the batch: how far into its context
  the model was trained (``train/max_position``; -1 for an all-padding batch)."""
  return jnp.max(jnp.where(batch['segment_ids'] > 0, batch['positions'], -1))


def make_train_step(setup: Setup) -> Callable:
  """``train_step(state, batch) -> (state, metrics)``, jitted with shardings and donation."""
  def train_step(state: TrainState, batch):
    with sharding.activation_rules(setup.mesh, setup.rules):
      ce_sum, grads, total_weight = _grads(setup, state.params, batch)
      grad_norm = optax.global_norm(grads)
      updates, opt_state = setup.optimizer.update(grads, state.opt_state, state.params)
      params = optax.apply_updates(state.params, updates)
    new_state = TrainState(step=state.step + 1, params=params, opt_state=opt_state)
    metrics = {'loss': ce_sum / total_weight, 'grad_norm': grad_norm, 'tokens': total_weight,
               'max_position': max_position(batch)}
    return new_state, metrics

  batch_shardings = {k: setup.batch_sharding for k in BATCH_DTYPES}
  return jax.jit(train_step, in_shardings=(setup.state_shardings, batch_shardings),
                 out_shardings=(setup.state_shardings, sharding.replicated(setup.mesh)),
                 donate_argnums=(0,))


def make_eval_step(setup: Setup, num_tasks: int) -> Callable:
  """``eval_step(params, batch) -> sums`` (ce, weight, per-task correct and total counts)."""
  def eval_step(params, batch):
    with sharding.activation_rules(setup.mesh, setup.rules):
      sums = loss_sums(setup.model, params, batch, int(setup.config.train.loss_chunk))
    weights_BT = batch['weights'].astype(jnp.float32)
    scored_BTK = ((batch['task_ids'][..., None] == jnp.arange(num_tasks)) &
                  (weights_BT[..., None] > 0))
    return {'ce_sum': sums.ce_sum, 'weight_sum': jnp.sum(weights_BT),
            'correct_K': jnp.sum(scored_BTK & sums.correct_BT[..., None], axis=(0, 1)),
            'total_K': jnp.sum(scored_BTK, axis=(0, 1))}

  batch_shardings = {k: setup.batch_sharding for k in BATCH_DTYPES}
  return jax.jit(eval_step, in_shardings=(setup.state_shardings.params, batch_shardings),
                 out_shardings=sharding.replicated(setup.mesh))
