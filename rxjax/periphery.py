"""Peripheral converters of a crossbar tile: DAC, ADC and their calibration.

This module owns the first and the last stage of the three-stage read of
RxNN section V (fig. 4) and DESIGN.md section 3:

* input streaming: an input of `input_bits` is applied over `n_cycles(dac)`
  cycles of a `dac_bits` DAC (`stream`, `cycle_weights`); the digitized
  results of the cycles are combined by shift-and-add with `cycle_weights`;
* the DAC voltage of every row: ideal, RxNN's resistive divider loaded by the
  row load `G_Load` computed from `G_eff` (`dac_voltage`, `row_load`), or the
  same divider solved against the exact row-port admittance of the tile
  (`dac_voltage_exact`, `port_admittance`);
* the ADC: per-column gain and offset, a non-linear transfer curve, clipping
  and quantization over a calibrated full-scale current (`adc`,
  `adc_variation`);
* calibration of the input scale and of the ADC full scale from calibration
  batches (`calibrate`, `input_scale`, `full_scale`; TxSim IV-B).

It does not own the crossbar network (`rxjax.circuit`), the mapping of weights
(`mapping.py`) or the composition of the stages (`crossbar.py`).

Signed inputs. Everything here sees only non-negative normalized inputs
`x01` in `[0, 1]` (the input divided by its calibrated scale). Signed inputs
(the first layer, backward errors) are applied as TWO PASSES: the positive
part `max(x, 0)` and then the negative part `max(-x, 0)`, each through the
same DAC -> crossbar -> ADC read, and the two digital results are subtracted.
The caller (`crossbar.py`) makes the passes; this module never sees a sign.

All functions are pure and traceable; the specs are frozen, hashable
dataclasses, to be passed as static arguments under `jax.jit`. Array
functions keep the floating dtype of their main input (float32 or float64).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from rxjax import _checks
from rxjax import circuit

DAC_MODELS = ("ideal", "divider", "divider_exact")
CALIBRATIONS = ("max", "percentile")


# ---------------------------------------------------------------------------
# Validation helpers.


def _check_percentile(value):
  p = _checks.as_finite_float("percentile", value, "a percentile in (0, 100]")
  if not 0 < p <= 100:
    raise ValueError(f"`percentile` must be in (0, 100], got {value!r}")


def _float_array(x):
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
      None: the caller passes it (`crossbar.py` uses the row load of a
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
    _check_percentile(self.percentile)

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
    _check_percentile(self.percentile)
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


# ---------------------------------------------------------------------------
# Input streaming.


def n_cycles(dac: DACSpec) -> int:
  """Number of DAC cycles per input: `ceil(input_bits / dac_bits)`, else 1."""
  if dac.input_bits is None or dac.dac_bits is None:
    return 1
  return -(-dac.input_bits // dac.dac_bits)


def cycle_weights(dac: DACSpec) -> np.ndarray:
  """Shift-and-add weights of the cycles.

  `sum_c cw[c] * u_c = q / L_in` for the cycle outputs `u_c` of `stream`:
  `cw[c] = L_dac * 2**(c * dac_bits) / L_in` with `L_dac = 2**dac_bits - 1`,
  `L_in = 2**input_bits - 1`; `[1.]` when one of the two is None.

  Returns:
    `[C]` float64 numpy array, `C = n_cycles(dac)`.
  """
  if dac.input_bits is None or dac.dac_bits is None:
    return np.ones((1,), np.float64)
  l_in = 2.0 ** dac.input_bits - 1
  l_dac = 2.0 ** dac.dac_bits - 1
  c = np.arange(n_cycles(dac), dtype=np.float64)
  return l_dac * 2.0 ** (c * dac.dac_bits) / l_in


def stream(x01, dac: DACSpec) -> jax.Array:
  """Per-cycle normalized DAC outputs of non-negative normalized inputs.

  The input is clipped to [0, 1] and quantized, `q = round(x01 * L_in)`
  (round half to even); cycle c applies the digit
  `d_c = (q >> (c * dac_bits)) & (2**dac_bits - 1)` (c = 0 least
  significant) as `u_c = d_c / L_dac`. The digits are computed with exact
  floating-point operations (divisions by powers of two and floors), so the
  decomposition is exact while `q` is representable: `input_bits <= 24` in
  float32, `<= 53` in float64.

  Args:
    x01: `[...]` normalized inputs (ideally in [0, 1]; clipped).
    dac: the DAC spec (static).

  Returns:
    `[C, ...]` array of `u_c` in [0, 1] on the grid `k / L_dac`, in the dtype
    of x01; `C = n_cycles(dac)`. With `input_bits` None: `C = 1` and
    `u = clip(x01, 0, 1)`. With `dac_bits` None: `C = 1`, `u = q / L_in`.
  """
  q = stream_levels(x01, dac)
  return jnp.stack([stream_cycle(q, c, dac) for c in range(n_cycles(dac))])


def stream_levels(x01, dac: DACSpec) -> jax.Array:
  """The quantized inputs that `stream` splits into cycles.

  Returns:
    `q = round(clip(x01, 0, 1) * L_in)`, the shape and dtype of x01
    (`clip(x01, 0, 1)` with `input_bits` None).
  """
  x = jnp.clip(_float_array(x01), 0, 1)
  if dac.input_bits is None:
    return x
  return jnp.round(x * (2.0 ** dac.input_bits - 1))


def stream_cycle(q, c, dac: DACSpec) -> jax.Array:
  """Cycle `c`'s normalized DAC output `u_c` of the levels `q`
  (`stream_levels`): `stream(x01, dac)[c]`, one cycle at a time, so that a
  read need not hold every cycle's inputs at once. `c` may be traced."""
  if dac.input_bits is None:
    return q
  if dac.dac_bits is None:
    return q / (2.0 ** dac.input_bits - 1)
  base = 2.0 ** dac.dac_bits
  if n_cycles(dac) == 1:  # q < base: the one digit is q itself.
    return q / (base - 1)
  # Exact powers of two from a table (a traced `base ** c` need not be).
  shift = jnp.asarray([base ** k for k in range(n_cycles(dac))], q.dtype)[c]
  high = jnp.floor(q / shift)  # q >> (c * dac_bits), exactly.
  return (high - base * jnp.floor(high / base)) / (base - 1)


