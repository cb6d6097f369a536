"""rxjax.mapping against a plain numpy reference and closed-form bounds.

`_reference_program` writes the mapping contract (DESIGN.md section 4 and the
module docstring) out with integer bit operations and explicit loops over
tiles; it shares no code with `rxjax.mapping`. Beyond it: the round trip
`unmap(program(w))` is within half a quantization step of `w` (a full step of
`w_max / L_w` for the offset scheme, whose range `[-w_max, w_max]` has the
same number of steps), conductances sit on their levels inside
`[g_min, g_max]`, the integer weight recovered from the slices equals
`round(m * L_w)`, padding and reference columns hold what they should. The
suite runs in float64 (tests/conftest.py); float32 is cast explicitly.
"""

import math
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rxjax.device import DeviceSpec
from rxjax.mapping import (Mapped, MappingSpec, n_slices, program,
                           slice_weights, tile_grid, unmap)

SIGNED = ["differential", "offset"]
# (weight_bits, device_bits): sliced with S = 4, sliced with a partial top
# slice (S = 3), weight_bits < device_bits (S = 1), analog device, full
# precision on a quantized device, fully continuous.
BITS = [(8, 2), (8, 3), (2, 4), (5, None), (None, 3), (None, None)]
# (fan_in, fan_out, M, N): remainders both ways, non-square tiles, a single
# tile larger than the matrix, exact multiples.
GEOMETRIES = [(13, 17, 5, 7), (37, 9, 8, 3), (3, 2, 4, 6), (16, 12, 8, 4)]


def _rng(*key):
  return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _weights(shape, *key, dtype=np.float64):
  return _rng(shape, *key).normal(size=shape).astype(dtype)


def _quant_levels(wb, db):
  """L used to round the weight, or None when continuous."""
  if wb is not None:
    return 2**wb - 1
  if db is not None:
    return 2**db - 1
  return None


def _reference_program(w, mapping, device):
  """The mapping contract in numpy, with integer digits and tile loops."""
  w = np.asarray(w, np.float64)
  fan_in, fan_out = w.shape
  wb, db = mapping.weight_bits, device.device_bits
  m_rows, n_cols = mapping.tile_rows, mapping.tile_cols
  offset = mapping.signed == "offset"
  n_w = n_cols - 1 if offset else n_cols
  tr, tc = math.ceil(fan_in / m_rows), math.ceil(fan_out / n_w)
  if mapping.weight_scale is not None:
    w_max = mapping.weight_scale
  else:
    w_max = np.abs(w).max() if np.any(w) else 1.0
  s = math.ceil(wb / db) if (wb is not None and db is not None) else 1
  p = 1 if offset else 2

  padded = np.zeros((tr * m_rows, tc * n_w))
  padded[:fan_in, :fan_out] = w
  if offset:
    a = np.clip((padded / w_max + 1) / 2, 0, 1)
  else:
    a = np.clip(np.abs(padded) / w_max, 0, 1)
  # digits[k]: float array of the digit of slice k; cell: levels per cell.
  if wb is not None and db is not None:
    q = np.round(a * (2**wb - 1)).astype(np.int64)
    digits = [(q >> (k * db)) & (2**db - 1) for k in range(s)]
    cell = 2**db - 1
  elif wb is not None:
    digits, cell = [np.round(a * (2**wb - 1))], 2**wb - 1
  elif db is not None:
    digits, cell = [np.round(a * (2**db - 1))], 2**db - 1
  else:
    digits, cell = [a], 1

  g = np.full((s, p, tr, tc, m_rows, n_cols), np.nan)
  for k in range(s):
    level = device.g_min + digits[k] / cell * (device.g_max - device.g_min)
    for r in range(tr):
      for c in range(tc):
        rows = slice(r * m_rows, (r + 1) * m_rows)
        cols = slice(c * n_w, (c + 1) * n_w)
        tile = level[rows, cols]
        if offset:
          g[k, 0, r, c, :, :n_w] = tile
          g[k, 0, r, c, :, n_w] = device.g_min
        else:
          g[k, 0, r, c] = np.where(padded[rows, cols] > 0, tile, device.g_min)
          g[k, 1, r, c] = np.where(padded[rows, cols] < 0, tile, device.g_min)
  return g, w_max


# ---------------------------------------------------------------------------
# ChipSpec, slices and grid.


def test_defaults_match_the_contract():
  spec = MappingSpec()
  assert (spec.tile_rows, spec.tile_cols, spec.weight_bits) == (64, 64, 8)
  assert (spec.signed, spec.weight_scale) == ("differential", None)
  assert hash(spec) == hash(MappingSpec())


