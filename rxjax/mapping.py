"""Weights <-> conductances: scale, signed pairs, bit slices and tiles.

This module owns DESIGN.md section 4 up to the ideal programmed levels:

* a per-layer weight scale `w_max` (given, or `max |w|` of the layer);
* signed weights as differential pairs (two crossbars, `I+ - I-`) or with an
  offset (a reference column of `g_min` cells per tile);
* quantization to `weight_bits` and bit slicing over
  `ceil(weight_bits / device_bits)` crossbars of `2**device_bits` levels,
  recombined by shift-and-add with `slice_weights`;
* tiling of a `[fan_in, fan_out]` matrix (rows are inputs) into `M x N` tiles,
  zero-padded at the far edges;
* linear placement of every digit on `[g_min, g_max]`.

`program` maps weights to conductances, `unmap` maps (possibly varied)
conductances back to the weights they represent. The layout of a mapped layer
is `g: [S, P, Tr, Tc, M, N]`: slice (0 = least significant), polarity
(differential: 0 = positive crossbar, 1 = negative; offset: a single
crossbar), tile row, tile column, row in tile, column in tile.

It does not own device non-idealities (variation, write noise, stuck cells:
`device.py`), the circuit (`rxjax.circuit`) or the read-out and shift-and-add of
the crossbar (`rxjax.crossbar`, which uses `slice_weights` in the same way as
`unmap`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rxjax import _checks
from rxjax.device import DeviceSpec

_SIGNED = ("differential", "offset")


@dataclasses.dataclass(frozen=True)
class MappingSpec:
  """How a layer's weights are placed on crossbar tiles.

  Attributes:
    tile_rows: M, rows (inputs) per tile.
    tile_cols: N, columns (outputs) per tile; with the offset scheme one of
      them is the reference column, so `N - 1` hold weights.
    weight_bits: precision of the weight magnitude `|w| / w_max` (offset:
      of `(w / w_max + 1) / 2`), `2**weight_bits - 1` steps; `None` = full
      precision.
    signed: "differential" (two crossbars, currents subtracted) or "offset"
      (one crossbar, a reference column of `g_min` cells subtracted).
    weight_scale: `w_max`, the weight that maps to `g_max`; `None` = the
      layer's `max |w|`. Weights beyond it are clipped.

  Raises:
    ValueError: when a field is out of its range; the message names the
      field, the value and the valid range.
  """

  tile_rows: int = 64
  tile_cols: int = 64
  weight_bits: int | None = 8
  signed: str = "differential"
  weight_scale: float | None = None

  def __post_init__(self):
    for name in ("tile_rows", "tile_cols"):
      value = getattr(self, name)
      if not (_checks.is_int(value) and value >= 1):
        raise ValueError(f"`{name}` must be an int >= 1, got {value!r}")
    _checks.check_bits("weight_bits", self.weight_bits, "full precision")
    _checks.check_choice("signed", self.signed, _SIGNED)
    if self.signed == "offset" and self.tile_cols < 2:
      raise ValueError(
          "`tile_cols` must be >= 2 with signed='offset' (one column is the "
          f"reference), got {self.tile_cols!r}")
    if self.weight_scale is not None:
      value = self.weight_scale
      ok = not isinstance(value, bool)
      if ok:
        try:
          ok = math.isfinite(float(value)) and float(value) > 0
        except (TypeError, ValueError):
          ok = False
      if not ok:
        raise ValueError(
            "`weight_scale` must be None (max |w| per layer) or a finite "
            f"number > 0, got {value!r}")


class Mapped(NamedTuple):
  """A layer programmed onto crossbars (ideal levels, before `device.vary`).

  g: [S, P, Tr, Tc, M, N] conductances (siemens), dtype of the weights.
  w_scale: [] the `w_max` used, dtype of the weights.
  """

  g: jax.Array
  w_scale: jax.Array


class _Levels(NamedTuple):
  """Static description of the quantization (Python numbers)."""

  n_slices: int
  radix: int | None  # 2**device_bits when sliced, else None.
  quant_levels: int | None  # L_w, or L_d without weight_bits; None: continuous.
  cell_levels: int  # L_d used to place a digit on [g_min, g_max].


def _levels(wb: int | None, db: int | None) -> _Levels:
  """Quantization for weight_bits `wb` and device_bits `db`."""
  if wb is not None and db is not None:
    return _Levels(-(-wb // db), 2**db, 2**wb - 1, 2**db - 1)
  if wb is not None:  # Analog device: one cell holds the whole weight.
    return _Levels(1, None, 2**wb - 1, 2**wb - 1)
  if db is not None:  # Full-precision weight, quantized by the device.
    return _Levels(1, None, 2**db - 1, 2**db - 1)
  return _Levels(1, None, None, 1)


def n_slices(mapping: MappingSpec, device: DeviceSpec) -> int:
  """Number of bit slices S: `ceil(weight_bits / device_bits)`, else 1."""
  return _levels(mapping.weight_bits, device.device_bits).n_slices


def slice_weights(mapping: MappingSpec, device: DeviceSpec) -> np.ndarray:
  """Weight of one unit of normalized conductance in each slice.

  The weight value, in units of `w_max` (before the offset scheme's
  `2 u - 1`), of one unit of `(g - g_min) / (g_max - g_min)` in slice `k`:
  `L_d * 2**(k * device_bits) / L_w` when sliced (both bit counts set), 1
  otherwise. Shift-and-add is `sum_k slice_weights[k] * x_k`.

  Args:
    mapping: the mapping.
    device: the device (its `device_bits`).

  Returns:
    [S] float64 numpy array.
  """
  lv = _levels(mapping.weight_bits, device.device_bits)
  if lv.radix is None:
    return np.ones(1, np.float64)
  k = np.arange(lv.n_slices)
  return (lv.cell_levels * np.power(float(lv.radix), k)
          / lv.quant_levels).astype(np.float64)


def _cols_per_tile(mapping: MappingSpec) -> int:
  """N': weight columns per tile (the offset scheme keeps one for reference)."""
  if mapping.signed == "offset":
    return mapping.tile_cols - 1
  return mapping.tile_cols


