"""Technology parameters of the chip's energy, latency and area
(`EnergySpec`): per-operation energies, timing and areas, frozen and
validated, with a documented default and source for each (ISAAC's 32 nm
components, Shafiee et al., ISCA 2016) and NeuroSim's 22 nm preset."""

from __future__ import annotations

import dataclasses
import math

from rxjax import _checks

# ISAAC's SAR ADC energy per conversion by resolution (pJ, 32 nm, 1.2 GS/s),
# as the Accelergy / CiMLoop library carries the ISAAC component table
# (hwcomponents-library, library/isaac.py); 8 bits: Kull et al., ISSCC 2013.
ISAAC_ADC_PJ = ((4, 0.79), (5, 0.99), (6, 1.20), (7, 1.42), (8, 1.67),
                (9, 1.97), (10, 2.38))


def neurosim_adc_pj(bits: int) -> float:
  """NeuroSim's SAR ADC energy per conversion at 22 nm LP, in pJ.

  `SarADC.cpp` (DNN_NeuroSim_V1.4): power `(a b + c)` uW for `b + 1` cycles
  of 1 ns, a = 0.538, c = 4.375, without its column-current term: 42 fJ at
  5 bits, 78 fJ at 8 bits.
  """
  return (0.538 * bits + 4.375) * (bits + 1) * 1e-3


_DAC_SCALINGS = ("levels", "bits")
_ARRAY_MODELS = ("g_eff", "exact")


def _positive(name, value, what="a finite number > 0"):
  v = _checks.as_finite_float(name, value, what)
  if v <= 0:
    raise ValueError(f"`{name}` must be {what}, got {value!r}")


def _non_negative(name, value, what="a finite number >= 0"):
  v = _checks.as_finite_float(name, value, what)
  if v < 0:
    raise ValueError(f"`{name}` must be {what}, got {value!r}")


