"""`effective_conductance`: the exact `G_eff` of crossbar tiles, by the row
sweep or nested dissection, whichever is cheaper."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rxjax.circuit.nested import nested_padded, pow2
from rxjax.circuit.sweep import sweep_geff
from rxjax.circuit.wires import (Direction, Wires, check_direction, check_g,
                                 check_wires, flip, oriented, resistance_kind)


# The cost models `method="auto"` compares.


def _sweep_flops(m, n):
  lo, hi = min(m, n), max(m, n)
  return hi * (2.7 * lo ** 3 + 2 * hi * lo ** 2)


def _nested_flops(m, n):
  mp, np_ = pow2(m), pow2(n)
  # A cost model fitted to timings against `_sweep_flops`: at 64 x 64 the
  # sweep is as fast for one tile, faster in batches and compiles faster;
  # nested dissection wins from 128 x 128 on.
  return 200.0 * mp * np_ * (mp + np_)


def _geff_impl(g, resistances, kinds, method):
  """G_eff of g: [..., M, N] in forward orientation.

  kinds[k]: `resistance_kind` of resistance k of (r_row, r_col, r_source,
  r_sense).
  """
  r_row, r_col, r_source, r_sense = (jnp.asarray(r, g.dtype)
                                     for r in resistances)
  m, n = g.shape[-2:]
  batch = g.shape[:-2]
  if method == "nested":
    fn = lambda t: nested_padded(t, r_row, r_col, r_source, r_sense,
                                  kinds[2], kinds[3])
  elif n > m:
    # Reciprocity: block size min(M, N). Sources and senses swap roles.
    fn = lambda t: flip(sweep_geff(flip(t), r_col, r_row, r_sense,
                                     r_source, kinds[0], kinds[2]))
  else:
    fn = lambda t: sweep_geff(t, r_row, r_col, r_source, r_sense, kinds[1],
                               kinds[3])
  flat = g.reshape((-1, m, n))
  # Tiles are solved in cache-sized groups: one vmap over thousands of tiles
  # streams every intermediate through memory and runs several times slower.
  group = max(1, _GROUP_ELEMENTS // (m * n))
  if method == "nested" and m * n >= _ONE_AT_A_TIME:
    # One tile at a time: the reverse-mode derivative of a vmapped group of
    # nested-dissection solves (eight 128 x 128 tiles) crashes XLA:CPU in a
    # YNNPACK matrix-product kernel (docs/performance.md); one tile per
    # step of the map runs, and its forward solve is as fast. Smaller tiles
    # keep their groups, so a small batch stays one vmap and, under jit,
    # keeps the sharding of its tile axis.
    group = 1
  if flat.shape[0] <= group:
    out = jax.vmap(fn)(flat)
  else:
    out = jax.lax.map(fn, flat, batch_size=group)
  return out.reshape(batch + (m, n))


_GROUP_ELEMENTS = 2**17  # tiles per group x M x N; 32 tiles of 64 x 64
_ONE_AT_A_TIME = 128 * 128  # Nested dissection from this M x N on.
_geff_jit = jax.jit(_geff_impl, static_argnums=(2, 3))
_METHODS = ("auto", "sweep", "nested")


def effective_conductance(g, wires: Wires, *,
                          direction: Direction = "forward",
                          method: str = "auto") -> jax.Array:
  """Exact effective conductance matrix of crossbar tiles.

  Args:
    g: `[..., M, N]` device conductances in siemens (>= 0), float32 or
      float64. Leading axes are batch axes (tiles, chips).
    wires: the tile's parasitic resistances.
    direction: "forward" (rows driven, columns sensed) or "backward" (columns
      driven from the bottom, rows sensed at the left; DESIGN.md section 2).
    method: "sweep" (row sweep, any resistances, 2.7 M N^3 + 2 M^2 N^2 flops
      with N <= M), "nested" (nested dissection, O((M + N)^3); needs static
      r_row, r_col > 0) or "auto" (the cheaper of the two that applies). Both
      are exact; they agree to rounding.

  Placement: the shardings of `g` decide, eager or under jit. To share a
  large batch of tiles among devices, shard its tile axis inside jit:
  `crossbar.solve(..., mesh=)` does (`jax.shard_map`, each device its own
  tiles). Plain jit keeps a sharded tile axis sharded except for nested
  dissection from 128 x 128 on, which solves one tile per step of a
  `lax.map` (a YNNPACK workaround, below) that XLA runs on a gathered
  batch: shard those through `crossbar.solve`.

  Returns:
    `[..., M, N]` array in the dtype of `g`. Forward: `i_out = v @ G_eff`
    (`v: [M]` volts, `i_out: [N]` amperes). Backward:
    `i_rows = G_eff_bwd @ v_cols`. With all resistances 0 it equals `g`.

  Raises:
    ValueError / TypeError: bad rank, empty axes, non-float dtype or unknown
      direction (at trace time).
  """
  check_direction(direction)
  if method not in _METHODS:
    raise ValueError(f"`method` must be one of {_METHODS}, got {method!r}")
  g = check_g(g)
  check_wires(wires)
  g, resistances, back = oriented(g, wires, direction)
  kinds = tuple(resistance_kind(r) for r in resistances)
  wires_positive = kinds[0] == kinds[1] == "positive"
  if method == "nested" and not wires_positive:
    raise ValueError(
        "method='nested' needs static wire resistances r_row, r_col > 0 (its "
        f"leaves are wire conductances); got {resistances[:2]}: use 'sweep'")
  if all(k == "zero" for k in kinds):
    return back(g)  # No parasitics: the devices themselves.
  if method == "auto":
    m, n = g.shape[-2:]
    cheaper = _nested_flops(m, n) < _sweep_flops(m, n)
    method = "nested" if wires_positive and cheaper else "sweep"
  # Concrete values are passed as floats: one compilation serves every value.
  resistances = tuple(r if k == "traced" else float(np.asarray(r))
                      for r, k in zip(resistances, kinds))
  return back(_geff_jit(g, resistances, kinds, method))