def tile_grid(fan_in: int, fan_out: int, mapping: MappingSpec
             ) -> tuple[int, int]:
  """Number of tiles (Tr, Tc) that hold a `[fan_in, fan_out]` matrix.

  Args:
    fan_in: rows (inputs) of the weight matrix, >= 1.
    fan_out: columns (outputs) of the weight matrix, >= 1.
    mapping: the mapping (tile size, signed scheme).

  Returns:
    `(ceil(fan_in / M), ceil(fan_out / N'))` with `N' = N` (differential) or
    `N - 1` (offset).
  """
  for name, value in (("fan_in", fan_in), ("fan_out", fan_out)):
    if not (_checks.is_int(value) and value >= 1):
      raise ValueError(f"`{name}` must be an int >= 1, got {value!r}")
  cols = _cols_per_tile(mapping)
  return -(-int(fan_in) // mapping.tile_rows), -(-int(fan_out) // cols)


def _to_tiles(x, rows: int, cols: int, tr: int, tc: int):
  """[fan_in, fan_out] -> [Tr, Tc, rows, cols], zero-padded at the far edges."""
  fan_in, fan_out = x.shape
  x = jnp.pad(x, ((0, tr * rows - fan_in), (0, tc * cols - fan_out)))
  return x.reshape(tr, rows, tc, cols).transpose(0, 2, 1, 3)


def _from_tiles(x, fan_in: int, fan_out: int):
  """[Tr, Tc, rows, cols] -> [fan_in, fan_out], padding cropped."""
  tr, tc, rows, cols = x.shape
  x = x.transpose(0, 2, 1, 3).reshape(tr * rows, tc * cols)
  return x[:fan_in, :fan_out]


def _digits(a, lv: _Levels):
  """Normalized values a: [...] in [0, 1] -> digits [S, 1, ...].

  Floating-point integer arithmetic: `q = round(a * L)` is an integer-valued
  float, and `floor(q / radix**k) mod radix` is exact (multiplications by
  powers of two, floors and a subtraction with an exactly representable
  result). The slice axis comes from broadcasting against a constant rather
  than from a stack, so XLA fuses the digits, the tiling and the polarity
  into the one loop that writes the output: the only large buffer is `g`.
  """
  a = a[None, None]
  if lv.quant_levels is None:
    return a
  q = jnp.round(a * lv.quant_levels)
  if lv.radix is None:
    return q
  shape = (lv.n_slices,) + (1,) * (a.ndim - 1)
  inv_shift = np.power(float(lv.radix), -np.arange(lv.n_slices))
  upper = jnp.floor(q * jnp.asarray(inv_shift.reshape(shape), a.dtype))
  return upper - lv.radix * jnp.floor(upper * (1.0 / lv.radix))


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _program(w, mapping: MappingSpec, device_bits, g_min, g_max):
  lv = _levels(mapping.weight_bits, device_bits)
  dtype = w.dtype
  compute = jnp.promote_types(dtype, jnp.float32)
  fan_in, fan_out = w.shape
  tr, tc = tile_grid(fan_in, fan_out, mapping)
  cols = _cols_per_tile(mapping)

  if mapping.weight_scale is None:
    # max |w| without an |w| temporary of the layer's size.
    w_max = jnp.maximum(jnp.max(w), -jnp.min(w)).astype(compute)
    w_max = jnp.where(w_max > 0, w_max, jnp.ones_like(w_max))
  else:
    w_max = jnp.asarray(mapping.weight_scale, compute)

  x = _to_tiles(w.astype(compute), mapping.tile_rows, cols, tr, tc)
  g_min_c = jnp.asarray(g_min, compute)
  step = jnp.asarray((g_max - g_min) / lv.cell_levels, compute)

  if mapping.signed == "differential":
    d = _digits(jnp.clip(jnp.abs(x) / w_max, 0, 1), lv)  # [S, 1, Tr, Tc, M, N]
    # Polarity p holds the digits of the weights whose sign is (+1, -1)[p].
    sign = jnp.asarray(np.array([1, -1]).reshape(1, 2, 1, 1, 1, 1), compute)
    d = jnp.where(x[None, None] * sign > 0, d, jnp.zeros((), compute))
  else:
    u = jnp.clip((x / w_max + 1) / 2, 0, 1)
    d = _digits(u, lv)  # [S, 1, Tr, Tc, M, N']
    # Reference column (last of every tile): the zero digit, i.e. g_min.
    d = jnp.pad(d, ((0, 0),) * 5 + ((0, 1),))
  g = (g_min_c + d * step).astype(dtype)
  return Mapped(g=g, w_scale=w_max.astype(dtype))


def program(w, mapping: MappingSpec, device: DeviceSpec) -> Mapped:
  """Maps a weight matrix to the ideal conductances of its tiles.

  With `m = |w| / w_max` (differential) or `u = (w / w_max + 1) / 2`
  (offset), clipped to [0, 1]:

  * `weight_bits` and `device_bits` set: `q = round(m * L_w)`,
    `L_w = 2**weight_bits - 1`, split into `S` digits of `device_bits` bits
    (slice 0 least significant), each placed on `L_d = 2**device_bits - 1`
    steps;
  * only `weight_bits`: one slice, the digit `q` on `L_w` steps;
  * only `device_bits`: one slice, `round(m * L_d)` on `L_d` steps;
  * neither: one slice, `m` itself (continuous).

  A digit `d` becomes `g = g_min + d / L_d * (g_max - g_min)`. Differential:
  positive weights go to crossbar 0, negative ones to crossbar 1, the other
  crossbar holds `g_min`. Offset: the last column of every tile is a
  reference column of `g_min` cells and the tile's other `N - 1` columns hold
  weights. The matrix is zero-padded at the far edges to whole tiles; a
  padded cell holds what weight 0 maps to (differential: `g_min`; offset:
  the digits of `u = 1/2`).

  Jit-compatible with `mapping` and `device` static; the digits are computed
  inside one jitted function so that XLA fuses them with the tiling and the
  only large buffer is the output.

  Args:
    w: [fan_in, fan_out] weights (rows are inputs), floating point.
    mapping: the mapping.
    device: the device (`g_min`, `g_max`, `device_bits`; its non-idealities
      are applied by `device.vary`, not here).

  Returns:
    `Mapped(g [S, P, Tr, Tc, M, N] siemens, w_scale [])`, dtype of `w`;
    `P = 2` (differential) or 1 (offset).

  Raises:
    ValueError: if `w` is not of rank 2.
  """
  w = jnp.asarray(w)
  if w.ndim != 2:
    raise ValueError(
        f"`w` must have shape [fan_in, fan_out] (rank 2), got shape {w.shape}")
  if not jnp.issubdtype(w.dtype, jnp.floating):
    w = w.astype(jnp.result_type(float))
  return _program(w, mapping, device.device_bits, device.g_min, device.g_max)


def unmap(g, w_scale, mapping: MappingSpec, device: DeviceSpec,
          shape: tuple[int, int]) -> jax.Array:
  """Conductances (possibly varied) back to the weights they represent.

  With `sw = slice_weights(mapping, device)` and `dg = g_max - g_min`:

  * differential: `w_hat = w_max * sum_k sw[k] * (g[k, 0] - g[k, 1]) / dg`;
  * offset: `w_hat = w_max * (2 * sum_k sw[k] * (g[k, 0, ..., j]
    - g[k, 0, ..., N - 1]) / dg - 1)`, the last column being the reference.

  Args:
    g: [S, P, Tr, Tc, M, N] conductances (siemens), as from `program`.
    w_scale: [] the `w_max` of the layer (`Mapped.w_scale`).
    mapping: the mapping used by `program`.
    device: the device used by `program`.
    shape: `(fan_in, fan_out)` of the weight matrix; padding is cropped.

  Returns:
    [fan_in, fan_out] effective weights, dtype of `g`.

  Raises:
    ValueError: if `g` does not have the shape `program` gives for `shape`.
  """
  g = jnp.asarray(g)
  fan_in, fan_out = (int(s) for s in shape)
  tr, tc = tile_grid(fan_in, fan_out, mapping)
  s = n_slices(mapping, device)
  p = 2 if mapping.signed == "differential" else 1
  expected = (s, p, tr, tc, mapping.tile_rows, mapping.tile_cols)
  if g.shape != expected:
    raise ValueError(
        f"`g` must have shape [S, P, Tr, Tc, M, N] = {expected} for weights "
        f"of shape {(fan_in, fan_out)}, got {g.shape}")
  return _unmap(g, w_scale, mapping, tuple(slice_weights(mapping, device)),
                device.g_min, device.g_max, (fan_in, fan_out))


@functools.partial(jax.jit, static_argnums=(2, 3, 4, 5, 6))
def _unmap(g, w_scale, mapping, sw, g_min, g_max, shape):
  dtype = g.dtype
  sw = jnp.asarray(np.array(sw).reshape(-1, 1, 1, 1, 1), dtype)
  dg = jnp.asarray(g_max - g_min, dtype)
  w_scale = jnp.asarray(w_scale, dtype)
  if mapping.signed == "differential":
    x = jnp.sum(sw * (g[:, 0] - g[:, 1]), axis=0) / dg
    x = w_scale * x
  else:
    x = jnp.sum(sw * (g[:, 0, ..., :-1] - g[:, 0, ..., -1:]), axis=0) / dg
    x = w_scale * (2 * x - 1)
  return _from_tiles(x, *shape)
