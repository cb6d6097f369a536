"""The converters' settings (`DACSpec`, `ADCSpec`), frozen and validated,
and the checks the converter functions share."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from rxjax import _checks

DAC_MODELS = ("ideal", "divider", "divider_exact")
CALIBRATIONS = ("max", "percentile")


# ---------------------------------------------------------------------------
# Validation helpers.


def check_percentile(value):
  """A ValueError unless `value` is a percentile in (0, 100]."""
  p = _checks.as_finite_float("percentile", value, "a percentile in (0, 100]")
  if not 0 < p <= 100:
    raise ValueError(f"`percentile` must be in (0, 100], got {value!r}")


def float_array(x):
  """x as a floating array, keeping a floating dtype (default float else)."""
  x = jnp.asarray(x)
  if not jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(jnp.result_type(float))
  return x


# ---------------------------------------------------------------------------
# Specs.


@dataclasses.dataclass(frozen=True)
class DACSpec:
  """Input precision, DAC resolution and DAC circuit model.

  Attributes:
    input_bits: precision of the non-negative normalized input; the input is
      quantized to `L_in = 2**input_bits - 1` levels. None: full precision,
      applied in one cycle.
    dac_bits: DAC resolution per cycle. None: as many as `input_bits` (one
      cycle). With `input_bits > dac_bits` the input is streamed over
      `ceil(input_bits / dac_bits)` cycles, least significant digit first.
    v_read: row voltage of the full-scale code (volt), > 0.
    model: "ideal" (v = u * v_read), "divider" (RxNN's resistive divider,
      fig. 2a / 4, loaded by the row load G_Load from the row sums of G_eff,
      O(M) per input vector) or "divider_exact" (the same divider driving the
      tile's exact row-port admittance, one M x M solve per input vector).
    r_pd: fixed pull-down resistor of the divider (ohm), > 0.
    v_ref: divider supply (volt); must be finite and > v_read.
    nominal_load: row load (siemens, >= 0) at which the divider is exact.
      None: the caller passes it (`rxjax.crossbar` uses the row load of a
      mid-state tile, `tile_cols * (g_min + g_max) / 2`).
    calibration: input scale from calibration batches: "max" or "percentile"
      of `|x|`.
    percentile: in (0, 100]; used when `calibration == "percentile"`.
  """

  input_bits: int | None = 8
  dac_bits: int | None = 1
  v_read: float = 0.25
  model: str = "ideal"
  r_pd: float = 10e3
  v_ref: float = 0.5
  nominal_load: float | None = None
  calibration: str = "max"
  percentile: float = 99.99

  def __post_init__(self):
    _checks.check_bits("input_bits", self.input_bits, "full precision")
    _checks.check_bits("dac_bits", self.dac_bits, "one cycle")
    v_read = _checks.as_finite_float("v_read", self.v_read, "a finite voltage > 0 V")
    if v_read <= 0:
      raise ValueError(f"`v_read` must be a finite voltage > 0 V, got "
                       f"{self.v_read!r}")
    r_pd = _checks.as_finite_float("r_pd", self.r_pd, "a finite resistance > 0 ohm")
    if r_pd <= 0:
      raise ValueError(f"`r_pd` must be a finite resistance > 0 ohm, got "
                       f"{self.r_pd!r}")
    v_ref = _checks.as_finite_float("v_ref", self.v_ref,
                      f"a finite voltage > v_read = {v_read} V")
    if v_ref <= v_read:
      raise ValueError(f"`v_ref` must be a finite voltage > v_read = {v_read}"
                       f" V, got {self.v_ref!r}")
    if self.nominal_load is not None:
      load = _checks.as_finite_float("nominal_load", self.nominal_load,
                       "None or a finite conductance >= 0 S")
      if load < 0:
        raise ValueError(f"`nominal_load` must be None or a finite "
                         f"conductance >= 0 S, got {self.nominal_load!r}")
    _checks.check_choice("model", self.model, DAC_MODELS)
    _checks.check_choice("calibration", self.calibration, CALIBRATIONS)
    check_percentile(self.percentile)

  @classmethod
  def ideal(cls) -> "DACSpec":
    """Full-precision input in one cycle through an ideal DAC."""
    return cls(input_bits=None, dac_bits=None, model="ideal")


@dataclasses.dataclass(frozen=True)
class ADCSpec:
  """ADC resolution, calibration and non-idealities.

  Attributes:
    bits: resolution, `L = 2**bits - 1` steps over the full scale. None: no
      quantization and no clipping.
    calibration: full-scale current from calibration currents: "max" or
      "percentile".
    percentile: in (0, 100]; used when `calibration == "percentile"`.
    nonlinearity: alpha of the transfer curve `z + alpha z (1 - z)` (see
      `adc`), `|alpha| <= 1`; 0 is linear.
    offset_sigma: per-column offset standard deviation, as a fraction of the
      full scale, >= 0.
    gain_sigma: per-column relative gain standard deviation, >= 0.
  """

  bits: int | None = 8
  calibration: str = "max"
  percentile: float = 99.99
  nonlinearity: float = 0.0
  offset_sigma: float = 0.0
  gain_sigma: float = 0.0

  def __post_init__(self):
    _checks.check_bits("bits", self.bits, "no quantization")
    _checks.check_choice("calibration", self.calibration, CALIBRATIONS)
    check_percentile(self.percentile)
    alpha = _checks.as_finite_float("nonlinearity", self.nonlinearity,
                      "a finite number with |nonlinearity| <= 1")
    if abs(alpha) > 1:
      raise ValueError(f"`nonlinearity` must satisfy |nonlinearity| <= 1 (a "
                       f"monotone curve), got {self.nonlinearity!r}")
    for name in ("offset_sigma", "gain_sigma"):
      value = getattr(self, name)
      s = _checks.as_finite_float(name, value, "a finite standard deviation >= 0")
      if s < 0:
        raise ValueError(f"`{name}` must be a finite standard deviation >= 0,"
                         f" got {value!r}")

  @classmethod
  def ideal(cls) -> "ADCSpec":
    """No quantization, no clipping, linear, no variation."""
    return cls(bits=None, nonlinearity=0.0, offset_sigma=0.0, gain_sigma=0.0)
