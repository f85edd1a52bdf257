"""Released weights as an entry point's input: ``--model`` and its dtype flag (``ropex.analyze``,
``ropex.evaluate``) and the weights loaded onto the default mesh (those two and
``ropex.generate``).

The flags belong to the entry point that calls :func:`define_flags` (its ``--help`` lists them
beside its own); each entry point keeps its own help texts and its own checks of how ``--model``
combines with its other inputs.
"""

from __future__ import annotations

from absl import flags

DTYPES = ('float32', 'bfloat16')

flags.disclaim_key_flags()   # flags defined below are the calling entry point's key flags


REMOTE_HELP = ' Local or at a URL (gs://...: copied to a local temporary folder first).'


def define_flags(model_help: str, dtype_flag: str, dtype_help: str):
  """``--model`` (the weights' path; help ``model_help``) and ``--<dtype_flag>`` (their
  parameter and compute dtype, one of :data:`DTYPES`, default float32); their flag holders."""
  model = flags.DEFINE_string('model', None, model_help + REMOTE_HELP)
  dtype = flags.DEFINE_enum(dtype_flag, 'float32', list(DTYPES), dtype_help)
  return model, dtype


def load(path: str, dtype: str | None = None, what: str = '--model'):
  """``(imported, placement)``: the weights at ``path`` read by
  :func:`ropex.model.io.load_model` (in ``dtype``, default float32; its errors name ``what``),
  each tensor placed as it is read on the default mesh (the base config's ``mesh`` block and
  axis rules over all devices)."""
  from ropex.config import defaults  # pylint: disable=g-import-not-at-top
  from ropex.model import io  # pylint: disable=g-import-not-at-top
  from ropex.training.placement import Placement  # pylint: disable=g-import-not-at-top
  placement = Placement.from_config(defaults.base_config())
  return io.load_model(path, mesh=placement, dtype=dtype, what=what), placement
