"""Counts of one crossbar layer per image, and their energy, latency and
area (the counting rules of `rxjax.energy`'s docstring, DESIGN.md section
7)."""

from __future__ import annotations

from typing import NamedTuple

from rxjax import crossbar
from rxjax import mapping as mapping_lib
from rxjax import periphery
from rxjax.energy.spec import EnergySpec



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
  per = spec.periphery
  pol_adc = per.pairs.adc_polarities(pol)
  q = per.inputs.n_passes
  c = periphery.n_cycles(spec.dac)
  return m, n, s, pol, pol_adc, q, c


def activation_bits(spec: crossbar.ChipSpec, espec: EnergySpec) -> int:
  """Bits of one buffered activation (`EnergySpec.activation_bits`, else
  the DAC's input bits, else `unquantized_bits`)."""
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
  """Operation counts of one crossbar layer per image (the counting rules
  of `rxjax.energy`'s docstring).

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
  bits = activation_bits(spec, espec)
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


def op_energy(counts, spec: crossbar.ChipSpec, espec: EnergySpec) -> dict:
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


def latency_s(counts, spec: crossbar.ChipSpec, espec: EnergySpec) -> float:
  """Seconds per image of a layer's counts: its sequential steps, each a
  read pulse and the conversion of the columns that share one ADC."""
  n = spec.mapping.tile_cols
  per_adc = n if espec.columns_per_adc is None else min(
      espec.columns_per_adc, n)
  step = espec.read_pulse_s + per_adc / espec.adc_sample_rate_hz
  return counts["steps"] * step


def area_um2(counts, spec: crossbar.ChipSpec, espec: EnergySpec) -> float:
  """Area of a layer's crossbars, DACs, ADCs and shift-and-add units."""
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
