"""Starting a run from another run's (or Gemma's) weights: ``train.init_from``.

``train.init_from`` is ``WORKDIR`` or ``WORKDIR:STEP`` (a ropex training workdir; default the
latest checkpoint) or released weights, local or at a URL (a Hugging Face checkpoint of any family
ropex reads, a .gguf file or an official Gemma Flax checkpoint; :func:`ropex.model.io.load_model`). The new run's config may change
the positional encoding and its scaling, ``seq_len``, the data and the schedule — anything
that keeps every parameter shape; the parameters are loaded (laid out for the new model's layer
scan, placed directly in their shards) and the optimizer starts fresh at step 0. A parameter
whose shape differs is one :class:`ConfigError` naming it. The resolved source (path, step,
format) is written to ``WORKDIR/init_from.json``; ``config.json`` keeps ``train.init_from`` as
given. A run that resumes from its own checkpoint ignores ``init_from``.
"""

from __future__ import annotations

import dataclasses
import json

import flax.linen as nn
import jax
import numpy as np

from ropex import model as model_lib
from ropex import paths
from ropex.errors import ConfigError
from ropex.model.config import ModelConfig
from ropex.training import step as step_lib


@dataclasses.dataclass(frozen=True)
class Source:
  path: str
  step: int | None       # None for released weights
  kind: str              # 'workdir' | 'released'


def parse(spec: str) -> Source:
  """``'/runs/a'``, ``'/runs/a:400'`` or a released checkpoint folder -> :class:`Source`."""
  path, step = spec, None
  head, sep, tail = spec.rpartition(':')
  if sep and tail.isdigit() and head:
    path, step = head, int(tail)
  root = paths.path(path, 'train.init_from')
  if not root.exists():
    raise ConfigError(f'train.init_from={spec!r}: {path!r} does not exist; allowed: a ropex '
                      f'workdir[:step] or a Gemma checkpoint folder')
  if (root / 'config.json').exists() and (root / 'checkpoints').is_dir():
    return Source(paths.resolve(path, 'train.init_from'), step, 'workdir')
  if step is not None:
    raise ConfigError(f'train.init_from={spec!r}: {path!r} is not a ropex workdir (no '
                      f'config.json and checkpoints/), so it takes no :step')
  return Source(paths.resolve(path, 'train.init_from'), None, 'released')  # a URL: copied


def _official_tree(source: Source) -> tuple[dict, int | None, dict | None]:
  """The source's parameters as the official (unscanned) tree of host arrays, its step and
  (released weights) what :func:`ropex.model.io.load_model` records."""
  if source.kind == 'released':
    from ropex.model import io  # pylint: disable=g-import-not-at-top
    imported = io.load_model(source.path, what='train.init_from')
    return imported.params, None, imported.source
  from ropex.training import inference  # pylint: disable=g-import-not-at-top
  try:
    config, params, step = inference.load_for_inference(
        source.path, source.step, names=('train.init_from', 'train.init_from (its :step)'))
  except FileNotFoundError as e:
    raise ConfigError(f'train.init_from={source.path}: {e}') from None
  cfg = ModelConfig.from_config(config.model)
  params = jax.device_get(params)
  return (model_lib.unstack_layers(params, cfg) if cfg.scan_layers else params), step, None


def _check_shapes(loaded: dict, abstract: dict, spec: str) -> None:
  want = jax.tree_util.tree_flatten_with_path(abstract)[0]
  got = dict((jax.tree_util.keystr(p), x) for p, x in
             jax.tree_util.tree_flatten_with_path(loaded)[0])
  for path, target in want:
    name = jax.tree_util.keystr(path)
    if name not in got:
      raise ConfigError(f'train.init_from={spec!r} has no parameter {name}; allowed: a source '
                        f'whose model has the same parameters (only the positional encoding, '
                        f'its scaling, seq_len, data and schedule may differ)')
    if tuple(got[name].shape) != tuple(target.shape):
      raise ConfigError(f'train.init_from={spec!r}: parameter {name} has shape '
                        f'{tuple(got[name].shape)} there and {tuple(target.shape)} in this '
                        f'model; allowed: a source with the same model shapes')
  extra = sorted(set(got) - {jax.tree_util.keystr(p) for p, _ in want})
  if extra:
    raise ConfigError(f'train.init_from={spec!r} has parameter {extra[0]}, which this model '
                      f'does not; allowed: a source with the same parameters')


@dataclasses.dataclass
class Pretrained:
  params: dict           # sharded like the new run's parameters
  record: dict           # what init_from.json records


def load(config, setup: step_lib.Setup) -> Pretrained | None:
  """The ``train.init_from`` parameters placed in the new run's shards (None if unset);
  raises ConfigError before anything is written when they do not fit the model."""
  spec = config.train.get('init_from') or ''
  if not spec:
    return None
  source = parse(spec)
  tree, step, released = _official_tree(source)
  cfg = setup.model.cfg
  loaded = model_lib.stack_layers(tree, cfg) if cfg.scan_layers else tree
  abstract = nn.unbox(setup.abstract_state.params)
  _check_shapes(loaded, abstract, spec)
  params = jax.tree.map(
      lambda host, target, sh: jax.make_array_from_callback(
          target.shape, sh, lambda idx, h=host, t=target: np.asarray(h[idx], t.dtype)),
      loaded, abstract, setup.state_shardings.params)
  record = {'path': source.path, 'step': step, 'format': source.kind}
  if released is not None:
    record.update(released)
  return Pretrained(params, record)


def initial_state(setup: step_lib.Setup, pretrained: Pretrained | None,
                  workdir: str) -> step_lib.TrainState:
  """A fresh state, or one around the pretrained parameters with a fresh optimizer (step 0);
  records the resolved source in ``WORKDIR/init_from.json``."""
  if pretrained is None:
    return step_lib.init_state(setup)
  if jax.process_index() == 0:
    paths.path(workdir).joinpath('init_from.json').write_text(
        json.dumps(pretrained.record, indent=1))
  return step_lib.fresh_state(setup, pretrained.params)
