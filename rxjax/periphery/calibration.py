"""Calibration of the input scale and of the ADC full scale from calibration
batches (RxNN VII, TxSim IV-B)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rxjax import _checks
from rxjax.periphery.specs import (CALIBRATIONS, ADCSpec, DACSpec,
                                   check_percentile, float_array)

# ---------------------------------------------------------------------------
# Calibration.


def calibrate(values, calibration: str = "max", percentile: float = 99.99,
              *, axis=None) -> jax.Array:
  """A range from calibration data: the max or a percentile of values.

  Used for the input scale (of `|x|`) and the ADC full scale (of column
  currents, TxSim IV-B). If the statistic is 0 (all-zero calibration data)
  the result is 1.0 instead, so that dividing by it is always safe.

  Args:
    values: non-negative calibration values, any shape.
    calibration: "max" or "percentile" (static).
    percentile: in (0, 100], for "percentile" (numpy's linear
      interpolation).
    axis: axes to reduce; None reduces everything to a scalar.

  Returns:
    The range in the dtype of values (a scalar for `axis=None`).
  """
  _checks.check_choice("calibration", calibration, CALIBRATIONS)
  check_percentile(percentile)
  values = float_array(values)
  if calibration == "max":
    r = jnp.max(values, axis=axis)
  else:
    r = jnp.percentile(values, percentile, axis=axis).astype(values.dtype)
  return jnp.where(r > 0, r, jnp.ones_like(r))


def input_scale(x, dac: DACSpec) -> jax.Array:
  """Input scale of a layer: `dac.calibration` of `|x|` (see `calibrate`)."""
  return calibrate(jnp.abs(float_array(x)), dac.calibration, dac.percentile)


def full_scale(currents, adc: ADCSpec) -> jax.Array:
  """ADC full-scale current: `adc.calibration` of the non-negative currents."""
  return calibrate(currents, adc.calibration, adc.percentile)