def _int_at_least(name, value, low, none_means=None):
  if value is None and none_means is not None:
    return
  if not (_checks.is_int(value) and value >= low):
    what = f"an int >= {low}"
    if none_means is not None:
      what = f"None ({none_means}) or {what}"
    raise ValueError(f"`{name}` must be {what}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class EnergySpec:
  """Technology parameters of the chip's energy, latency and area.

  Defaults: ISAAC's components (Shafiee et al., ISCA 2016, 32 nm), as
  carried by the MIT-licensed Accelergy / CiMLoop component library
  (`hwcomponents_library/library/isaac.py`); see `neurosim_22nm` for the
  second preset. Energies in pJ, times in s, areas in um^2.

  Attributes:
    adc_pj_by_bits: ADC energy per conversion by resolution, `((bits, pJ),
      ...)` with increasing bits. Default: ISAAC's SAR ADC table, 4 b 0.79
      ... 8 b 1.67 ... 10 b 2.38 pJ. Resolutions outside the table are
      extrapolated geometrically from its two nearest entries.
    unquantized_bits: resolution charged for a converter the chip keeps at
      full precision (`adc.bits` or `dac.input_bits` None), and the
      activation width then. Default 8 (ISAAC's ADC and activations).
    dac_pj_per_unit: energy of one 1-bit DAC row drive, pJ. Default 0.417
      (ISAAC: 4 mW for 8 x 128 1-bit DACs at 1.2 GHz).
    dac_scaling: how a `b`-bit DAC's conversion scales from the 1-bit drive:
      "levels" (`2**b - 1` unit elements switch at most, a unit-element
      DAC) or "bits" (`b` units). ISAAC uses 1-bit DACs only, where both
      give 0.417 pJ.
    shift_add_pj: one shift-and-add (also a digital accumulation), pJ.
      Default 0.021 (ISAAC's S+A unit).
    buffer_pj_per_access: one access of the on-chip buffer, pJ. Default
      20.45 (ISAAC's 64 KB eDRAM per 256-bit access).
    buffer_access_bits: bits per buffer access. Default 256 (ISAAC).
    bus_pj_per_bit: moving one bit between buffer and tiles, pJ. Default
      0.054 (ISAAC's eDRAM bus).
    activation_bits: bits of a buffered input or output value. None: the
      chip's `dac.input_bits` (`unquantized_bits` when full precision).
    adc_sample_rate_hz: conversions per second of one ADC. Default 1.2e9
      (ISAAC).
    read_pulse_s: how long the rows are driven per input cycle (the array
      term's pulse and the non-conversion part of a step), s. Default 1e-9
      (ISAAC / PRIME ReRAM read: ~20 fJ per low-resistance cell at 0.2 V).
    columns_per_adc: columns that share one ADC (converted one after the
      other). None: all columns of a crossbar share one (ISAAC: one ADC
      per 128-column crossbar).
    tiles_in_parallel: crossbars of a layer that read at once. None: all of
      them (every layer has its own crossbars).
    power_gated: whether the unmapped rows and columns of a partly used
      tile are gated (not converted). Default False, RxNN's chip: they
      still compute.
    cell_um2: area of one crossbar cell, um^2. Default 25 / 16384 (ISAAC:
      a 128 x 128 crossbar in 25 um^2).
    adc_um2: area of one ADC, um^2. Default 1200 (ISAAC's 8-bit ADC).
    dac_um2_per_unit: area of one 1-bit DAC, um^2, scaled as its energy.
      Default 0.166 (ISAAC).
    shift_add_um2: area of one shift-and-add unit (one per ADC), um^2.
      Default 15 (ISAAC: 4 units in 60 um^2).
    buffer_um2_per_kib: buffer area per KiB, um^2. Default 1296.875 (ISAAC:
      64 KB of eDRAM in 0.083 mm^2).
    array_model: how the array term finds the current of every row:
      "g_eff" (default: row i sources `v_i * sum_j G_eff[i, j]`, the
      current its own drive delivers to the outputs; exact with ideal
      wires or when all rows share one voltage, and otherwise off by the
      wire coupling between rows; docs/energy.md gives its size) or
      "exact" (the row-port admittance `Y` from M exact per-input solves
      per tile, `periphery.port_admittance`, so every read dissipates
      exactly `v^T Y v`; M solves per tile cost far more than the `G_eff`
      solve).

  Raises:
    ValueError: a field out of its range; the message names the field and
      the range.
  """

  adc_pj_by_bits: tuple = ISAAC_ADC_PJ
  unquantized_bits: int = 8
  dac_pj_per_unit: float = 0.417
  dac_scaling: str = "levels"
  shift_add_pj: float = 0.021
  buffer_pj_per_access: float = 20.45
  buffer_access_bits: int = 256
  bus_pj_per_bit: float = 0.054
  activation_bits: int | None = None
  adc_sample_rate_hz: float = 1.2e9
  read_pulse_s: float = 1e-9
  columns_per_adc: int | None = None
  tiles_in_parallel: int | None = None
  power_gated: bool = False
  cell_um2: float = 25 / 16384
  adc_um2: float = 1200.0
  dac_um2_per_unit: float = 0.166
  shift_add_um2: float = 15.0
  buffer_um2_per_kib: float = 0.083e6 / 64
  array_model: str = "g_eff"

  def __post_init__(self):
    table = self.adc_pj_by_bits
    what = ("a non-empty tuple of (bits, pJ) pairs with increasing int "
            "bits >= 1 and finite pJ > 0")
    ok = isinstance(table, (tuple, list)) and len(table) > 0
    if ok:
      try:
        bits = [b for b, _ in table]
        pjs = [float(e) for _, e in table]
      except (TypeError, ValueError):
        ok = False
    if ok:
      ok = (all(_checks.is_int(b) and b >= 1 for b in bits)
            and all(b1 < b2 for b1, b2 in zip(bits, bits[1:]))
            and all(math.isfinite(e) and e > 0 for e in pjs))
    if not ok:
      raise ValueError(f"`adc_pj_by_bits` must be {what}, got {table!r}")
    object.__setattr__(self, "adc_pj_by_bits",
                       tuple((int(b), float(e)) for b, e in table))
    _int_at_least("unquantized_bits", self.unquantized_bits, 1)
    _int_at_least("buffer_access_bits", self.buffer_access_bits, 1)
    _int_at_least("activation_bits", self.activation_bits, 1,
                  "the chip's input bits")
    _int_at_least("columns_per_adc", self.columns_per_adc, 1,
                  "all columns of a crossbar")
    _int_at_least("tiles_in_parallel", self.tiles_in_parallel, 1,
                  "all crossbars of a layer")
    for name in ("dac_pj_per_unit", "shift_add_pj", "buffer_pj_per_access",
                 "bus_pj_per_bit", "cell_um2", "adc_um2", "dac_um2_per_unit",
                 "shift_add_um2", "buffer_um2_per_kib"):
      _non_negative(name, getattr(self, name))
    _positive("adc_sample_rate_hz", self.adc_sample_rate_hz,
              "a finite rate > 0 Hz")
    _positive("read_pulse_s", self.read_pulse_s, "a finite time > 0 s")
    if not isinstance(self.power_gated, bool):
      raise ValueError(f"`power_gated` must be True or False, got "
                       f"{self.power_gated!r}")
    _checks.check_choice("dac_scaling", self.dac_scaling, _DAC_SCALINGS)
    _checks.check_choice("array_model", self.array_model, _ARRAY_MODELS)

  @classmethod
  def isaac(cls, **overrides) -> "EnergySpec":
    """ISAAC's 32 nm components (the default)."""
    return cls(**overrides)

  @classmethod
  def neurosim_22nm(cls, **overrides) -> "EnergySpec":
    """A NeuroSim-style 22 nm LP preset (DNN_NeuroSim_V1.4 defaults).

    Why a second preset: the sources disagree by more than an order of
    magnitude on the ADC, the term that dominates. NeuroSim's SAR model
    (`neurosim_adc_pj`) gives 78 fJ per 8-bit conversion at 22 nm against
    ISAAC's 1.67 pJ at 32 nm (and MNSIM's accounting gives ~15.6 pJ for
    ISAAC's own ADC). NeuroSim also shares one ADC among 8 columns, runs it
    at 1 GHz for `b + 1` cycles (1e9 / 9 conversions per second at 8 bits),
    reads with 10 ns pulses, and models no DAC (inputs go bit-serially
    through row switches): the DAC energy is 0. The other terms keep
    ISAAC's values, which NeuroSim does not replace one for one.
    """
    fields = dict(
        adc_pj_by_bits=tuple((b, neurosim_adc_pj(b)) for b in range(1, 13)),
        dac_pj_per_unit=0.0, adc_sample_rate_hz=1e9 / 9, read_pulse_s=10e-9,
        columns_per_adc=8)
    fields.update(overrides)
    return cls(**fields)

  def replace(self, **changes) -> "EnergySpec":
    return dataclasses.replace(self, **changes)

  def adc_pj(self, bits: int | None) -> float:
    """Energy of one conversion at `bits` (None: `unquantized_bits`), pJ."""
    bits = self.unquantized_bits if bits is None else bits
    table = dict(self.adc_pj_by_bits)
    if bits in table:
      return table[bits]
    keys = sorted(table)
    if len(keys) == 1:
      return table[keys[0]]
    lo, hi = (keys[0], keys[1]) if bits < keys[0] else (keys[-2], keys[-1])
    if keys[0] < bits < keys[-1]:  # Between entries: geometric.
      lo = max(k for k in keys if k < bits)
      hi = min(k for k in keys if k > bits)
    ratio = (table[hi] / table[lo]) ** (1 / (hi - lo))
    return table[lo] * ratio ** (bits - lo)

  def dac_units(self, bits: int) -> int:
    """1-bit drive units of one `bits`-bit DAC conversion."""
    return 2**bits - 1 if self.dac_scaling == "levels" else bits
