"""What may change when a run resumes, and the checks that refuse the rest (before anything in
the workdir is written or moved).

A resumed run continues the same computation, so these fields are frozen once a workdir holds
a run (its ``config.json``):

* the whole ``model`` block;
* the whole ``data`` block except ``data.worker_count`` and ``data.prefetch`` (they change how
  fast batches are made, never which);
* ``train.batch_size``, ``train.seq_len`` (the data stream), ``train.seed`` (the initial
  parameters), ``train.decay_norms_and_embeddings`` (the weight-decay mask), and whether
  ``train.grad_clip_norm`` is on (> 0) or off (it changes the optimizer state's layout).

Every other field may change: ``train.steps`` (extend a run), the learning-rate fields,
``b1``/``b2``/``eps``/``weight_decay``, a positive ``grad_clip_norm`` for another positive one,
``grad_accum_steps``, ``loss_chunk``, ``z_loss``, ``log_every_steps``, and the ``mesh``,
``checkpoint`` and ``eval`` blocks. As a second line of defence the checkpoint's own tree of
arrays is compared with the state this config builds (:func:`layout_difference`).
"""

from __future__ import annotations

from typing import Any, Iterator

import jax

from ropex.errors import ConfigError

RESUMABLE_DATA = ('worker_count', 'prefetch')
FROZEN_TRAIN = ('batch_size', 'seq_len', 'seed', 'decay_norms_and_embeddings')
_WHAT = {'model': 'the model', 'data': 'the data stream', 'train.batch_size': 'the data stream',
         'train.seq_len': 'the data stream', 'train.seed': 'the initial parameters',
         'train.decay_norms_and_embeddings': 'the weight-decay mask',
         'train.grad_clip_norm': 'the optimizer state'}


def _flatten(block: Any, prefix: str) -> Iterator[tuple[str, Any]]:
  if isinstance(block, dict):
    for key in sorted(block):
      yield from _flatten(block[key], f'{prefix}.{key}')
  else:
    yield prefix, block


def frozen_fields(config: dict) -> dict[str, Any]:
  """``{dotted field: value}`` of every frozen field of a JSON-like config dict."""
  out = dict(_flatten(config.get('model', {}), 'model'))
  out.update((k, v) for k, v in _flatten(config.get('data', {}), 'data')
             if k.split('.', 1)[1] not in RESUMABLE_DATA)
  train = config.get('train', {})
  out.update((f'train.{k}', train.get(k)) for k in FROZEN_TRAIN if k in train)
  if 'grad_clip_norm' in train:
    clip = train['grad_clip_norm']
    out['train.grad_clip_norm'] = 'on (> 0)' if clip and clip > 0 else 'off (0)'
  return out


def check_config(previous: dict, current: dict, workdir: str) -> None:
  """ConfigError naming the first frozen field whose value differs from the run in ``workdir``.

  A field the previous run's ``config.json`` does not have (written by an older ropex) is not
  compared."""
  old, new = frozen_fields(previous), frozen_fields(current)
  for field in sorted(new.keys() | old.keys()):
    if field in old and old[field] != new.get(field):
      what = _WHAT.get(field, _WHAT.get(field.split('.', 1)[0], 'the run'))
      raise ConfigError(
          f'--workdir {workdir} holds a run with {field}={_show(old[field])} but this command has '
          f'{field}={_show(new.get(field))}; {field} changes {what} and cannot change on resume: '
          f'rerun with {field}={_show(old[field])} to resume, or use a new --workdir')


def _show(value) -> str:
  return value if isinstance(value, str) and value.endswith(')') else repr(value)


def _array_layout(tree) -> dict[str, tuple]:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(p, simple=True, separator='.'): (tuple(v.shape), str(v.dtype))
          for p, v in leaves}


def layout_difference(saved_tree, abstract_state) -> str | None:
  """The first difference between a checkpoint's array tree (orbax metadata) and the state this
  config builds, in words; None when they match (names, shapes and dtypes)."""
  saved, wanted = _array_layout(saved_tree), _array_layout(abstract_state)
  for name in sorted(saved.keys() | wanted.keys()):
    if name not in saved:
      return f'{name} is not in the checkpoint'
    if name not in wanted:
      return f'the checkpoint has {name}, which this config does not build'
    if saved[name] != wanted[name]:
      return f'{name} is {saved[name]} in the checkpoint but {wanted[name]} here'
  return None
