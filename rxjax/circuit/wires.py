"""The tile's wires and terminals (`Wires`), the checks every solver runs on
its arguments, and the orientation shared by the forward and backward reads
(DESIGN.md section 2)."""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

Direction = Literal["forward", "backward"]
_DIRECTIONS = ("forward", "backward")


def is_concrete(x) -> bool:
  """True unless `x` is traced (a value known at trace time)."""
  return not isinstance(x, jax.core.Tracer)


@dataclasses.dataclass(frozen=True)
class Wires:
  """Parasitic resistances of a crossbar tile, in ohms.

  Attributes:
    r_row: one row wire segment, between `a[i, j]` and `a[i, j + 1]`.
    r_col: one column wire segment, between `b[i, j]` and `b[i + 1, j]`.
    r_source: output resistance of the row drivers (forward read).
    r_sense: input resistance of the column sense amplifiers (forward read).
    r_source_backward: output resistance of the column drivers in the
      backward (transposed) read; `None` means `r_source`.
    r_sense_backward: input resistance of the row sense amplifiers in the
      backward read; `None` means `r_sense`.

  Every value must be finite and >= 0; 0 is legal and means an ideal wire or
  terminal. `Wires` is hashable (usable as a static argument) and is also a
  pytree whose leaves are the resistances, so `jax.grad` can differentiate
  with respect to them.
  """

  r_row: float = 0.0
  r_col: float = 0.0
  r_source: float = 0.0
  r_sense: float = 0.0
  r_source_backward: float | None = None
  r_sense_backward: float | None = None

  def __post_init__(self):
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      if value is None and field.name.endswith("_backward"):
        continue
      if not is_concrete(value):
        continue  # Traced (e.g. under jax.grad): validated by the caller.
      if isinstance(value, (bool, str, bytes)):  # float(True) is 1.0.
        raise ValueError(
            f"`{field.name}` must be a resistance in ohm (a finite number >= 0),"
            f" got {value!r}")
      try:
        as_float = float(np.asarray(value))
      except (TypeError, ValueError):
        raise ValueError(
            f"`{field.name}` must be a resistance in ohm (a finite number >= 0),"
            f" got {value!r}") from None
      if not math.isfinite(as_float) or as_float < 0:
        raise ValueError(
            f"`{field.name}` must be a finite resistance >= 0 ohm, got {value!r}")

  @classmethod
  def ideal(cls) -> "Wires":
    """All resistances zero: `effective_conductance(g, Wires.ideal()) == g`."""
    return cls()

  @property
  def reciprocal(self) -> bool:
    """True when every line has the same terminal resistance in both reads
    (the rows' `r_source` is the backward row sense resistance and the
    columns' `r_sense` the backward column driver's).

    The crossbar is then one linear resistive network read through the same
    ports both ways, so by reciprocity the backward `G_eff` equals the
    forward one (`effective_conductance` returns identical arrays; tested).
    False when a resistance is traced.
    """
    _, _, src, sense = self.terminals("backward")
    values = (self.r_source, self.r_sense, src, sense)
    if not all(is_concrete(v) for v in values):
      return False
    return float(src) == float(self.r_sense) and float(
        sense) == float(self.r_source)

  def terminals(self, direction: Direction) -> tuple:
    """(r_along_driven_lines, r_along_sensed_lines, r_source, r_sense)."""
    check_direction(direction)
    if direction == "forward":
      return self.r_row, self.r_col, self.r_source, self.r_sense
    r_source = (self.r_source if self.r_source_backward is None
                else self.r_source_backward)
    r_sense = (self.r_sense if self.r_sense_backward is None
               else self.r_sense_backward)
    return self.r_col, self.r_row, r_source, r_sense


def _wires_flatten(w):
  names = [f.name for f in dataclasses.fields(w)]
  return tuple(getattr(w, n) for n in names), None


def _wires_unflatten(_, children):
  w = object.__new__(Wires)
  for field, value in zip(dataclasses.fields(Wires), children):
    object.__setattr__(w, field.name, value)
  return w


jax.tree_util.register_pytree_node(Wires, _wires_flatten, _wires_unflatten)


def check_direction(direction):
  """A ValueError unless `direction` is "forward" or "backward"."""
  if direction not in _DIRECTIONS:
    raise ValueError(
        f"`direction` must be one of {_DIRECTIONS}, got {direction!r}")


def check_g(g) -> jax.Array:
  """`g` as an array of conductances `[..., M, N]`, float32 or float64,
  finite and >= 0 where known; an error naming `g` otherwise."""
  g = jnp.asarray(g)
  if g.ndim < 2:
    raise ValueError(
        f"`g` must have shape [..., M, N] (rank >= 2), got shape {g.shape}")
  if g.shape[-1] < 1 or g.shape[-2] < 1:
    raise ValueError(f"`g` must have M, N >= 1, got shape {g.shape}")
  if not jnp.issubdtype(g.dtype, jnp.floating):
    raise TypeError(
        f"`g` must be a floating-point array (siemens), got dtype {g.dtype}")
  if jnp.finfo(g.dtype).bits < 32:
    # float16's smallest normal number is 6.1e-5: a 1 MOhm device (1e-6 S)
    # is subnormal there and loses ~2% (bfloat16 keeps 3 digits).
    raise TypeError(f"`g` must be float32 or float64 (siemens), got dtype "
                    f"{g.dtype}, which cannot hold device conductances "
                    "(~1e-6 S) to the solve's accuracy")
  if is_concrete(g):
    a = np.asarray(g)
    if not np.isfinite(a).all():
      raise ValueError(f"`g` must be finite conductances (siemens), got "
                       f"{int((~np.isfinite(a)).sum())} NaN / inf values")
    if (a < 0).any():
      first = tuple(int(i) for i in np.argwhere(a < 0)[0])
      raise ValueError(f"`g` must be conductances >= 0 S, got "
                       f"{int((a < 0).sum())} negative values (first "
                       f"{a[first]!r} at index {first})")
  return g


def check_wires(wires) -> None:
  """A TypeError unless `wires` is a `Wires`."""
  if not isinstance(wires, Wires):
    raise TypeError(f"`wires` must be a rxjax.Wires, got {wires!r}")


def flip(x):
  """Reciprocity map of a tile: [.., M, N] -> [.., N, M], reversed."""
  return jnp.swapaxes(x[..., ::-1, ::-1], -1, -2)



def oriented(g, wires, direction):
  """Tile and terminals in forward orientation, and the map back."""
  r_along, r_across, r_source, r_sense = wires.terminals(direction)
  if direction == "backward":
    # Columns are driven from b[M-1, j], rows sensed at a[i, 0]: the same
    # network as a forward read of the flipped-transposed tile.
    return flip(g), (r_along, r_across, r_source, r_sense), flip
  return g, (r_along, r_across, r_source, r_sense), lambda x: x


def resistance_kind(r) -> str:
  """What is known of a resistance at trace time: "zero", "positive", "traced".

  A zero series element is skipped; a positive one needs no r = 0 branch.
  """
  if not is_concrete(r):
    return "traced"
  return "zero" if float(np.asarray(r)) == 0.0 else "positive"