# ---------------------------------------------------------------------------
# DAC voltages.


def _nominal(dac: DACSpec, nominal_load):
  if dac.nominal_load is not None:
    return dac.nominal_load
  if nominal_load is None:
    raise ValueError(
        f"dac.model={dac.model!r} needs the row load at which the divider is "
        "exact: set `DACSpec.nominal_load` (siemens) or pass "
        "`nominal_load=` to this function")
  return nominal_load


def _g_dac(t, dac: DACSpec, g_nom):
  """Conductance 1/R_DAC of the code whose output is `t` at load `g_nom`.

  From `v_ref * G_dac / (G_dac + G_pd + G_nom) = t`.
  """
  a = t / dac.v_ref
  return a * (1 / dac.r_pd + g_nom) / (1 - a)


def dac_voltage(u, dac: DACSpec, g_load=None, *, nominal_load=None
                ) -> jax.Array:
  """Row voltages of the DAC (RxNN fig. 2a / 4) for normalized codes u.

  "ideal": `v = u * v_read`.

  "divider": the code sets a conductance `G_dac` from the output node
  towards `v_ref` against `G_pd = 1 / r_pd` to ground; the row loads the
  output node with `g_load`. `G_dac` is chosen so that the output is the
  target `t = u * v_read` exactly at the nominal load `G_nom`:
  `G_dac = (t / v_ref) (G_pd + G_nom) / (1 - t / v_ref)`. The actual output
  is `v = v_ref G_dac / (G_dac + G_pd + g_load)`, evaluated in the
  equivalent form `t / (1 + (1 - t / v_ref) (g_load - G_nom) / (G_pd +
  G_nom))`, which returns `t` bit-exactly at `g_load == G_nom` and 0 V at
  `u = 0`. A heavier load (`g_load > G_nom`) lowers the voltage, a lighter
  one raises it. Cost O(M) per input vector.

  Args:
    u: `[...]` normalized DAC outputs in [0, 1] (from `stream`), e.g.
      `[..., M]` per row.
    dac: the DAC spec (static). Model "divider_exact" is served by
      `dac_voltage_exact`.
    g_load: row load in siemens, broadcastable against u (e.g. `[..., M]`,
      `row_load(g_eff)`); required by "divider", ignored by "ideal".
    nominal_load: row load (siemens, scalar or broadcastable) at which the
      divider is exact; used only when `dac.nominal_load` is None.

  Returns:
    Voltages (volt), the broadcast shape of u and g_load (the shape of u
    when g_load broadcasts to it), in the dtype of u.

  Raises:
    ValueError: model "divider" without g_load or without a nominal load;
      model "divider_exact" (use `dac_voltage_exact`).
  """
  u = _float_array(u)
  t = u * dac.v_read
  if dac.model == "ideal":
    return t
  if dac.model == "divider_exact":
    raise ValueError(
        "dac.model='divider_exact' is solved against the tile's row-port "
        "admittance: use `dac_voltage_exact(u, dac, y_port)`")
  if g_load is None:
    raise ValueError("dac.model='divider' needs `g_load`, the row load in "
                     "siemens (e.g. `row_load(g_eff)`)")
  g_nom = jnp.asarray(_nominal(dac, nominal_load), u.dtype)
  g_load = jnp.asarray(g_load, u.dtype)
  a = t / dac.v_ref
  return t / (1 + (1 - a) * (g_load - g_nom) / (1 / dac.r_pd + g_nom))


