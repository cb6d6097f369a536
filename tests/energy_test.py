"""rxjax.energy: counts by hand, linearity, the array term against the
circuit's node voltages, validation.

Every expected count below is written out from the closed-form rules of
DESIGN.md section 7 for the case at hand (tiles, slices, cycles, passes,
crossbars per pair), never taken from the code under test.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rxjax
from rxjax import circuit, crossbar, device, mapping, periphery
from rxjax import energy

IDEAL_WIRES = circuit.Wires.ideal()


def _spec(m=16, n=16, weight_bits=8, device_bits=2, input_bits=8,
          dac_bits=1, adc_bits=8, inputs="non_negative", signed="differential",
          pairs="digital", wires=IDEAL_WIRES, sigma=0.0):
  return crossbar.ChipSpec(
      mapping=mapping.MappingSpec(tile_rows=m, tile_cols=n,
                                  weight_bits=weight_bits, signed=signed),
      device=device.DeviceSpec(device_bits=device_bits, sigma=sigma),
      wires=wires,
      dac=periphery.DACSpec(input_bits=input_bits, dac_bits=dac_bits),
      adc=periphery.ADCSpec(bits=adc_bits), inputs=inputs,
      pair_subtraction=pairs)


def _count(model, x_shape, spec, espec=None):
  x = jax.ShapeDtypeStruct(x_shape, jnp.float32)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                                jnp.zeros(x_shape)))
  return energy.count(model, variables, x, spec, energy_spec=espec)


def _only(report):
  (layer,) = report.per_layer.values()
  return layer["counts"]


def test_one_dense_on_one_tile():
  # 10 -> 6 on one 16 x 16 tile: 8-bit weights in 2-bit cells (4 slices),
  # differential pairs (2 crossbars), 8 input bits through a 1-bit DAC (8
  # cycles), one pass.
  report = _count(nn.Dense(6), (3, 10), _spec())
  c = _only(report)
  slices, crossbars_per_weight, cycles = 4, 2, 8
  tile_reads = cycles * slices * crossbars_per_weight  # One tile.
  assert c["tile_reads"] == tile_reads == 64
  assert c["dac_conversions"] == tile_reads * 16  # Every row of the tile.
  assert c["adc_conversions"] == tile_reads * 16  # Every column.
  assert c["shift_adds"] == c["adc_conversions"]
  assert c["accumulations"] == 0  # One fan-in tile, one pass.
  assert c["buffer_read_bits"] == 10 * 8
  assert c["buffer_write_bits"] == 6 * 8
  assert report.counts["tile_reads"] == 64  # Per image of the 3.


def test_a_layer_on_2x3_tiles_with_remainders():
  # 40 -> 70 on 32 x 32 tiles: ceil(40/32) = 2 tile rows, ceil(70/32) = 3
  # tile columns; full-precision weights and inputs (1 slice, 1 cycle),
  # signed inputs (2 passes), differential pairs.
  spec = _spec(m=32, n=32, weight_bits=None, device_bits=None,
               input_bits=None, dac_bits=None, adc_bits=None,
               inputs="signed")
  c = _only(_count(nn.Dense(70), (1, 40), spec))
  passes, tiles, pol = 2, 2 * 3, 2
  assert c["tile_reads"] == passes * tiles * pol == 24
  assert c["dac_conversions"] == 24 * 32
  assert c["adc_conversions"] == 24 * 32
  # Each of the 70 outputs sums 2 passes x 2 fan-in tiles: 3 adds.
  assert c["accumulations"] == 70 * (2 * 2 - 1)
  gated = _only(_count(nn.Dense(70), (1, 40), spec,
                       energy.EnergySpec(power_gated=True)))
  # Only mapped rows (40 per tile column) and columns (70 per tile row).
  assert gated["dac_conversions"] == passes * 3 * pol * 40
  assert gated["adc_conversions"] == passes * 2 * pol * 70
  assert gated["tile_reads"] == c["tile_reads"]


@pytest.mark.parametrize("weight_bits,device_bits,input_bits,dac_bits,"
                         "slices,cycles", [
                             (6, 2, 6, 2, 3, 3),
                             (8, 2, 6, 4, 4, 2),  # ceil(6 / 4) cycles.
                             (8, None, 8, None, 1, 1),  # Analog cells, one
                             # multi-bit DAC cycle.
                             (7, 3, 5, 1, 3, 5),  # ceil(7 / 3) slices.
                         ])
def test_bit_slices_and_input_cycles(weight_bits, device_bits, input_bits,
                                     dac_bits, slices, cycles):
  spec = _spec(m=8, n=8, weight_bits=weight_bits, device_bits=device_bits,
               input_bits=input_bits, dac_bits=dac_bits)
  c = _only(_count(nn.Dense(4), (2, 5), spec))
  assert c["tile_reads"] == cycles * slices * 2
  assert c["adc_conversions"] == cycles * slices * 2 * 8
  assert c["dac_conversions"] == cycles * slices * 2 * 8


def test_analog_pair_subtraction_digitizes_once_per_pair():
  digital = _only(_count(nn.Dense(6), (1, 10), _spec(pairs="digital")))
  analog = _only(_count(nn.Dense(6), (1, 10), _spec(pairs="analog")))
  # Both crossbars of a pair are driven either way; analog subtraction
  # leaves one ADC reading per pair and column instead of two.
  assert analog["tile_reads"] == digital["tile_reads"] == 8 * 4 * 2
  assert analog["dac_conversions"] == digital["dac_conversions"]
  assert analog["adc_conversions"] == 8 * 4 * 1 * 16
  assert digital["adc_conversions"] == 8 * 4 * 2 * 16
  offset = _only(_count(nn.Dense(6), (1, 10), _spec(signed="offset")))
  assert offset["tile_reads"] == 8 * 4 * 1  # One crossbar, no pair.


def test_signed_inputs_take_two_passes():
  one = _only(_count(nn.Dense(6), (1, 10), _spec(inputs="non_negative")))
  two = _only(_count(nn.Dense(6), (1, 10), _spec(inputs="signed")))
  for k in ("tile_reads", "dac_conversions", "adc_conversions",
            "shift_adds"):
    assert two[k] == 2 * one[k]
  assert two["accumulations"] == 6 * (2 * 1 - 1)  # The passes' difference.


@pytest.mark.parametrize("padding,side", [("SAME", 5), ("VALID", 4)])
def test_a_strided_convolution_counts_every_position(padding, side):
  # 3 x 3 kernel, stride 2 on a 9 x 9 x 2 input: SAME gives ceil(9 / 2) = 5
  # positions per side, VALID floor((9 - 3) / 2) + 1 = 4. Fan-in 3*3*2 = 18
  # rows: 2 tile rows of 16, one tile column for 5 filters.
  conv = nn.Conv(5, (3, 3), strides=2, padding=padding)
  report = _count(conv, (2, 9, 9, 2), _spec())
  c = _only(report)
  positions = side * side
  assert c["tile_reads"] == positions * 8 * 4 * 2 * (2 * 1)
  assert c["adc_conversions"] == c["tile_reads"] * 16
  assert c["accumulations"] == positions * 5 * (2 - 1)
  assert c["buffer_read_bits"] == positions * 18 * 8


def test_grouped_convolution_has_a_matrix_per_group():
  conv = nn.Conv(6, (1, 1), feature_group_count=2)
  c = _only(_count(conv, (1, 4, 4, 4), _spec()))
  # Two groups of a 2 -> 3 matrix, 16 positions, one tile each.
  assert c["tile_reads"] == 16 * 2 * (8 * 4 * 2)


def test_a_half_used_tile_counts_its_unmapped_columns_unless_gated():
  # 16 -> 8 on one 16 x 16 tile: half the columns hold no weight.
  ungated = _only(_count(nn.Dense(8), (1, 16), _spec()))
  gated = _only(_count(nn.Dense(8), (1, 16), _spec(),
                       energy.EnergySpec(power_gated=True)))
  assert ungated["adc_conversions"] == 8 * 4 * 2 * 16
  assert gated["adc_conversions"] == 8 * 4 * 2 * 8
  model = nn.Dense(8)
  e_ungated = _count(model, (1, 16), _spec()).energy_j["adc"]
  e_gated = _count(model, (1, 16), _spec(),
                   energy.EnergySpec(power_gated=True)).energy_j["adc"]
  assert e_ungated == pytest.approx(2 * e_gated, rel=1e-12)


def test_energy_is_per_operation_energy_times_count():
  spec = _spec(m=8, n=8)
  model = nn.Dense(12)
  base = _count(model, (1, 20), spec)
  c = base.counts
  e = base.energy_j
  assert e["adc"] == pytest.approx(c["adc_conversions"] * 1.67e-12)
  assert e["dac"] == pytest.approx(c["dac_conversions"] * 0.417e-12)
  assert e["digital"] == pytest.approx(
      (c["shift_adds"] + c["accumulations"]) * 0.021e-12)
  bits = c["buffer_read_bits"] + c["buffer_write_bits"]
  assert e["buffer"] == pytest.approx(bits * (20.45 / 256 + 0.054) * 1e-12)
  assert e["total"] == pytest.approx(
      e["adc"] + e["dac"] + e["array"] + e["digital"] + e["buffer"])


@pytest.mark.parametrize("field,term", [
    ("dac_pj_per_unit", "dac"), ("shift_add_pj", "digital"),
    ("buffer_pj_per_access", "buffer"), ("bus_pj_per_bit", "buffer")])
def test_energy_is_linear_in_each_per_operation_energy(field, term):
  model, spec = nn.Conv(7, (3, 3)), _spec(m=8, n=8)
  total = lambda value: _count(model, (1, 6, 6, 3), spec, energy.EnergySpec(
      **{field: value})).energy_j
  e0, e1, e3 = total(0.0), total(0.5), total(1.5)
  assert e3[term] - e0[term] == pytest.approx(3 * (e1[term] - e0[term]),
                                              rel=1e-9)
  assert e3["total"] - e0["total"] == pytest.approx(
      3 * (e1["total"] - e0["total"]), rel=1e-9)
  assert e1[term] > e0[term]


def test_adc_energy_is_linear_in_the_table():
  model, spec = nn.Dense(9), _spec(m=8, n=8, adc_bits=6)
  table = energy.ISAAC_ADC_PJ
  doubled = tuple((b, 2 * e) for b, e in table)
  e1 = _count(model, (1, 20), spec).energy_j
  e2 = _count(model, (1, 20), spec,
              energy.EnergySpec(adc_pj_by_bits=doubled)).energy_j
  assert e2["adc"] == pytest.approx(2 * e1["adc"], rel=1e-12)
  assert e1["adc"] == pytest.approx(
      _count(model, (1, 20), spec).counts["adc_conversions"] * 1.20e-12)


def test_adc_tables_of_the_two_presets():
  isaac, neuro = energy.EnergySpec(), energy.EnergySpec.neurosim_22nm()
  assert isaac.adc_pj(8) == 1.67 and isaac.adc_pj(4) == 0.79
  # Geometric between and beyond the entries.
  assert isaac.adc_pj(11) == pytest.approx(2.38 * 2.38 / 1.97)
  assert neuro.adc_pj(5) == pytest.approx(0.042, abs=5e-4)
  assert neuro.adc_pj(8) == pytest.approx(0.078, abs=5e-4)


def test_per_image_numbers_do_not_depend_on_the_batch_size():
  model = nn.Sequential([nn.Conv(4, (3, 3), strides=2), nn.relu,
                         lambda x: x.reshape(x.shape[0], -1), nn.Dense(5)])
  one = _count(model, (1, 8, 8, 2), _spec())
  many = _count(model, (7, 8, 8, 2), _spec())
  assert one.counts == many.counts
  assert one.energy_j == many.energy_j
  assert one.latency_s == many.latency_s
  # The measured array term as well: the same image 1 or 4 times.
  x = jax.random.uniform(jax.random.key(0), (1, 8, 8, 2))
  variables = model.init(jax.random.key(1), x)
  spec = _spec(input_bits=4, dac_bits=2)
  chips = jax.jit(lambda v, x: rxjax.nn.program(
      model, v, x, spec, key=jax.random.key(2)))(variables, x)
  a = energy.estimate(model, variables, x, spec, key=None, chips=chips,
                      inputs="digital")
  b = energy.estimate(model, variables, jnp.repeat(x, 4, axis=0), spec,
                      key=None, chips=chips, inputs="digital")
  assert a.energy_j["array"] > 0
  assert b.energy_j["array"] == pytest.approx(a.energy_j["array"],
                                              rel=1e-5)
  assert b.counts == a.counts


def _digits_by_hand(x01, input_bits, dac_bits):
  """[C, ...] digits of `x01` in [0, 1]: q = round(x * (2^b - 1)), digit c
  = (q >> c * dac_bits) & (2^dac_bits - 1), over its full scale."""
  q = np.round(np.clip(x01, 0, 1) * (2**input_bits - 1)).astype(np.int64)
  base = 2**dac_bits
  cycles = -(-input_bits // dac_bits)
  return np.stack([((q >> (c * dac_bits)) & (base - 1)) / (base - 1)
                   for c in range(cycles)])


@pytest.mark.parametrize("model_name", [
    pytest.param("exact", marks=pytest.mark.slow),  # ~30 s: compiles the
    "g_eff"])                                        # per-input solve.
def test_array_term_is_the_sum_of_v_times_i_of_the_tile(model_name):
  # One 8 x 8 layer on one tile pair (full-precision cells, 1 slice), 4-bit
  # inputs in two 2-bit cycles, wires on: the energy the sources deliver,
  # sum_i v_i * i_in_i per read, with i_in_i the current row i's devices
  # carry from the exact node voltages (rxjax.node_voltages).
  wires = circuit.Wires(r_row=2.0, r_col=8.0, r_source=100.0,
                        r_sense=100.0)
  spec = _spec(m=8, n=8, weight_bits=None, device_bits=None, input_bits=4,
               dac_bits=2, adc_bits=None, wires=wires, sigma=0.1)
  model = nn.Dense(8, use_bias=False)
  x = jax.random.uniform(jax.random.key(0), (3, 8))
  variables = model.init(jax.random.key(1), x)
  espec = energy.EnergySpec(array_model=model_name, read_pulse_s=2e-9)
  chips = rxjax.nn.program(model, variables, x, spec, key=jax.random.key(2))
  # The only layer's inputs are x itself, on the chip or not.
  report = energy.estimate(model, variables, x, spec, key=None,
                           chips=chips, energy_spec=espec, inputs="digital")
  chip = chips["chip"]
  g = np.asarray(chip.g)[0, 0, :, 0, 0]  # [P, M, N]: the pair's crossbars.
  u = _digits_by_hand(np.asarray(x) / float(chip.x_scale[0]), 4, 2)
  v = spec.dac.v_read * u  # [C, B, M] volts.
  nodes = rxjax.node_voltages(g[:, None, None], v[None], wires)
  i_rows = np.einsum("pmn,pcbmn->pcbm", g,
                     np.asarray(nodes.v_row - nodes.v_col))
  joules = 2e-9 * np.einsum("cbm,pcbm->", v, i_rows) / x.shape[0]
  rtol = 1e-4 if model_name == "exact" else 2e-2
  assert report.energy_j["array"] == pytest.approx(joules, rel=rtol)
  assert report.array_model == model_name


def test_array_term_with_ideal_wires_is_v_squared_times_g():
  spec = _spec(m=8, n=8, weight_bits=None, device_bits=None,
               input_bits=None, dac_bits=None, adc_bits=None)
  model = nn.Dense(5, use_bias=False)
  x = jax.random.uniform(jax.random.key(3), (2, 6))
  variables = model.init(jax.random.key(4), x)
  chips = rxjax.nn.program(model, variables, x, spec, key=jax.random.key(5))
  # The chip's own layer inputs (`inputs="chip"`): here x itself.
  report = energy.estimate(model, variables, x, spec, key=None, chips=chips)
  g = np.asarray(chips["chip"].g)[0, 0, :, 0, 0]  # [P, M, N]
  v = spec.dac.v_read * np.clip(np.asarray(x) / float(
      chips["chip"].x_scale[0]), 0, 1)
  v = np.pad(v, ((0, 0), (0, 2)))  # Rows 6, 7 are not driven.
  joules = 1e-9 * np.einsum("bm,pmn->", v**2, g) / 2
  assert report.energy_j["array"] == pytest.approx(joules, rel=1e-5)


@pytest.mark.parametrize("field,value,message", [
    ("adc_sample_rate_hz", -1.0, "`adc_sample_rate_hz` must be a finite "
     "rate > 0 Hz"),
    ("read_pulse_s", 0.0, "`read_pulse_s` must be a finite time > 0 s"),
    ("shift_add_pj", -0.1, "`shift_add_pj` must be a finite number >= 0"),
    ("columns_per_adc", 0, r"`columns_per_adc` must be None \(all columns "
     r"of a crossbar\) or an int >= 1"),
    ("activation_bits", 2.5, "`activation_bits` must be None"),
    ("dac_scaling", "log", "`dac_scaling` must be one of"),
    ("array_model", "spice", "`array_model` must be one of"),
    ("power_gated", 1, "`power_gated` must be True or False"),
    ("adc_pj_by_bits", ((8, -1.0),), "`adc_pj_by_bits` must be a non-empty "
     "tuple"),
    ("adc_pj_by_bits", ((8, 1.0), (6, 0.5)), "increasing int bits"),
    ("bus_pj_per_bit", float("nan"), "`bus_pj_per_bit` must be a finite"),
])
def test_an_invalid_energy_spec_names_the_field_and_range(field, value,
                                                          message):
  with pytest.raises(ValueError, match=message):
    energy.EnergySpec(**{field: value})


def test_energy_spec_is_frozen_and_hashable():
  spec = energy.EnergySpec()
  with pytest.raises(dataclasses.FrozenInstanceError):
    spec.adc_um2 = 1.0
  assert hash(spec) == hash(energy.EnergySpec())


def test_latency_and_area_by_hand():
  # 10 -> 6 on one 16 x 16 tile pair, 4 slices, 8 cycles, one pass:
  # 8 sequential steps of (pulse + 16 columns through one ADC).
  report = _count(nn.Dense(6), (1, 10), _spec())
  step = 1e-9 + 16 / 1.2e9
  assert report.latency_s == pytest.approx(8 * step)
  crossbars = 4 * 2
  area_um2 = (crossbars * (16 * 16 * 25 / 16384 + 16 * 0.166)
              + crossbars * (1200 + 15)
              + (10 + 6) * 8 / 8 / 1024 * 0.083e6 / 64)
  assert report.area_m2 == pytest.approx(area_um2 * 1e-12)
  shared = _count(nn.Dense(6), (1, 10), _spec(), energy.EnergySpec(
      columns_per_adc=4, tiles_in_parallel=2))
  assert shared.latency_s == pytest.approx(8 * 4 * (1e-9 + 4 / 1.2e9))


def test_table_and_summary():
  report = _count(nn.Dense(6), (1, 10), _spec())
  table = report.table()
  assert table.splitlines()[0].startswith("| layer |")
  assert "**total**" in table
  s = report.summary()
  assert s["j_per_image"] == report.energy_j["total"]
  assert s["area_mm2"] == pytest.approx(report.area_m2 * 1e6)
