"""Released weights -> a ropex model: ``load_model(path)`` for every format ropex reads::

    imported = load_model('/ckpt/Qwen3-0.6B')            # a Hugging Face folder
    logits = Transformer(ModelConfig.from_config(imported.model)).apply(
        {'params': imported.params}, tokens)

One module per format: :mod:`ropex.model.io.huggingface` (``config.json`` + safetensors, every
family of :mod:`ropex.model.io.hf_families`) and, for the official Gemma Flax checkpoints,
:mod:`ropex.model.io.gemma2_flax` (Gemma 2/3; config from a sidecar or a preset,
:mod:`ropex.model.io.gemma_flax_config`) and :mod:`ropex.model.io.gemma_flax` (Gemma v1); :mod:`ropex.model.io.gguf` (llama.cpp files,
dequantised, through the Hugging Face families' mapping).
Every format may also lie at a URL (``gs://bucket/Qwen3-0.6B``): :mod:`ropex.model.io.remote`
copies the files the format needs into a local folder first, and ``source['path']`` keeps the
URL.
``Imported.model`` is a complete ``model`` block (unscanned: the
released layer-by-layer tree), ``params`` the matching tree, ``source`` what run records keep.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import ml_collections

from ropex.errors import ConfigError
from ropex.model.config import ModelConfig

DTYPES = ('float32', 'bfloat16')


@dataclasses.dataclass
class Imported:
  model: ml_collections.ConfigDict     # a complete model block (ModelConfig.from_config)
  params: dict                         # {'params': imported.params} for Transformer.apply
  source: dict                         # format, path, family, model_type, dtype, quantization
  tokenizer_path: str | None = None    # tokenizer.model / tokenizer.json shipped with it, or
                                       # the .gguf file whose vocabulary it is rebuilt from

  @property
  def cfg(self) -> ModelConfig:
    return ModelConfig.from_config(self.model)

  @functools.cached_property
  def tokenizer(self) -> Any:
    """The ropex tokenizer wrapper (read on first use; None if none ships with the weights)."""
    from ropex.model.io import tokenizer  # pylint: disable=g-import-not-at-top
    return tokenizer.load(self.tokenizer_path, self.source.get('path'))

  @property
  def tokenizer_source(self) -> str | None:
    """:attr:`tokenizer_path` as records name it: the URL for weights read from a URL (their
    local copy is what :attr:`tokenizer_path` reads)."""
    if self.tokenizer_path is None:
      return None
    from ropex.model.io import remote  # pylint: disable=g-import-not-at-top
    return remote.url_of(self.tokenizer_path)


def detect_format(path: str, what: str = '--model') -> str:
  """``'huggingface'`` (config.json + safetensors), ``'gemma_flax'`` (an orbax folder) or
  ``'gguf'`` (a llama.cpp file); errors name the flag or field ``what``. A URL is staged
  locally first (:func:`ropex.model.io.remote.stage`, once per process)."""
  path = local_copy(path, what)
  if os.path.isfile(path) and path.endswith('.gguf'):
    return 'gguf'
  if os.path.isdir(path) and os.path.isfile(os.path.join(path, 'config.json')) and any(
      f.endswith('.safetensors') for f in os.listdir(path)):
    return 'huggingface'
  if os.path.isdir(path) and any(os.path.exists(os.path.join(path, f)) for f in (
      '_METADATA', 'checkpoint', 'manifest.ocdbt', '_CHECKPOINT_METADATA')):
    return 'gemma_flax'
  raise ConfigError(f'{what}={path!r} is neither a Hugging Face checkpoint folder '
                    f'(config.json + *.safetensors), an official Gemma Flax checkpoint nor a '
                    f'.gguf file')


def _check_dtype(dtype):
  dtype = dtype or 'float32'
  if dtype not in DTYPES:
    raise ConfigError(f'dtype={dtype!r} is not allowed; allowed: {", ".join(DTYPES)}')
  return dtype


def read_model(path: str) -> tuple[ml_collections.ConfigDict, dict]:
  """(model block, source) from the checkpoint's config alone, reading no weights (a Flax
  checkpoint has no config: its shapes are read from the tree's metadata). Of a URL, only what
  that needs is copied (:func:`ropex.model.io.remote.stage_config`)."""
  from ropex import paths  # pylint: disable=g-import-not-at-top
  url, fmt = path, None
  if paths.is_url(path):   # a Hugging Face folder's config.json alone is copied
    from ropex.model.io import remote  # pylint: disable=g-import-not-at-top
    fmt, path = remote.stage_config(path, '--model')
  block, source = _read_model(path, fmt)
  return block, _named(source, url, path)


def _read_model(path: str, fmt: str | None = None) -> tuple[ml_collections.ConfigDict, dict]:
  fmt = fmt or detect_format(path)
  if fmt == 'gemma_flax':
    from ropex.model.io import gemma2_flax  # pylint: disable=g-import-not-at-top
    return gemma2_flax.read_model(path)
  if fmt == 'gguf':
    from ropex.model.io import gguf  # pylint: disable=g-import-not-at-top
    return gguf.read_model(path)[:2]
  from ropex.model.io import huggingface  # pylint: disable=g-import-not-at-top
  block, parsed = huggingface.read_model_block(path)
  return block, {'format': 'huggingface', 'path': os.path.abspath(path),
                 'family': parsed.family.name, 'model_type': parsed.model_type}


def load_model(path: str, *, mesh=None, dtype: str | None = None,
               what: str = '--model') -> Imported:
  """Reads released weights at ``path`` (parameters and compute in ``dtype``, default float32;
  an unrecognised ``path`` is a ConfigError naming the flag or field ``what``).
  ``mesh``: a :class:`ropex.training.placement.Placement` or a ``jax.sharding.Mesh`` (with
  the default axis rules); each tensor then goes straight into its shards. A URL is read from
  its local copy (:mod:`ropex.model.io.remote`); ``source['path']`` names the URL."""
  dtype = _check_dtype(dtype)
  url, path = path, local_copy(path, what)
  imported = _load_model(path, _placement(mesh), dtype, what)
  imported.source = _named(imported.source, url, path)
  return imported


def local_copy(path: str, what: str = '--model') -> str:
  """``path`` itself, or the local copy of a URL."""
  from ropex import paths  # pylint: disable=g-import-not-at-top
  if not paths.is_url(path):
    return path
  from ropex.model.io import remote  # pylint: disable=g-import-not-at-top
  return remote.stage(path, what)


def _named(source: dict, url: str, local: str) -> dict:
  """``source`` naming the URL the user gave, not its local copy ``local`` (the path, and a
  file read beside it such as a Flax config sidecar)."""
  from ropex import paths  # pylint: disable=g-import-not-at-top
  if not paths.is_url(url):
    return source
  from ropex.model.io import remote  # pylint: disable=g-import-not-at-top
  return dict({k: remote.url_of(v) if isinstance(v, str) else v for k, v in source.items()},
              path=url.rstrip('/'))


def _load_model(path: str, placement, dtype: str, what: str) -> Imported:
  fmt = detect_format(path, what)
  if fmt == 'gemma_flax':
    from ropex.model.io import gemma2_flax  # pylint: disable=g-import-not-at-top
    return gemma2_flax.load_model(path, placement=placement, dtype=dtype)
  if fmt == 'gguf':
    from ropex.model.io import gguf  # pylint: disable=g-import-not-at-top
    return gguf.load_model(path, placement=placement, dtype=dtype)
  from ropex.model.io import huggingface, tokenizer  # pylint: disable=g-import-not-at-top
  block, parsed = huggingface.read_model_block(path)
  block.update(param_dtype=dtype, dtype=dtype)
  cfg = ModelConfig.from_config(block)
  params = huggingface.load_params(path, cfg, parsed.family.norms, placement)
  source = {'format': 'huggingface', 'path': os.path.abspath(path),
            'family': parsed.family.name, 'model_type': parsed.model_type, 'dtype': dtype,
            'quantization': None}
  return Imported(block, params, source, tokenizer.find(path))


def _placement(mesh):
  if mesh is None:
    return None
  from ropex.training.placement import Placement  # pylint: disable=g-import-not-at-top
  if isinstance(mesh, Placement):
    return mesh
  from ropex.config import defaults  # pylint: disable=g-import-not-at-top
  from ropex.training import sharding  # pylint: disable=g-import-not-at-top
  return Placement(mesh, sharding.axis_rules(defaults.base_config()))


def experiment_config(imported: Imported, seq_len: int = 8192) -> ml_collections.ConfigDict:
  """A complete ropex config around an imported model (its model block, its tokenizer as
  ``data.tokenizer`` / ``data.tokenizer_path``, text data, ``train.seq_len`` = ``seq_len``), for
  the entry points that evaluate or analyse it; ``imported_from`` records the source. Paths are
  named as records keep them (:attr:`Imported.tokenizer_source`: a URL, never its local copy;
  a GGUF's own file for the tokenizer rebuilt from it)."""
  from ropex.config import defaults  # pylint: disable=g-import-not-at-top
  c = defaults.base_config('tiny')
  c.model = imported.model
  c.name = os.path.basename(os.path.normpath(imported.source['path']))
  from ropex.model.io import tokenizer  # pylint: disable=g-import-not-at-top
  path = imported.tokenizer_source or ''
  if not path and imported.source.get('tokenizer'):   # a GGUF vocabulary ropex does not rebuild
    raise ConfigError(f'{imported.source["path"]} has no tokenizer: '
                      f'{imported.source["tokenizer"]}')
  if not path:   # its token ids mean nothing without the tokenizer it was trained with
    raise ConfigError(f'{imported.source["path"]} has no tokenizer (no tokenizer.model or '
                      'tokenizer.json beside the weights, or in their parent folder); put the '
                      "model's own tokenizer file there")
  c.data.update(source='text', tokenizer=tokenizer.kind(path), tokenizer_path=path)
  c.train.seq_len = seq_len
  c.imported_from = dict(imported.source)
  return c