def dac_voltage_exact(u, dac: DACSpec, y_port, nominal_load=None
                      ) -> jax.Array:
  """Divider DAC voltages solved against the exact row-port admittance.

  Each row's divider is a Thevenin source, `G_th = G_dac + G_pd` and
  `V_th = v_ref G_dac / G_th` (`G_dac` as in `dac_voltage`, exact at the
  nominal load), driving the tile's row ports (the driver terminals, before
  `r_source`) whose input admittance is `y_port` (`i_in = y_port @ v`). The
  voltages solve `(diag(G_th) + y_port) v = G_th V_th = v_ref G_dac`, one
  dense solve per input vector because `G_th` depends on the codes.

  Cost: O(M^3) per input vector per tile (an M x M LU), against O(M) for
  model "divider". Model "ideal" returns `u * v_read` (an ideal source holds
  its voltage whatever the load); "divider" and "divider_exact" solve.

  Args:
    u: `[..., M]` normalized DAC outputs in [0, 1] of the M rows.
    dac: the DAC spec (static).
    y_port: `[..., M, M]` row-port admittance (siemens) from
      `port_admittance`; its leading axes broadcast against those of u.
    nominal_load: row load (siemens) at which the divider is exact; used
      only when `dac.nominal_load` is None.

  Returns:
    `[..., M]` voltages (volt) at the row ports, the broadcast batch shape,
    in the dtype of u.

  Raises:
    ValueError: shapes that do not match, or no nominal load.
  """
  u = _float_array(u)
  y_port = jnp.asarray(y_port, u.dtype)
  if u.ndim < 1 or y_port.ndim < 2 or y_port.shape[-2:] != (
      u.shape[-1], u.shape[-1]):
    raise ValueError(
        f"`u` must be [..., M] and `y_port` [..., M, M], got shapes "
        f"{u.shape} and {y_port.shape}")
  t = u * dac.v_read
  if dac.model == "ideal":
    return t
  g_nom = jnp.asarray(_nominal(dac, nominal_load), u.dtype)
  return _divider_solve(t, g_nom, y_port, dac)


