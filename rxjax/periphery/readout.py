"""The last stage of the read: the ADC (per-column gain and offset, a
non-linear transfer curve, clipping and quantization over a calibrated
full-scale current), unipolar and bipolar, and one chip's ADC errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rxjax.periphery.specs import ADCSpec, float_array

# ---------------------------------------------------------------------------
# ADC.


def _curve_correction(z):
  """h(z) of the transfer curve z' = z + alpha h(z).

  `z (1 - z)` on [0, 1]; continued linearly with the end slopes outside
  (`z` below 0, `1 - z` above 1), so the curve stays monotone and C1 where
  nothing clips it (bits None).
  """
  return jnp.where(z < 0, z, jnp.where(z > 1, 1 - z, z * (1 - z)))


def _curve(z, alpha, odd):
  """The transfer curve's correction `alpha h(z)`; odd: `sign(z) h(|z|)`."""
  if odd:
    return jnp.sign(z) * alpha * _curve_correction(jnp.abs(z))
  return alpha * _curve_correction(z)


def _normalized_reading(i, full_scale, adc: ADCSpec, offset, gain,
                        odd=False):
  """z' = curve(z (1 + gain) + offset), z = i / full_scale, unclipped.

  Multiplies by the reciprocal of the (scalar or per-column) full scale:
  divisions per current cost several times a multiplication on the CPU,
  and the ADC runs on every column current of every read.
  """
  z = i * (1 / full_scale)
  if gain is not None:
    z = z * (1 + jnp.asarray(gain, i.dtype))
  if offset is not None:
    z = z + jnp.asarray(offset, i.dtype)
  if adc.nonlinearity != 0:
    z = z + _curve(z, adc.nonlinearity, odd)
  return z


def _unquantized_reading(i, full_scale, adc: ADCSpec, offset, gain,
                         odd=False):
  """The reading without clipping or quantization (`bits` None), computed
  in amperes so that with gain, offset and alpha off it is `i` exactly."""
  y = i
  if gain is not None:
    y = y * (1 + jnp.asarray(gain, i.dtype))
  if offset is not None:
    y = y + jnp.asarray(offset, i.dtype) * full_scale
  if adc.nonlinearity != 0:
    y = y + full_scale * _curve(y / full_scale, adc.nonlinearity, odd)
  return y


def adc(i, full_scale, adc: ADCSpec, *, offset=None, gain=None) -> jax.Array:
  """ADC reading, dequantized to amperes, of column currents.

  With `z = i / full_scale`:

  1. per-column gain and offset: `z = z (1 + gain) + offset`;
  2. transfer curve: `z' = z + alpha z (1 - z)` on [0, 1] (alpha =
     `adc.nonlinearity`). For `|alpha| <= 1` it is monotone, keeps the end
     points 0 and 1, and its integral non-linearity is largest at
     mid-scale, `alpha / 4` of full scale. Outside [0, 1] it continues
     linearly with its end slopes `1 + alpha` and `1 - alpha`;
  3. clipping to [0, 1] and quantization `code = round(z' L)`,
     `L = 2**bits - 1` (round half to even);
  4. the reading `code / L * full_scale`.

  With `bits` None step 3 is skipped (no clipping, no quantization) and the
  result is computed in amperes, `i (1 + gain) + offset full_scale` then the
  curve, so with gain, offset and alpha off (None or zeros) it returns `i`
  unchanged, exactly.

  Args:
    i: `[..., N]` currents (amperes).
    full_scale: full-scale current (amperes, > 0), a scalar or an array
      broadcastable to i (e.g. per column); `calibrate` never returns 0.
    adc: the ADC spec (static).
    offset: per-column offset as a fraction of full scale, broadcastable to
      i (e.g. `[N]` or `[..., N]`), or None.
    gain: per-column relative gain error, broadcastable to i, or None.

  Returns:
    Readings in amperes, the shape and dtype of i.
  """
  i = float_array(i)
  full_scale = jnp.asarray(full_scale, i.dtype)
  if adc.bits is None:
    return _unquantized_reading(i, full_scale, adc, offset, gain)
  levels = 2.0 ** adc.bits - 1
  z = _normalized_reading(i, full_scale, adc, offset, gain)
  code = jnp.round(jnp.clip(z, 0, 1) * levels)
  return code * (full_scale / levels)


