"""Validation shared by the specs: errors that name the field and the range."""

from __future__ import annotations

import math
import numbers


def is_int(value) -> bool:
  """An integer (Python or NumPy), and not a bool."""
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def as_finite_float(name: str, value, what: str) -> float:
  """float(value), or a ValueError naming the field, the value and `what`."""
  if isinstance(value, (bool, str, bytes)):  # float("1") and float(True).
    raise ValueError(f"`{name}` must be {what}, got {value!r}")
  try:
    as_float = float(value)
  except (TypeError, ValueError):
    raise ValueError(f"`{name}` must be {what}, got {value!r}") from None
  if not math.isfinite(as_float):
    raise ValueError(f"`{name}` must be {what}, got {value!r}")
  return as_float


def check_bits(name: str, value, none_means: str) -> None:
  """None, or an int >= 1; `none_means` says what None stands for."""
  if value is not None and not (is_int(value) and value >= 1):
    raise ValueError(f"`{name}` must be None ({none_means}) or an int >= 1, "
                     f"got {value!r}")


def check_choice(name: str, value, choices) -> None:
  if value not in choices:
    raise ValueError(f"`{name}` must be one of {choices}, got {value!r}")