@functools.partial(jax.jit, static_argnums=3)
def _divider_solve(t, g_nom, y_port, dac: DACSpec):
  """(diag(G_th) + y_port) v = v_ref G_dac for targets t: [..., M]."""
  g_dac = _g_dac(t, dac, g_nom)
  m = t.shape[-1]
  batch = jnp.broadcast_shapes(t.shape[:-1], y_port.shape[:-2])
  g_th = jnp.broadcast_to(g_dac + 1 / dac.r_pd, batch + (m,))
  rhs = jnp.broadcast_to(dac.v_ref * g_dac, batch + (m,))
  a = jnp.broadcast_to(y_port, batch + (m, m)) + (
      g_th[..., :, None] * jnp.eye(m, dtype=t.dtype))
  # An M-matrix (port admittance plus a positive diagonal): no LAPACK.
  return circuit.solve_mmatrix(a, rhs)


def port_admittance(g, wires: circuit.Wires) -> jax.Array:
  """Row-port input admittance of tiles, columns at their virtual grounds.

  The port of row i is the terminal of its driver, in front of `r_source`
  (DESIGN.md section 2), so the wires, the driver and sense resistances are
  all inside. Found by M exact per-input solves
  (`circuit.node_voltages`): input vector a drives row a at 1 V and the other
  rows at 0 V; the current entering row i is the sum of its device currents
  (a row's only exits are its devices, so this holds for any resistance,
  zero included): `i_in[a, i] = sum_j g[i, j] (v_row[a, i, j] -
  v_col[a, i, j])`, and `y_port[i, a] = i_in[a, i]`.

  Args:
    g: `[..., M, N]` device conductances (siemens).
    wires: the tile's parasitic resistances.

  Returns:
    `[..., M, M]` admittance (siemens) in the dtype of g: `i_in = y_port @ v`
    for row-port voltages `v: [..., M]`. It is symmetric (reciprocity); with
    all resistances zero it is `diag(g.sum(-1))`; its column sums are the
    row sums of `G_eff`.
  """
  g = jnp.asarray(g)
  m = g.shape[-2]
  eye = jnp.broadcast_to(jnp.eye(m, dtype=g.dtype), g.shape[:-2] + (m, m))
  nodes = circuit.node_voltages(g[..., None, :, :], eye, wires)
  i_in = jnp.einsum("...ij,...aij->...ai", g, nodes.v_row - nodes.v_col)
  return jnp.swapaxes(i_in, -1, -2)


def row_load(g_eff) -> jax.Array:
  """RxNN's row load `G_Load`: row sums of the non-ideal conductance matrix.

  Args:
    g_eff: `[..., M, N]` effective conductances (siemens).

  Returns:
    `[..., M]` loads (siemens): the total output current per volt on row i
    with the other rows at 0 V.
  """
  return jnp.asarray(g_eff).sum(-1)


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
  i = _float_array(i)
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
  i = _float_array(i)
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
  i = _float_array(i)
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
  _check_percentile(percentile)
  values = _float_array(values)
  if calibration == "max":
    r = jnp.max(values, axis=axis)
  else:
    r = jnp.percentile(values, percentile, axis=axis).astype(values.dtype)
  return jnp.where(r > 0, r, jnp.ones_like(r))


def input_scale(x, dac: DACSpec) -> jax.Array:
  """Input scale of a layer: `dac.calibration` of `|x|` (see `calibrate`)."""
  return calibrate(jnp.abs(_float_array(x)), dac.calibration, dac.percentile)


def full_scale(currents, adc: ADCSpec) -> jax.Array:
  """ADC full-scale current: `adc.calibration` of the non-negative currents."""
  return calibrate(currents, adc.calibration, adc.percentile)
