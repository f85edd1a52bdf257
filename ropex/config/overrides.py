"""Dotted config overrides, one implementation for every entry point.

``train.steps=100`` (a sweep's or ``ropex.experiments.sweep --override``) and ``model.pe.max_wavelength=5e5``
(``ropex.evaluate --override``) both go through :func:`set_field`: the dotted key must name an
existing field, and a string value is converted to the field's type (numbers, booleans, and
Python literals such as tuples or None). A field that does not exist or a value of the wrong type
is a :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import ast
import copy
from typing import Any, Mapping

import ml_collections

from ropex.errors import ConfigError

_BOOLS = {'true': True, 'false': False, '1': True, '0': False}


def parse(text: str, flag: str = '--override') -> tuple[str, str]:
  """``'train.steps=4'`` -> ``('train.steps', '4')``."""
  key, sep, value = text.partition('=')
  if not sep or not key.strip():
    raise ConfigError(f'{flag}={text!r} must look like key=value (e.g. train.steps=4)')
  return key.strip(), value.strip()


def literal(raw: str) -> Any:
  """A Python literal (numbers, strings, tuples, None), or the text itself."""
  try:
    return ast.literal_eval(raw.strip())
  except (ValueError, SyntaxError):
    return raw.strip()


def _node(cfg: ml_collections.ConfigDict, key: str, value: Any) -> tuple[Any, str]:
  *parents, leaf = key.split('.')
  node, block = cfg, ''
  for part in parents:
    if not isinstance(node[part] if part in node else None, ml_collections.ConfigDict):
      leaf = part
      break
    node, block = node[part], f'{block}.{part}'.lstrip('.')
  if leaf not in node or (leaf != key.split('.')[-1]):
    where = f'fields of {block}' if block else 'top-level fields'
    raise ConfigError(f'override {key}={value!r} names no config field; allowed {where}: '
                      f'{", ".join(node.keys())}')
  return node, leaf


def _declared_type(node: ml_collections.ConfigDict, leaf: str):
  """The type of a field, or of a None field's typed placeholder (None if it has none)."""
  if node[leaf] is not None:
    return type(node[leaf])
  try:
    return node.get_ref(leaf).get_type()
  except ValueError:
    return None


def convert(value: Any, field_type, key: str) -> Any:
  """``value`` (a string from a command line, or already typed) as a ``field_type``."""
  if isinstance(value, str) and field_type not in (None, str):
    raw = value
    try:
      if field_type is bool:
        return _BOOLS[raw.strip().lower()]
      if field_type in (int, float):
        return field_type(float(raw) if field_type is float else int(raw))
    except (KeyError, ValueError):
      raise ConfigError(f'override {key}={raw!r} must be a {field_type.__name__}') from None
    value = literal(raw)
  if field_type is float and isinstance(value, int) and not isinstance(value, bool):
    return float(value)  # recorded as the float the field holds
  return value


def set_field(cfg: ml_collections.ConfigDict, key: str, value: Any) -> None:
  """Sets dotted ``key`` (which must exist) to ``value`` converted to the field's type."""
  node, leaf = _node(cfg, key, value)
  value = convert(value, _declared_type(node, leaf), key)
  try:
    node[leaf] = value
  except TypeError:
    raise ConfigError(f'override {key}={value!r} has the wrong type; allowed: a '
                      f'{node.get_ref(leaf).get_type().__name__}') from None


def applied(cfg: ml_collections.ConfigDict, overrides: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """A copy of ``cfg`` with every override set."""
  cfg = copy.deepcopy(cfg)
  for key, value in overrides.items():
    set_field(cfg, key, value)
  return cfg


def lookup(cfg: ml_collections.ConfigDict, key: str) -> Any:
  """The value at dotted ``key`` (as applied, e.g. an int set on a float field is a float)."""
  node = cfg
  for part in key.split('.'):
    node = node[part]
  return node.to_dict() if isinstance(node, ml_collections.ConfigDict) else node
