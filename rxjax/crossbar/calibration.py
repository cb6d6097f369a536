"""Calibration of a programmed layer (input scale, ADC full scale: RxNN VII,
TxSim IV-B) and the digital column gain fitted after programming."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rxjax import finite
from rxjax import periphery
from rxjax.crossbar.chip import Chip, check_solved, check_spec
from rxjax.crossbar.reads import (input_levels, one_product_per_pair,
                                  scan_tile_rows, trim)
from rxjax.crossbar.spec import ChipSpec

def calibrate(chip: Chip, x, spec: ChipSpec) -> Chip:
  """Sets the input scale and the ADC full scale from a calibration batch.

  Args:
    chip: a programmed layer.
    x: `[..., fan_in]` calibration inputs (zero-padded up to the tile grid
      if narrower).
    spec: the chip's spec. The input scale is `spec.dac.calibration` ("max"
      or a percentile) of `|x|`; the ADC full scale the same statistic of
      every column current of every tile, cycle and pass.

  Returns:
    The chip with `x_scale` and `adc_full_scale` set. Under jit, a
    non-finite calibration input makes every array of the chip NaN.

  Raises:
    ValueError: `x` holds NaN or inf (outside jit), or is empty.
  """
  check_solved(chip)
  check_spec(spec)
  x = jnp.asarray(x, chip.g.dtype)
  if x.ndim < 1 or x.shape[-1] != chip.fan_in:
    raise ValueError(f"calibration inputs must have shape [..., "
                     f"{chip.fan_in}], got {x.shape}")
  if x.size == 0:
    raise ValueError(f"calibration inputs `x` must hold at least one row, "
                     f"got shape {x.shape}")
  ok = finite.check("x", x, "calibration inputs")
  return finite.poison(_calibrate(chip, x, spec), ok)


def _calibrate(chip: Chip, x, spec: ChipSpec) -> Chip:
  x = x.reshape((-1, chip.fan_in))
  x_scale = periphery.input_scale(x, spec.dac).astype(chip.g.dtype)
  calibrated = chip.replace(x_scale=x_scale)
  chip = trim(calibrated, spec)
  levels = input_levels(x, chip, spec)
  g_eff = one_product_per_pair(chip.g_eff, spec)
  # What the ADCs digitize: each column's current, or |I+ - I-| of a pair.
  # (Only analog pairs take the abs: an abs on every current would keep a
  # second copy of all currents alive and raise the peak memory.)
  pairs = spec.periphery.pairs
  seen = lambda i: pairs.magnitude(pairs.subtract(i, axis=3))
  if spec.adc.calibration == "max":
    reduce = lambda acc, i, r, c: jnp.maximum(acc, seen(i).max())
    full = scan_tile_rows(levels, chip, spec, reduce,
                           jnp.zeros((), x.dtype), g_eff=g_eff)
    full = periphery.calibrate(full, "max")  # All-zero data: 1, not 0.
  else:
    # A percentile needs every current: keep calibration batches small.
    reduce = lambda acc, i, r, c: acc.at[r, c].set(seen(i))
    c, (q, b) = periphery.n_cycles(spec.dac), levels.shape[:2]
    s, p, tr, tc, _, n = chip.g.shape
    p = pairs.adc_polarities(p)
    init = jnp.zeros((tr, c, q, b, s, p, tc, n), x.dtype)
    full = periphery.full_scale(
        scan_tile_rows(levels, chip, spec, reduce, init, g_eff=g_eff),
        spec.adc)
  return calibrated.replace(adc_full_scale=full.astype(chip.g.dtype))


def column_gain(y_chip, y_ideal) -> jax.Array:
  """Per-column digital gain that maps a chip's readings onto the ideal ones.

  The least-squares fit, column by column, of `y_ideal ~ gain * y_chip`
  over a calibration batch: `gain_c = <y_chip_c, y_ideal_c> / <y_chip_c,
  y_chip_c>`. A column that read nothing (or whose fit is not positive)
  keeps gain 1. This is the digital readout calibration a chip does after
  programming (one multiplier per ADC column after the shift-and-add):
  the IR drops of a low-resistance or large tile mostly scale each
  column's current down (RxNN V-B: up to 0.02x on a 10 kOhm Cross128
  LeNet-5), while the layer's bias, added digitally, is not scaled.

  Args:
    y_chip: `[..., fan_out]` the chip's readings of the calibration inputs.
    y_ideal: same shape, their ideal products `x @ w`.

  Returns:
    `[fan_out]` gains.
  """
  y_chip = jnp.asarray(y_chip)
  y_ideal = jnp.asarray(y_ideal, y_chip.dtype)
  if y_chip.shape != y_ideal.shape or y_chip.ndim < 1:
    raise ValueError(f"`y_chip` and `y_ideal` must have one shape [..., "
                     f"fan_out], got {y_chip.shape} and {y_ideal.shape}")
  a = y_chip.reshape(-1, y_chip.shape[-1])
  b = y_ideal.reshape(-1, y_ideal.shape[-1])
  num = jnp.sum(a * b, axis=0)
  den = jnp.sum(a * a, axis=0)
  tiny = jnp.finfo(a.dtype).tiny
  ok = (den > tiny) & (num > 0)
  return jnp.where(ok, num / jnp.where(ok, den, 1), 1).astype(a.dtype)