@pytest.mark.parametrize("kwargs, field", [
    (dict(tile_rows=0), "tile_rows"),
    (dict(tile_cols=-3), "tile_cols"),
    (dict(tile_rows=8.0), "tile_rows"),
    (dict(tile_cols=True), "tile_cols"),
    (dict(tile_cols=1, signed="offset"), "tile_cols"),
    (dict(weight_bits=0), "weight_bits"),
    (dict(weight_bits=2.5), "weight_bits"),
    (dict(signed="two's complement"), "signed"),
    (dict(weight_scale=0.0), "weight_scale"),
    (dict(weight_scale=-1.0), "weight_scale"),
    (dict(weight_scale=math.inf), "weight_scale"),
    (dict(weight_scale=math.nan), "weight_scale"),
])
def test_invalid_specs_name_the_field(kwargs, field):
  with pytest.raises(ValueError, match=f"`{field}`"):
    MappingSpec(**kwargs)


def test_edge_specs_are_valid():
  MappingSpec(tile_rows=1, tile_cols=1, weight_bits=1)
  MappingSpec(tile_cols=2, signed="offset", weight_bits=None,
              weight_scale=1e-3)


@pytest.mark.parametrize("wb, db, expected", [
    (8, 2, 4), (8, 3, 3), (7, 2, 4), (2, 4, 1), (1, 1, 1), (9, 1, 9),
    (8, None, 1), (None, 2, 1), (None, None, 1),
])
def test_n_slices(wb, db, expected):
  mapping = MappingSpec(weight_bits=wb)
  device = DeviceSpec(device_bits=db)
  assert n_slices(mapping, device) == expected
  assert slice_weights(mapping, device).shape == (expected,)


@pytest.mark.parametrize("wb, db", [(8, 2), (8, 3), (2, 4), (6, 1)])
def test_slice_weights_recombine_every_integer(wb, db):
  """sum_k sw[k] * d_k / L_d == q / L_w for every q in [0, L_w]."""
  mapping, device = MappingSpec(weight_bits=wb), DeviceSpec(device_bits=db)
  sw = slice_weights(mapping, device)
  assert sw.dtype == np.float64
  q = np.arange(2**wb)
  digits = np.stack([(q >> (k * db)) & (2**db - 1) for k in range(len(sw))])
  value = (sw[:, None] * digits / (2**db - 1)).sum(axis=0)
  np.testing.assert_allclose(value, q / (2**wb - 1), rtol=1e-15, atol=1e-15)


def test_slice_weights_closed_form_8_bits_over_2():
  sw = slice_weights(MappingSpec(weight_bits=8), DeviceSpec(device_bits=2))
  np.testing.assert_allclose(sw, np.array([3, 12, 48, 192]) / 255, rtol=1e-15)


@pytest.mark.parametrize("wb, db", [(8, None), (None, 2), (None, None)])
def test_slice_weights_unsliced_are_one(wb, db):
  sw = slice_weights(MappingSpec(weight_bits=wb), DeviceSpec(device_bits=db))
  np.testing.assert_array_equal(sw, [1.0])


