"""Energy, latency and area of the chip that runs a network (RxNN VIII-B).

RxNN evaluates each crossbar design's accuracy beside its system energy per
image (figs. 12b and 13). This module gives the second number for the same
chip that `rxjax.nn` simulates, counted from the mapped network itself:

* `EnergySpec`: the technology parameters (per-operation energies, timing,
  areas), frozen and validated, with a documented default and source for
  each (ISAAC's 32 nm components, Shafiee et al., ISCA 2016, as the MIT
  licensed Accelergy / CiMLoop component library carries them), and a
  second preset, `EnergySpec.neurosim_22nm()`, where the sources disagree.
* `layer_counts`: the closed-form operation counts of one crossbar layer
  per image (tile reads, DAC and ADC conversions, shift-and-adds, digital
  accumulations, buffer traffic).
* `count`: every crossbar layer of a Linen model, from shapes only (no
  data, no programming: a `jax.eval_shape` pass), with a nominal array term.
* `estimate`: the same counts plus the array's own read energy from the
  physics of one programmed chip instance (`rxjax.nn.program`): the energy
  its devices and wires dissipate for the actual input voltages of every
  read, `t_read * v^T Y v` per crossbar read with `Y` the tile's row-port
  admittance (see `EnergySpec.array_model`).

Counting rules (DESIGN.md section 7), per image and per crossbar layer of
fan-in K, fan-out F (per group), G groups and P output positions (1 for a
dense layer on one vector, every output position of a convolution), on
M x N tiles, `Tr x Tc = ceil(K / M) x ceil(F / N')` tiles per matrix
(`N' = N`, or `N - 1` with the offset scheme's reference column), S weight
slices, `Pol` crossbars per signed weight (2 for differential pairs, else
1), Q input passes (2 for signed inputs, else 1) and C DAC cycles:

* tile reads: `P Q C G Tr Tc S Pol`, one per crossbar and input cycle;
* DAC conversions: M per tile read (every row of every driven crossbar has
  its DAC, as in ISAAC), or only the K mapped rows when power-gated;
* ADC conversions: N per read of a crossbar (digital pair subtraction) or
  of a pair (analog subtraction, one bipolar ADC per pair), i.e.
  `P Q C G Tr Tc S Pol_adc N`: the unmapped columns of an activated tile
  are digitized too (RxNN's redundant computation) unless power-gated,
  which digitizes only the F mapped columns (plus each tile's reference
  column with the offset scheme);
* shift-and-adds: one per ADC conversion (each reading is shifted by its
  cycle and slice and added, with its sign, into its output);
* accumulations: `P G F (Q Tr - 1)`, the digital sum of the `Q Tr` partial
  sums (passes, fan-in tiles) of each output, plus `P G F Q Tr` reference
  subtractions with the offset scheme;
* buffer reads: the `P G K` input values of every position (each patch of a
  convolution is read, no reuse between positions), buffer writes: the
  `P G F` outputs, at `EnergySpec.activation_bits` each.

Latency per image: the layers run one after another; in a layer every
position, pass and cycle is one step of `read_pulse_s` plus the conversion
of the columns that share one ADC (`columns_per_adc / adc_sample_rate_hz`),
with `tiles_in_parallel` crossbars at once. Area: every layer's crossbars
(the whole network is mapped, weight-stationary), their ADCs, DACs and
shift-and-add units, and a buffer holding the largest layer's input and
output feature maps.

Every number is per image: totals over an example batch divided by its size.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rxjax import _checks
from rxjax import crossbar
from rxjax import mapping as mapping_lib
from rxjax import nn as rnn
from rxjax import periphery

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


# ---------------------------------------------------------------------------
# Counts of one layer.


class Geometry(NamedTuple):
  """A crossbar layer's matrices, per image.

  fan_in: K, rows of each group's matrix. fan_out: F, its columns.
  groups: G, matrices (convolution feature groups). positions: P, output
  positions per image. in_size, out_size: elements of the layer's input and
  output feature maps per image (for the buffer's size).
  """

  fan_in: int
  fan_out: int
  groups: int = 1
  positions: int = 1
  in_size: int = 0
  out_size: int = 0


def _chip_numbers(spec: crossbar.ChipSpec):
  m, n = spec.mapping.tile_rows, spec.mapping.tile_cols
  s = mapping_lib.n_slices(spec.mapping, spec.device)
  pol = 2 if spec.mapping.signed == "differential" else 1
  pol_adc = 1 if spec.pair_subtraction == "analog" else pol
  q = 1 if spec.inputs == "non_negative" else 2
  c = periphery.n_cycles(spec.dac)
  return m, n, s, pol, pol_adc, q, c


def _activation_bits(spec: crossbar.ChipSpec, espec: EnergySpec) -> int:
  if espec.activation_bits is not None:
    return espec.activation_bits
  return spec.dac.input_bits or espec.unquantized_bits


def _dac_bits(spec: crossbar.ChipSpec, espec: EnergySpec) -> int:
  d = spec.dac
  if d.input_bits is None:
    return espec.unquantized_bits
  return d.input_bits if d.dac_bits is None else min(d.dac_bits, d.input_bits)


def layer_counts(geometry: Geometry, spec: crossbar.ChipSpec,
                 espec: EnergySpec | None = None) -> dict[str, float]:
  """Operation counts of one crossbar layer per image (module docstring).

  Returns:
    {"tile_reads", "dac_conversions", "adc_conversions", "shift_adds",
    "accumulations", "buffer_read_bits", "buffer_write_bits", "crossbars",
    "adcs", "steps"}; "crossbars" and "adcs" are hardware, not per image;
    "steps" the sequential read steps per image.
  """
  espec = EnergySpec() if espec is None else espec
  k, f, g, p = (geometry.fan_in, geometry.fan_out, geometry.groups,
                geometry.positions)
  m, n, s, pol, pol_adc, q, c = _chip_numbers(spec)
  tr, tc = mapping_lib.tile_grid(k, f, spec.mapping)
  offset = spec.mapping.signed == "offset"
  reads = p * q * c  # Input vectors applied to each crossbar per image.
  crossbars = g * tr * tc * s * pol
  tile_reads = reads * crossbars
  if espec.power_gated:
    dac = reads * g * tc * s * pol * k
    adc = reads * g * tr * s * pol_adc * (f + (tc if offset else 0))
  else:
    dac = tile_reads * m
    adc = reads * g * tr * tc * s * pol_adc * n
  acc = p * g * f * (q * tr - 1) + (p * g * f * q * tr if offset else 0)
  bits = _activation_bits(spec, espec)
  per_adc = n if espec.columns_per_adc is None else espec.columns_per_adc
  adcs = g * tr * tc * s * pol_adc * -(-n // per_adc)
  waves = 1 if espec.tiles_in_parallel is None else -(
      -crossbars // espec.tiles_in_parallel)
  return {"tile_reads": float(tile_reads), "dac_conversions": float(dac),
          "adc_conversions": float(adc), "shift_adds": float(adc),
          "accumulations": float(acc),
          "buffer_read_bits": float(p * g * k * bits),
          "buffer_write_bits": float(p * g * f * bits),
          "crossbars": float(crossbars), "adcs": float(adcs),
          "steps": float(reads * waves)}


def _op_energy(counts, spec: crossbar.ChipSpec, espec: EnergySpec) -> dict:
  """Per-operation energies (J) of a layer's counts; no array term."""
  pj = 1e-12
  def buffer(bits):
    return (bits / espec.buffer_access_bits * espec.buffer_pj_per_access
            + bits * espec.bus_pj_per_bit) * pj
  dac_pj = espec.dac_pj_per_unit * espec.dac_units(_dac_bits(spec, espec))
  return {
      "adc": counts["adc_conversions"] * espec.adc_pj(spec.adc.bits) * pj,
      "dac": counts["dac_conversions"] * dac_pj * pj,
      "digital": (counts["shift_adds"] + counts["accumulations"])
                 * espec.shift_add_pj * pj,
      "buffer_read": buffer(counts["buffer_read_bits"]),
      "buffer_write": buffer(counts["buffer_write_bits"]),
  }


def _latency(counts, spec: crossbar.ChipSpec, espec: EnergySpec) -> float:
  n = spec.mapping.tile_cols
  per_adc = n if espec.columns_per_adc is None else min(
      espec.columns_per_adc, n)
  step = espec.read_pulse_s + per_adc / espec.adc_sample_rate_hz
  return counts["steps"] * step


def _area_um2(counts, spec: crossbar.ChipSpec, espec: EnergySpec) -> float:
  m, n = spec.mapping.tile_rows, spec.mapping.tile_cols
  dac = espec.dac_um2_per_unit * espec.dac_units(_dac_bits(spec, espec))
  return (counts["crossbars"] * (m * n * espec.cell_um2 + m * dac)
          + counts["adcs"] * (espec.adc_um2 + espec.shift_add_um2))


def nominal_array_j(counts, spec: crossbar.ChipSpec,
                    espec: EnergySpec) -> float:
  """Array energy without data or programmed chip (`count`): every cell at
  the mid conductance `(g_min + g_max) / 2`, ideal wires, every row driven
  at half its full-scale voltage squared on average (a 1-bit digit is 1
  half of the time)."""
  d = spec.device
  m, n = spec.mapping.tile_rows, spec.mapping.tile_cols
  g_mid = (d.g_min + d.g_max) / 2
  return (counts["tile_reads"] * m * n * g_mid * 0.5 * spec.dac.v_read**2
          * espec.read_pulse_s)


# ---------------------------------------------------------------------------
# The report.


_ENERGY_KEYS = ("adc", "dac", "array", "digital", "buffer_read",
                "buffer_write", "buffer", "total")
_COUNT_KEYS = ("tile_reads", "dac_conversions", "adc_conversions",
               "shift_adds", "accumulations", "buffer_read_bits",
               "buffer_write_bits")


@dataclasses.dataclass(frozen=True)
class EnergyReport:
  """Energy, latency and area of a network on one chip, per image.

  Attributes:
    counts: operations per image (`layer_counts` keys, summed over layers;
      "crossbars" and "adcs" are the chip's hardware).
    energy_j: joules per image: "adc", "dac", "array", "digital"
      (shift-and-adds and accumulations), "buffer_read", "buffer_write",
      "buffer" (their sum) and "total" (adc + dac + array + digital +
      buffer).
    latency_s: seconds per image, the layers one after another.
    area_m2: chip area (crossbars, converters, shift-and-add units, buffer).
    per_layer: {layer name: {"counts", "energy_j", "latency_s", "area_m2"}}
      (the buffer's area is in the total only).
    array_model: "g_eff", "exact" (`EnergySpec.array_model`) or "nominal"
      (`count`: no programmed chip).
    images: the example batch's size the numbers are divided by.
  """

  counts: dict
  energy_j: dict
  latency_s: float
  area_m2: float
  per_layer: dict
  array_model: str
  images: int

  def summary(self) -> dict:
    """The JSON block that `train.py` / `eval.py` write per chip."""
    return {"j_per_image": self.energy_j["total"],
            "breakdown_j_per_image": {k: self.energy_j[k] for k in
                                      _ENERGY_KEYS[:-1]},
            "s_per_image": self.latency_s, "area_mm2": self.area_m2 * 1e6}

  def table(self) -> str:
    """A Markdown table: one row per layer and the total (energy in nJ)."""
    head = ("| layer | tile reads | DAC conv. | ADC conv. | shift-adds | "
            "ADC nJ | DAC nJ | array nJ | digital nJ | buffer nJ | total nJ "
            "| latency us | area mm^2 |")
    lines = [head, "|" + "---|" * 13]
    rows = list(self.per_layer.items()) + [("**total**", dict(
        counts=self.counts, energy_j=self.energy_j,
        latency_s=self.latency_s, area_m2=self.area_m2))]
    for name, r in rows:
      c, e = r["counts"], r["energy_j"]
      lines.append(
          f"| {name} | {c['tile_reads']:.4g} | {c['dac_conversions']:.4g} | "
          f"{c['adc_conversions']:.4g} | {c['shift_adds']:.4g} | "
          + " | ".join(f"{e[k] * 1e9:.4g}" for k in
                       ("adc", "dac", "array", "digital", "buffer", "total"))
          + f" | {r['latency_s'] * 1e6:.4g} | {r['area_m2'] * 1e6:.4g} |")
    return "\n".join(lines)


def _layer_report(geometry, spec, espec, array_j):
  counts = layer_counts(geometry, spec, espec)
  e = _op_energy(counts, spec, espec)
  e["array"] = float(array_j)
  e["buffer"] = e["buffer_read"] + e["buffer_write"]
  e["total"] = e["adc"] + e["dac"] + e["array"] + e["digital"] + e["buffer"]
  return {"counts": counts, "energy_j": {k: e[k] for k in _ENERGY_KEYS},
          "latency_s": _latency(counts, spec, espec),
          "area_m2": _area_um2(counts, spec, espec) * 1e-12}


def _report(layers, espec: EnergySpec, array_model: str,
            images: int) -> EnergyReport:
  """`layers`: [(name, geometry, spec, array_j)]."""
  per_layer = {}
  for name, geometry, spec, array_j in layers:
    base, k = name, 1
    while name in per_layer:  # A module called twice: name the calls.
      k += 1
      name = f"{base}#{k}"
    per_layer[name] = _layer_report(geometry, spec, espec, array_j)
  total = lambda key, sub: sum(r[key][sub] for r in per_layer.values())
  count_keys = _COUNT_KEYS + ("crossbars", "adcs", "steps")
  counts = {k: total("counts", k) for k in count_keys}
  energy = {k: total("energy_j", k) for k in _ENERGY_KEYS}
  buffer_bits = max((max(gm.in_size, 0) + max(gm.out_size, 0))
                    * _activation_bits(spec, espec)
                    for _, gm, spec, _ in layers) if layers else 0
  buffer_m2 = buffer_bits / 8 / 1024 * espec.buffer_um2_per_kib * 1e-12
  return EnergyReport(
      counts=counts, energy_j=energy,
      latency_s=sum(r["latency_s"] for r in per_layer.values()),
      area_m2=sum(r["area_m2"] for r in per_layer.values()) + buffer_m2,
      per_layer=per_layer, array_model=array_model, images=images)


# ---------------------------------------------------------------------------
# The crossbar layers of a Linen model (an interceptor of our own).


class _Call(NamedTuple):
  path: tuple
  module: Any  # The nn.Dense / nn.Conv module (bound).
  spec: crossbar.ChipSpec
  x: Any  # The layer's input.
  geometry: Geometry


def _layer_spec(module, spec):
  if isinstance(module, (rnn.CrossbarDense, rnn.CrossbarConv)):
    return module.spec
  return spec


def _recorder(calls: list, spec, images: int):
  """An interceptor recording every crossbar layer's call (shapes, input),
  the layers `rxjax.nn.on_crossbars` maps (nn.Dense, nn.Conv)."""

  def intercept(next_fun, args, kwargs, context):
    module = context.module
    y = next_fun(*args, **kwargs)
    if (context.method_name != "__call__"
        or not isinstance(module, (nn.Dense, nn.Conv))
        or not module.has_variable("params", "kernel")):
      return y
    layer_spec = _layer_spec(module, spec)
    if layer_spec is None:
      return y
    x = args[0]
    kernel = module.get_variable("params", "kernel")
    if isinstance(module, nn.Dense):
      k, f, g = kernel.shape[0], kernel.shape[1], 1
    else:
      g = module.feature_group_count
      k, f = math.prod(kernel.shape[:-1]), kernel.shape[-1] // g
    positions = math.prod(y.shape) // (kernel.shape[-1] * images)
    geometry = Geometry(int(k), int(f), int(g), int(positions),
                        int(math.prod(jnp.shape(x)) // images),
                        int(math.prod(y.shape) // images))
    calls.append(_Call(tuple(module.path), module, layer_spec, x, geometry))
    return y

  return intercept


def _images(x) -> int:
  shape = jnp.shape(x)
  if len(shape) < 1 or shape[0] < 1:
    raise ValueError(f"`x` must be an example batch [B, ...] with B >= 1, "
                     f"got shape {shape}")
  return int(shape[0])


def _check_specs(spec, espec):
  if not isinstance(spec, crossbar.ChipSpec):
    raise TypeError(f"`spec` must be a rxjax.crossbar.ChipSpec, got {spec!r}")
  espec = EnergySpec() if espec is None else espec
  if not isinstance(espec, EnergySpec):
    raise TypeError(f"`energy_spec` must be an EnergySpec or None, got "
                    f"{espec!r}")
  return espec


def layers(model: nn.Module, variables, x, spec: crossbar.ChipSpec,
           **apply_kwargs) -> list[tuple[str, Geometry]]:
  """The crossbar layers of `model` on inputs shaped like `x`, in call
  order, from shapes only (`jax.eval_shape`: no compute).

  `variables` and `x` may be arrays or `jax.ShapeDtypeStruct`s.
  """
  images = _images(x)
  calls = []

  def run(v, x):
    with nn.intercept_methods(_recorder(calls, spec, images)):
      return model.apply(v, x, **apply_kwargs)

  jax.eval_shape(run, variables, x)
  return [("/".join(c.path), c.geometry, c.spec) for c in calls]


def count(model: nn.Module, variables, x, spec: crossbar.ChipSpec, *,
          energy_spec: EnergySpec | None = None,
          **apply_kwargs) -> EnergyReport:
  """Counts, energy, latency and area from shapes alone, no chip.

  For networks too large to program here (ImageNet-size): `variables` may
  be `jax.eval_shape(model.init, ...)`'s shapes and `x` a
  `jax.ShapeDtypeStruct`. The array term is `nominal_array_j`.
  """
  espec = _check_specs(spec, energy_spec)
  found = layers(model, variables, x, spec, **apply_kwargs)
  rows = []
  for name, geometry, layer_spec in found:
    c = layer_counts(geometry, layer_spec, espec)
    rows.append((name, geometry, layer_spec,
                 nominal_array_j(c, layer_spec, espec)))
  return _report(rows, espec, "nominal", _images(x))


# ---------------------------------------------------------------------------
# The array term from the physics.


def _input_padding(module: nn.Conv, x):
  """Flax's input paddings ('CIRCULAR', 'REFLECT', 'CAUSAL') applied to x;
  returns (x, the padding for the patches)."""
  pad = module.padding
  k = module.kernel_size
  k = (k,) if isinstance(k, int) else tuple(k)
  nd = len(k)
  if not isinstance(pad, str) or pad.upper() in ("SAME", "VALID",
                                                 "SAME_LOWER"):
    if isinstance(pad, str):
      return x, pad.upper()
    return x, tuple(map(tuple, nn.linear.canonicalize_padding(pad, nd)))
  dil = module.kernel_dilation
  dil = (1,) * nd if dil is None else ((dil,) * nd if isinstance(dil, int)
                                       else tuple(dil))
  if pad == "CAUSAL":
    pads = [(dil[0] * (k[0] - 1), 0)]
  else:
    window = [(kk - 1) * d + 1 for kk, d in zip(k, dil)]
    pads = [((w - 1) // 2, w // 2) for w in window]
  mode = {"CIRCULAR": "wrap", "REFLECT": "reflect", "CAUSAL": "constant"}
  return jnp.pad(x, [(0, 0)] + pads + [(0, 0)], mode=mode[pad]), "VALID"


def _tuple(v, nd):
  if v is None:
    return (1,) * nd
  return (v,) * nd if isinstance(v, int) else tuple(v)


def _rows_of(call: _Call):
  """The layer's crossbar input vectors `[G, R, K]` (R: every read's row
  vector, images x positions), in the rows' order (`nn.kernel_to_matrix`)."""
  x = jnp.asarray(call.x)
  g = call.geometry.groups
  if isinstance(call.module, nn.Dense):
    return x.reshape(1, -1, x.shape[-1])
  module = call.module
  k = module.kernel_size
  k = (k,) if isinstance(k, int) else tuple(k)
  nd = len(k)
  x = x.reshape((-1,) + x.shape[x.ndim - nd - 1:])
  x, padding = _input_padding(module, x)
  spatial = {1: "W", 2: "HW", 3: "DHW"}[nd]
  dims = ("N" + spatial + "C", spatial + "IO", "N" + spatial + "C")
  p = jax.lax.conv_general_dilated_patches(
      x, k, _tuple(module.strides, nd), padding,
      lhs_dilation=_tuple(module.input_dilation, nd),
      rhs_dilation=_tuple(module.kernel_dilation, nd),
      dimension_numbers=dims)
  p = p.reshape(-1, g, p.shape[-1] // g)
  return jnp.moveaxis(p, 1, 0)


def _moment(rows, x_scale, spec: crossbar.ChipSpec, exact: bool) -> np.ndarray:
  """Sum over every read of the DAC digits' `u^2` (`[G, Q, C, K]`) or, when
  exact, of `u u^T` (`[G, Q, C, K, K]`), float64; `u` in [0, 1] is volts /
  v_read.

  The digits are the chip's: its input scale `[G]`, passes and the
  streaming of `periphery.stream` (`q = round(clip(x01) L_in)`, digit c =
  `(q >> c dac_bits) & (2**dac_bits - 1)` over its full scale). In NumPy,
  one cycle at a time: it runs once per chip, and eager jax.numpy would
  compile every operation for every layer's shape.

  Args:
    rows: `[G, R, K]` the layer's input vectors (every read).
    x_scale: `[G]` input scales.
  """
  x01 = rows / np.asarray(x_scale, rows.dtype).reshape(-1, 1, 1)
  passes = [np.maximum(x01, 0)]
  if spec.inputs != "non_negative":
    passes.append(np.maximum(-x01, 0))
  x01 = np.clip(np.stack(passes, axis=1), 0, 1)  # [G, Q, R, K]
  d = spec.dac

  def reduce(u, scale):  # Sum over reads (axis 2), then / scale^2.
    if exact:
      out = np.einsum("gqrk,gqrl->gqkl", u, u, dtype=np.float64)
    else:
      out = np.einsum("gqrk,gqrk->gqk", u, u, dtype=np.float64)
    return out / scale**2

  if d.input_bits is None:
    return reduce(x01, 1.0)[:, :, None]
  levels = 2**d.input_bits - 1
  q = np.round(x01 * levels)  # Half to even, as jnp.round.
  if d.dac_bits is None:
    return reduce(q, levels)[:, :, None]
  q = q.astype(np.int32 if d.input_bits < 31 else np.int64)
  mask = 2**d.dac_bits - 1
  dtype = np.float32 if mask < 2**12 else np.float64  # Exact products.
  return np.stack([
      reduce(((q >> (c * d.dac_bits)) & mask).astype(dtype), mask)
      for c in range(periphery.n_cycles(d))], axis=2)


def _chip_arrays(chips, path):
  """(g, g_eff, x_scale) of the layer at `path` in a "chips" collection:
  `[G, S, P, Tr, Tc, M, N]` conductances and the `[G]` input scales."""
  node = chips
  for name in path:
    node = node[name]
  chip = node["chip"]
  return chip.g, chip.g_eff, chip.x_scale


_INPUTS = ("chip", "digital")
_OWN = object()  # Marks a layer that runs on the spec of the call.


def _rows_fn(*key):
  """`_build_rows_fn`, compiled once per setting when the model is hashable
  (a module holding a list, as `nn.Sequential`, is not)."""
  try:
    hash(key)
  except TypeError:
    return _build_rows_fn(*key)
  return _cached_rows_fn(*key)


def _build_rows_fn(model, spec, images, kwargs):
  """`(variables, chips, x) -> [per crossbar layer: its input vectors [G, R,
  K]]`: through the chip `spec`, or (spec None) the floating-point forward
  pass, which does not depend on the chip (one compile serves every chip of
  a run)."""
  apply_kwargs = dict(kwargs)

  def run(v, c, x):
    calls = []
    with nn.intercept_methods(_recorder(calls, _OWN if spec is None else spec,
                                        images)):
      if spec is None:
        model.apply(v, x, **apply_kwargs)
      else:
        rnn.apply(model, v, c, x, spec, **apply_kwargs)
    return [_rows_of(call) for call in calls]

  return jax.jit(run)


_cached_rows_fn = functools.lru_cache(maxsize=8)(_build_rows_fn)


@functools.lru_cache(maxsize=8)
def _port_admittance_fn(wires):
  return jax.jit(lambda g: periphery.port_admittance(g, wires))


def _array_j(moment, g, g_eff, spec: crossbar.ChipSpec, espec: EnergySpec):
  """The layer's array energy over the batch's reads (J), from its input
  moments and its chip's conductances (NumPy, float64)."""
  gsz, s, p, tr, tc, m, n = g_eff.shape
  moment = np.asarray(moment, np.float64)
  k = moment.shape[3]
  if espec.array_model == "exact":
    y = np.asarray(_port_admittance_fn(spec.wires)(g), np.float64)
    y = y.sum((1, 2, 4))  # [G, Tr, M, M]: every crossbar of a tile row.
    pad = tr * m - k
    moment = np.pad(moment, [(0, 0)] * 3 + [(0, pad), (0, pad)])
    moment = moment.sum((1, 2)).reshape(gsz, tr, m, tr, m)
    per_volt2 = np.einsum("gtitj,gtij->", moment, y)
  else:
    rows = np.asarray(g_eff, np.float64).sum((1, 2, 4, 6))  # [G, Tr, M]
    rows = rows.reshape(gsz, tr * m)[:, :k]
    per_volt2 = np.einsum("gqck,gk->", moment, rows)
  return per_volt2 * spec.dac.v_read**2 * espec.read_pulse_s


def estimate(model: nn.Module, variables, x, spec: crossbar.ChipSpec, *, key,
             energy_spec: EnergySpec | None = None, chips=None,
             inputs: str = "chip", **apply_kwargs) -> EnergyReport:
  """Energy, latency and area per image of `model` on the chip `spec`.

  Programs one chip instance (`rxjax.nn.program(model, variables, x, spec,
  key=key)`, calibrated on `x`) unless `chips` are given, runs `x` through
  the network to get every crossbar layer's inputs, and counts (module
  docstring). The array term is the energy the programmed tiles dissipate
  for those inputs: per crossbar read, `read_pulse_s * v_read^2 * u^T Y u`
  for the DAC digits `u` of the read (the chip's input scale, passes and
  cycles; `EnergySpec.array_model` says how `Y` is found).

  Args:
    model: a Linen model (its nn.Dense / nn.Conv layers go on crossbars).
    variables: its variables, without chips.
    x: an example batch `[B, ...]`: its shape gives the counts, its values
      the array term; every number is per image (divided by B).
    spec: the chip.
    key: PRNG key of the chip instance (used only when `chips` is None).
    energy_spec: technology parameters; None is `EnergySpec()` (ISAAC).
    chips: an already programmed "chips" collection of this model and spec
      (`rxjax.nn.program`), to skip programming.
    inputs: which layer inputs drive the array term: "chip" (default: `x`
      run through the programmed chip, `rxjax.nn.apply`) or "digital" (the
      floating-point forward pass of `x`, cheaper to compile; the two differ
      by the chip's own error in each layer's input).
    **apply_kwargs: passed to `model.apply` (e.g. `train=False`).

  Returns:
    The `EnergyReport`.
  """
  espec = _check_specs(spec, energy_spec)
  _checks.check_choice("inputs", inputs, _INPUTS)
  images = _images(x)
  variables = {k: v for k, v in variables.items() if k != rnn.COLLECTION}
  if chips is None:
    chips = jax.jit(lambda v, x, k: rnn.program(
        model, v, x, spec, key=k, **apply_kwargs))(variables, x, key)
  kwargs = tuple(sorted(apply_kwargs.items()))
  found = layers(model, variables, x, spec, **apply_kwargs)
  paths = [tuple(name.split("/")) if name else () for name, _, _ in found]
  arrays = [_chip_arrays(chips, path) for path in paths]
  fn = _rows_fn(model, spec if inputs == "chip" else None, images, kwargs)
  layer_rows = fn(variables, chips if inputs == "chip" else None, x)
  exact = espec.array_model == "exact"
  moments = [_moment(np.asarray(r), a[2], layer_spec, exact)
             for r, a, (_, _, layer_spec) in zip(layer_rows, arrays, found)]
  rows = []
  for (name, geometry, layer_spec), moment, (g, g_eff, _) in zip(
      found, moments, arrays):
    rows.append((name, geometry, layer_spec,
                 _array_j(moment, g, g_eff, layer_spec, espec) / images))
  return _report(rows, espec, espec.array_model, images)
