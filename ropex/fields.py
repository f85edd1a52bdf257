"""Field validation, one small helper for every config block and flag.

A rule is a function ``value -> (ok, description)``; :func:`check` raises a
:class:`ConfigError` that names the field and what is allowed::

    check(cfg.steps, 'train.steps', integer(1))
    # ConfigError: train.steps=0 is not allowed; it must be an integer >= 1

:class:`Block` reads one config block (a mapping) field by field with defaults, remembers which
fields were read (so a block can reject a set field that its kind does not use) and checks each
value with a rule.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Mapping

from ropex.errors import ConfigError

Rule = Callable[[Any], tuple[bool, str]]


def _is_int(v) -> bool:
  return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v) -> bool:
  return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def integer(low: int = 0, high: int | None = None) -> Rule:
  """An integer in [low, high] (no upper bound by default)."""
  desc = f'an integer >= {low}' if high is None else f'an integer in [{low}, {high}]'
  return lambda v: (_is_int(v) and v >= low and (high is None or v <= high), desc)


def number(low: float = -math.inf, high: float = math.inf, low_open: bool = False,
           high_open: bool = False) -> Rule:
  """A finite real number in the interval (open or closed at each end)."""
  lo, hi = '(' if low_open else '[', ')' if high_open or high == math.inf else ']'
  desc = (f'a number > {low:g}' if low_open and high == math.inf else
          f'a number in {lo}{low:g}, {high:g}{hi}')

  def rule(v):
    ok = _is_real(v) and (v > low if low_open else v >= low)
    return ok and (v < high if high_open else v <= high), desc
  return rule


def choice(*allowed) -> Rule:
  return lambda v: (v in allowed, f'one of {", ".join(map(str, allowed))}')


def boolean(v) -> tuple[bool, str]:
  return isinstance(v, bool), 'True or False'


def check(value, field: str, rule: Rule):
  """Returns ``value`` if ``rule`` accepts it; otherwise raises one sentence naming ``field``."""
  ok, desc = rule(value)
  if not ok:
    raise ConfigError(f'{field}={value!r} is not allowed; it must be {desc}')
  return value


class Block:
  """Typed, validated access to one config block; errors name ``prefix.key``."""

  def __init__(self, cfg: Mapping[str, Any], prefix: str):
    self._cfg, self.prefix = cfg, prefix
    self.used: set[str] = set()

  def get(self, key: str, default=None):
    """The value of ``key`` (``default`` when missing or None), marked as used."""
    self.used.add(key)
    value = self._cfg.get(key, default)
    return default if value is None else value

  def value(self, key: str, rule: Rule, default=None):
    return check(self.get(key, default), f'{self.prefix}.{key}', rule)

  def fraction(self, key: str, default: float) -> float:
    return float(self.value(key, number(0, 1), default))

  def positive(self, key: str, default: float) -> float:
    return float(self.value(key, number(0, low_open=True), default))

  def integer(self, key: str, low: int = 0, default: int | None = None) -> int:
    return int(self.value(key, integer(low), default))

  def choice(self, key: str, default, allowed: tuple) -> Any:
    return self.value(key, choice(*allowed), default)

  def unused(self, ignore=()) -> list[str]:
    """Keys set (not None) in the block but never read."""
    return sorted(k for k, v in self._cfg.items()
                  if v is not None and k not in self.used and k not in ignore)