@pytest.mark.parametrize("signed", SIGNED)
@pytest.mark.parametrize("fan_in, fan_out, m, n", GEOMETRIES + [(1, 1, 1, 2)])
def test_tile_grid(fan_in, fan_out, m, n, signed):
  mapping = MappingSpec(tile_rows=m, tile_cols=n, signed=signed)
  n_w = n - 1 if signed == "offset" else n
  tr, tc = tile_grid(fan_in, fan_out, mapping)
  assert (tr, tc) == (-(-fan_in // m), -(-fan_out // n_w))
  assert (tr - 1) * m < fan_in <= tr * m
  assert (tc - 1) * n_w < fan_out <= tc * n_w


# ---------------------------------------------------------------------------
# program against the reference.


def _check_against_reference(w, mapping, device, rtol=1e-12):
  mapped = program(w, mapping, device)
  g_ref, w_max_ref = _reference_program(w, mapping, device)
  assert isinstance(mapped, Mapped)
  assert mapped.g.shape == g_ref.shape
  np.testing.assert_allclose(np.asarray(mapped.w_scale), w_max_ref, rtol=rtol)
  np.testing.assert_allclose(np.asarray(mapped.g), g_ref, rtol=rtol, atol=0)
  return mapped


@pytest.mark.parametrize("signed", SIGNED)
@pytest.mark.parametrize("wb, db", BITS)
def test_program_matches_reference_bits(wb, db, signed):
  mapping = MappingSpec(tile_rows=5, tile_cols=7, weight_bits=wb,
                        signed=signed)
  device = DeviceSpec(device_bits=db)
  _check_against_reference(_weights((13, 17), wb, db, signed), mapping,
                           device)


@pytest.mark.parametrize("signed", SIGNED)
@pytest.mark.parametrize("fan_in, fan_out, m, n", GEOMETRIES)
def test_program_matches_reference_geometry(fan_in, fan_out, m, n, signed):
  mapping = MappingSpec(tile_rows=m, tile_cols=n, signed=signed)
  device = DeviceSpec(r_min=50e3, r_max=2e6)
  _check_against_reference(_weights((fan_in, fan_out), m, n, signed), mapping,
                           device)


# ---------------------------------------------------------------------------
# Invariants.


@pytest.mark.parametrize("signed", SIGNED)
@pytest.mark.parametrize("wb, db", BITS)
def test_round_trip_within_half_a_step(wb, db, signed):
  fan_in, fan_out = 37, 9
  mapping = MappingSpec(tile_rows=8, tile_cols=3, weight_bits=wb,
                        signed=signed)
  device = DeviceSpec(device_bits=db)
  w = _weights((fan_in, fan_out), "round trip", wb, db, signed)
  mapped = program(w, mapping, device)
  w_hat = np.asarray(unmap(mapped.g, mapped.w_scale, mapping, device,
                           w.shape))
  assert w_hat.shape == w.shape
  w_max = np.abs(w).max()
  levels = _quant_levels(wb, db)
  if levels is None:
    np.testing.assert_allclose(w_hat, w, rtol=0, atol=1e-12 * w_max)
    return
  # Differential: |w| / w_max in [0, 1] on L steps -> error <= w_max / 2L.
  # Offset: w / w_max in [-1, 1] on L steps -> error <= w_max / L.
  bound = w_max / levels / (2 if signed == "differential" else 1)
  err = np.abs(w_hat - w)
  assert err.max() <= bound * (1 + 1e-9)
  # ...and the quantization is not finer than L steps: w_hat takes at most
  # L + 1 (offset) or 2L + 1 (differential) values.
  n_values = len(np.unique(np.round(w_hat / w_max * levels * 2)))
  assert n_values <= (levels + 1 if signed == "offset" else 2 * levels + 1)


@pytest.mark.parametrize("signed", SIGNED)
def test_round_trip_float32(signed):
  mapping = MappingSpec(tile_rows=8, tile_cols=5, signed=signed)
  device = DeviceSpec()
  w = _weights((21, 30), "f32", signed, dtype=np.float32)
  mapped = program(w, mapping, device)
  assert mapped.g.dtype == jnp.float32
  assert mapped.w_scale.dtype == jnp.float32
  w_hat = unmap(mapped.g, mapped.w_scale, mapping, device, w.shape)
  assert w_hat.dtype == jnp.float32
  w_max = float(np.abs(w).max())
  bound = w_max / 255 / (2 if signed == "differential" else 1)
  # float32 conductances: ~1e-7 relative on each of the slices.
  err = np.abs(np.asarray(w_hat, np.float64) - w)
  assert err.max() <= bound + 2e-5 * w_max


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("signed", SIGNED)
@pytest.mark.parametrize("wb, db", [(8, 2), (8, 3), (None, 3), (5, None)])
def test_conductances_on_levels_within_range(wb, db, signed, dtype):
  mapping = MappingSpec(tile_rows=5, tile_cols=7, weight_bits=wb,
                        signed=signed)
  device = DeviceSpec(device_bits=db)
  w = _weights((13, 17), "levels", wb, db, signed).astype(dtype)
  g = np.asarray(program(w, mapping, device).g, np.float64)
  assert program(w, mapping, device).g.dtype == dtype
  g_min, g_max = device.g_min, device.g_max
  eps = 1e-6 if dtype == jnp.float32 else 1e-13
  assert g.min() >= g_min * (1 - eps)
  assert g.max() <= g_max * (1 + eps)
  cell = 2**db - 1 if db is not None else 2**wb - 1
  level = (g - g_min) / (g_max - g_min) * cell
  np.testing.assert_allclose(level, np.round(level), rtol=0,
                             atol=cell * eps * g_max / (g_max - g_min))


@pytest.mark.parametrize("signed", SIGNED)
@pytest.mark.parametrize("wb, db", [(8, 2), (8, 3), (6, 1), (3, 2)])
def test_slices_recombine_to_rounded_weight(wb, db, signed):
  """q from the digits of all slices equals round(m * L_w) from numpy."""
  fan_in, fan_out, m, n = 13, 17, 5, 7
  mapping = MappingSpec(tile_rows=m, tile_cols=n, weight_bits=wb,
                        signed=signed)
  device = DeviceSpec(device_bits=db)
  w = _weights((fan_in, fan_out), "q", wb, db, signed)
  g = np.asarray(program(w, mapping, device).g)
  l_w, l_d = 2**wb - 1, 2**db - 1
  digits = np.round((g - device.g_min) / (device.g_max - device.g_min) * l_d)
  digits = digits.astype(np.int64)
  assert digits.min() >= 0 and digits.max() <= l_d
  q_tiles = sum(digits[k] << (k * db) for k in range(digits.shape[0]))
  # [P, Tr, Tc, M, N] -> [P, Tr * M, Tc * N] in the contract's tile order.
  p, tr, tc = q_tiles.shape[:3]
  q = q_tiles.transpose(0, 1, 3, 2, 4).reshape(p, tr * m, tc * n)
  w_max = np.abs(w).max()
  if signed == "differential":
    assert np.all((q[0] == 0) | (q[1] == 0))
    q_signed = (q[0] - q[1])[:fan_in, :fan_out]
    expected = np.sign(w) * np.round(np.abs(w) / w_max * l_w)
  else:
    q = q[0].reshape(tr * m, tc, n)[:, :, :n - 1].reshape(tr * m, -1)
    q_signed = q[:fan_in, :fan_out]
    expected = np.round(np.clip((w / w_max + 1) / 2, 0, 1) * l_w)
  np.testing.assert_array_equal(q_signed, expected)


@pytest.mark.parametrize("db", [2, None])
def test_differential_padding_and_idle_polarity_are_g_min(db):
  fan_in, fan_out, m, n = 13, 17, 5, 7
  mapping = MappingSpec(tile_rows=m, tile_cols=n)
  device = DeviceSpec(device_bits=db)
  w = _weights((fan_in, fan_out), "pad", db)
  g = np.asarray(program(w, mapping, device).g)
  s, _, tr, tc = g.shape[:4]
  full = g.transpose(0, 1, 2, 4, 3, 5).reshape(s, 2, tr * m, tc * n)
  assert np.all(full[:, :, fan_in:, :] == device.g_min)
  assert np.all(full[:, :, :, fan_out:] == device.g_min)
  core = full[:, :, :fan_in, :fan_out]
  assert np.all(core[:, 1][:, w > 0] == device.g_min)
  assert np.all(core[:, 0][:, w < 0] == device.g_min)
  # The active polarity is programmed above g_min for every weight whose
  # magnitude survives quantization.
  big = np.abs(w) > 0.05 * np.abs(w).max()
  assert np.all(core[:, 0][:, big & (w > 0)].max(axis=0) > device.g_min)
  assert np.all(core[:, 1][:, big & (w < 0)].max(axis=0) > device.g_min)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_offset_reference_column_and_padding(dtype):
  fan_in, fan_out, m, n = 13, 17, 5, 7
  mapping = MappingSpec(tile_rows=m, tile_cols=n, signed="offset")
  device = DeviceSpec()
  w = _weights((fan_in, fan_out), "offset pad").astype(dtype)
  g = np.asarray(program(w, mapping, device).g)
  g_min = np.asarray(device.g_min, dtype)
  assert g.shape[1] == 1
  assert np.all(g[..., n - 1] == g_min)
  # Padded cells hold what weight 0 maps to: compare with a matrix of zeros
  # mapped with the same w_max (weight_scale), whose every cell is weight 0.
  w_max = float(np.abs(w).max())
  zeros = np.asarray(program(
      np.zeros((m, n - 1), dtype),
      MappingSpec(tile_rows=m, tile_cols=n, signed="offset",
                  weight_scale=w_max), device).g)[:, 0, 0, 0, 0, 0]
  s, _, tr, tc = g.shape[:4]
  full = g[..., :n - 1].transpose(0, 1, 2, 4, 3, 5)
  full = full.reshape(s, tr * m, tc * (n - 1))
  assert np.all(full[:, fan_in:, :] == zeros[:, None, None])
  assert np.all(full[:, :, fan_out:] == zeros[:, None, None])
  # Weight 0 is the middle of the range: u = 1/2 -> q = round(L_w / 2).
  digits = np.round((zeros.astype(np.float64) - device.g_min)
                    / (device.g_max - device.g_min) * 3).astype(int)
  assert sum(d << (2 * k) for k, d in enumerate(digits)) == round(255 / 2)


@pytest.mark.parametrize("signed", SIGNED)
def test_weight_scale_clips(signed):
  mapping = MappingSpec(tile_rows=4, tile_cols=4, signed=signed,
                        weight_scale=0.5, weight_bits=None)
  device = DeviceSpec(device_bits=None)
  w = np.array([[-2.0, -0.5, -0.25, 0.0, 0.25, 0.5, 3.0]])
  mapped = program(w, mapping, device)
  assert float(mapped.w_scale) == 0.5
  w_hat = np.asarray(unmap(mapped.g, mapped.w_scale, mapping, device,
                           w.shape))
  np.testing.assert_allclose(w_hat, np.clip(w, -0.5, 0.5), atol=1e-15)


def test_all_zero_weights_use_unit_scale():
  mapping, device = MappingSpec(tile_rows=4, tile_cols=4), DeviceSpec()
  mapped = program(np.zeros((5, 3)), mapping, device)
  assert float(mapped.w_scale) == 1.0
  assert np.all(np.asarray(mapped.g) == device.g_min)
  w_hat = unmap(mapped.g, mapped.w_scale, mapping, device, (5, 3))
  assert np.all(np.isfinite(np.asarray(w_hat)))
  assert np.all(np.asarray(w_hat) == 0.0)


def test_default_scale_is_max_abs_weight():
  w = np.array([[0.1, -0.7], [0.3, 0.2]])
  mapped = program(w, MappingSpec(), DeviceSpec())
  assert float(mapped.w_scale) == 0.7


@pytest.mark.parametrize("signed", SIGNED)
def test_unmap_formula_on_varied_conductances(signed):
  """unmap is linear in g: check it on arbitrary (non-level) conductances."""
  m, n = 3, 4
  mapping = MappingSpec(tile_rows=m, tile_cols=n, signed=signed)
  device = DeviceSpec()
  fan_in, fan_out = 5, 6
  tr, tc = tile_grid(fan_in, fan_out, mapping)
  s, p = 4, (2 if signed == "differential" else 1)
  rng = _rng("unmap", signed)
  g = rng.uniform(0.5 * device.g_min, 1.2 * device.g_max,
                  (s, p, tr, tc, m, n))
  w_max = 0.37
  w_hat = np.asarray(unmap(g, w_max, mapping, device, (fan_in, fan_out)))
  dg = device.g_max - device.g_min
  sw = 3 * 4.0**np.arange(4) / 255
  n_w = n if signed == "differential" else n - 1
  for i in range(fan_in):
    for j in range(fan_out):
      r, c, ii, jj = i // m, j // n_w, i % m, j % n_w
      if signed == "differential":
        x = sum(sw[k] * (g[k, 0, r, c, ii, jj] - g[k, 1, r, c, ii, jj])
                for k in range(s)) / dg
        expected = w_max * x
      else:
        x = sum(sw[k] * (g[k, 0, r, c, ii, jj] - g[k, 0, r, c, ii, n - 1])
                for k in range(s)) / dg
        expected = w_max * (2 * x - 1)
      assert w_hat[i, j] == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_program_under_jit_matches_eager():
  mapping = MappingSpec(tile_rows=5, tile_cols=7)
  device = DeviceSpec()
  w = _weights((13, 17), "jit")
  jitted = jax.jit(program, static_argnames=("mapping", "device"))
  a, b = jitted(w, mapping, device), program(w, mapping, device)
  np.testing.assert_array_equal(np.asarray(a.g), np.asarray(b.g))
  np.testing.assert_array_equal(np.asarray(a.w_scale), np.asarray(b.w_scale))


def test_program_rejects_wrong_rank():
  with pytest.raises(ValueError, match="rank 2"):
    program(np.zeros(5), MappingSpec(), DeviceSpec())
  with pytest.raises(ValueError, match="rank 2"):
    program(np.zeros((2, 3, 4)), MappingSpec(), DeviceSpec())


def test_unmap_rejects_wrong_shape():
  mapping, device = MappingSpec(tile_rows=4, tile_cols=4), DeviceSpec()
  mapped = program(np.ones((5, 3)), mapping, device)
  with pytest.raises(ValueError, match="shape"):
    unmap(mapped.g, mapped.w_scale, mapping, device, (9, 3))