def adc_bipolar(i, full_scale, adc: ADCSpec, *, offset=None,
                gain=None) -> jax.Array:
  """Reading of signed currents by a bipolar (sign-magnitude) ADC.

  Used with analog pair subtraction (`crossbar.ChipSpec.pair_subtraction =
  "analog"`), where the sense amplifier digitizes `I+ - I-`. With `z = i /
  full_scale`, per-column gain and offset as in `adc`, the transfer curve
  of `adc` applied odd-symmetrically (`sign(z) curve(|z|)`), clipping to
  [-1, 1] and `code = round(z' L)` with `L = 2**(bits - 1) - 1`: `2 L + 1`
  levels symmetric about an exact zero, a step of `full_scale / L` (twice
  the unipolar step of the same bits: one bit holds the sign).

  With `bits` None there is no clipping or quantization and, with gain,
  offset and alpha off, the result is `i` exactly.

  Args:
    i: `[..., N]` signed currents (amperes).
    full_scale: full-scale current (amperes, > 0), broadcastable to i.
    adc: the ADC spec (static); `bits` None or >= 2.
    offset: per-column offset (fraction of full scale) or None.
    gain: per-column relative gain error or None.

  Returns:
    Readings in amperes, the shape and dtype of i.
  """
  if adc.bits is not None and adc.bits < 2:
    raise ValueError(f"a bipolar ADC needs `bits` >= 2 (one is the sign), "
                     f"got bits={adc.bits}")
  i = float_array(i)
  full_scale = jnp.asarray(full_scale, i.dtype)
  if adc.bits is None:
    return _unquantized_reading(i, full_scale, adc, offset, gain, odd=True)
  z = _normalized_reading(i, full_scale, adc, offset, gain, odd=True)
  levels = 2.0 ** (adc.bits - 1) - 1
  return jnp.round(jnp.clip(z, -1, 1) * levels) * (full_scale / levels)


def adc_codes(i, full_scale, adc: ADCSpec, *, offset=None,
              gain=None) -> jax.Array:
  """Integer output codes of the ADC (see `adc`): `[..., N]` int32 in [0, L].

  Raises:
    ValueError: `adc.bits` None (no codes) or > 31 (do not fit int32).
  """
  if adc.bits is None or adc.bits > 31:
    raise ValueError(
        f"`adc_codes` needs 1 <= adc.bits <= 31, got bits={adc.bits!r}")
  i = float_array(i)
  full_scale = jnp.asarray(full_scale, i.dtype)
  levels = 2.0 ** adc.bits - 1
  z = _normalized_reading(i, full_scale, adc, offset, gain)
  return jnp.round(jnp.clip(z, 0, 1) * levels).astype(jnp.int32)


def adc_variation(shape_cols, adc: ADCSpec, *, key, dtype=None
                  ) -> tuple[jax.Array, jax.Array]:
  """Per-column ADC offset and gain errors of one chip instance.

  Args:
    shape_cols: shape of the columns, e.g. `[..., N]` (tiles, columns).
    adc: the ADC spec (static).
    key: PRNG key of the chip; `fold_in(key, 0)` draws the offsets and
      `fold_in(key, 1)` the gains (same key, same variation).
    dtype: floating dtype; None is JAX's default float.

  Returns:
    (offset, gain), each `shape_cols`: `offset_sigma * N(0, 1)` (fraction of
    full scale) and `gain_sigma * N(0, 1)`; exact zeros when the sigma is 0.
  """
  dtype = jnp.result_type(float) if dtype is None else dtype
  shape = tuple(shape_cols)

  def draw(sigma, k):
    if sigma == 0:
      return jnp.zeros(shape, dtype)
    return sigma * jax.random.normal(jax.random.fold_in(key, k), shape, dtype)

  return draw(adc.offset_sigma, 0), draw(adc.gain_sigma, 1)
