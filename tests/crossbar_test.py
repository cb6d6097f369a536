"""The three-stage crossbar VMM against independent references.

References: `x @ w` in the ideal limit; per-tile exact node solves
(`circuit.node_voltages`, a different code path from `G_eff`) summed in
NumPy; converters re-implemented in NumPy from their documented formulas.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rxjax
from rxjax import circuit, crossbar, device, mapping, periphery
from rxjax.crossbar import ChipSpec

RERAM_WIRES = circuit.Wires(r_row=1.0, r_col=4.6, r_source=100.0,
                            r_sense=100.0)


def _ideal(**kw):
  return ChipSpec.ideal(**kw)


def _small_tiles(spec, m=8, n=6):
  return spec.replace(mapping=dataclasses.replace(spec.mapping, tile_rows=m,
                                                  tile_cols=n))


def _data(seed, batch, fan_in, fan_out, signed=True):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(batch, fan_in))
  if not signed:
    x = np.abs(x)
  w = rng.normal(size=(fan_in, fan_out))
  return jnp.asarray(x), jnp.asarray(w)


@pytest.mark.parametrize("signed", ["differential", "offset"])
@pytest.mark.parametrize("shape", [(1, 1), (8, 6), (13, 7), (20, 17), (5, 30)])
def test_ideal_spec_is_matmul(shape, signed):
  spec = _small_tiles(_ideal())
  spec = spec.replace(mapping=dataclasses.replace(spec.mapping, signed=signed))
  x, w = _data(0, 4, *shape)
  y = rxjax.matmul(x, w, spec, key=jax.random.key(0))
  np.testing.assert_allclose(y, x @ w, rtol=1e-9, atol=1e-9 * np.abs(
      np.asarray(x @ w)).max())


def test_ideal_spec_is_matmul_float32_and_batch_axes():
  spec = _small_tiles(_ideal())
  x, w = _data(1, 6, 19, 11)
  x = x.astype(jnp.float32).reshape(2, 3, 19)
  w = w.astype(jnp.float32)
  y = rxjax.matmul(x, w, spec, key=jax.random.key(0))
  assert y.dtype == jnp.float32 and y.shape == (2, 3, 11)
  np.testing.assert_allclose(y, x @ w, atol=2e-5 * float(jnp.abs(x @ w).max()))


def test_default_spec_is_close_to_matmul():
  # The papers' chip: 8-bit weights and inputs, 10% variation, IR drop.
  x, w = _data(2, 16, 100, 40, signed=False)
  y = rxjax.matmul(x, w, key=jax.random.key(0))
  ref = x @ w
  err = float(jnp.linalg.norm(y - ref) / jnp.linalg.norm(ref))
  assert 1e-3 < err < 0.3  # Non-ideal, but still the same product.


def test_non_negative_inputs_clip():
  spec = _small_tiles(_ideal(inputs="non_negative"))
  x, w = _data(3, 4, 10, 5)
  y = rxjax.matmul(x, w, spec, key=jax.random.key(0))
  np.testing.assert_allclose(y, jnp.maximum(x, 0) @ w, rtol=1e-9, atol=1e-12)


def _numpy_tile_currents(g, v, wires):
  """Forward currents of every tile from per-input node solves."""
  s, p, tr, tc, m, n = g.shape
  out = np.zeros(v.shape[:-2] + (s, p, tr, tc, n))
  for idx in np.ndindex(s, p, tr, tc):
    vt = v[..., idx[2], :]
    sol = circuit.node_voltages(g[idx], vt, wires)
    out[(...,) + idx + (slice(None),)] = np.asarray(sol.i_out)
  return out


@pytest.mark.parametrize("signed", ["differential", "offset"])
def test_nonideal_wires_match_node_solves(signed):
  # Converters ideal, devices continuous: the read must equal the sum of the
  # exact per-tile column currents, recombined by hand.
  spec = _small_tiles(_ideal(wires=RERAM_WIRES, inputs="non_negative"))
  spec = spec.replace(mapping=dataclasses.replace(spec.mapping, signed=signed))
  x, w = _data(4, 3, 13, 9, signed=False)
  chip = crossbar.program(w, spec, key=jax.random.key(1))
  chip = crossbar.calibrate(chip, x, spec)
  y = crossbar.read(x, chip, spec)

  d = spec.device
  g = np.asarray(chip.g)
  tr, m = g.shape[2], g.shape[4]
  u = np.zeros((3, tr * m))
  u[:, :13] = np.asarray(x) / float(chip.x_scale)
  v = u.reshape(3, tr, m) * spec.dac.v_read
  i = _numpy_tile_currents(g, v, spec.wires).sum(axis=3)  # over fan-in tiles
  unit = spec.dac.v_read * (d.g_max - d.g_min)
  if signed == "differential":
    z = (i[:, 0, 0] - i[:, 0, 1]) / unit
  else:
    z = 2 * (i[:, 0, 0, :, :-1] - i[:, 0, 0, :, -1:]) / unit
    z = z - u.sum(-1)[:, None, None]
  ref = z.reshape(3, -1)[:, :9] * float(chip.x_scale * chip.w_scale)
  np.testing.assert_allclose(y, ref, rtol=1e-9, atol=1e-12)
  # IR drop is visible: the read is not the ideal product.
  assert float(jnp.abs(y - x @ w).max()) > 1e-4 * float(jnp.abs(x @ w).max())


def test_quantized_slices_recombine_exactly():
  # 8-bit weights in four 2-bit slices, 8-bit inputs streamed through 1-bit
  # DACs, no ADC: the read is exactly quantize(x) @ unmap(chip).
  spec = _small_tiles(_ideal(
      mapping=mapping.MappingSpec(weight_bits=8),
      device=dataclasses.replace(device.DeviceSpec.ideal(), device_bits=2),
      dac=periphery.DACSpec(input_bits=8, dac_bits=1)))
  x, w = _data(5, 5, 17, 10)
  chip = crossbar.program(w, spec, key=jax.random.key(0))
  chip = crossbar.calibrate(chip, x, spec)
  assert chip.g.shape[0] == 4
  y = crossbar.read(x, chip, spec)
  w_hat = mapping.unmap(chip.g, chip.w_scale, spec.mapping, spec.device,
                        w.shape)
  xs = np.asarray(x) / float(chip.x_scale)
  xq = np.sign(xs) * np.round(np.abs(xs) * 255) / 255 * float(chip.x_scale)
  np.testing.assert_allclose(y, xq @ np.asarray(w_hat), rtol=1e-9,
                             atol=1e-12)
  # And the quantization is the promised one.
  assert float(jnp.abs(w_hat - w).max()) <= float(chip.w_scale) / 255 / 2 * (
      1 + 1e-9)


def test_adc_readout_matches_numpy():
  # One slice, one cycle, 5-bit ADC, calibrated on the data: y is the sum
  # over tiles of the quantized pair currents, computed here in NumPy.
  spec = _small_tiles(_ideal(
      wires=RERAM_WIRES, inputs="non_negative",
      adc=periphery.ADCSpec(bits=5)))
  x, w = _data(6, 4, 12, 7, signed=False)
  chip = crossbar.calibrate(
      crossbar.program(w, spec, key=jax.random.key(0)), x, spec)
  y = crossbar.read(x, chip, spec)

  g_eff = np.asarray(chip.g_eff)
  tr, m = g_eff.shape[2], g_eff.shape[4]
  u = np.zeros((4, tr * m))
  u[:, :12] = np.asarray(x) / float(chip.x_scale)
  v = u.reshape(4, tr, m) * spec.dac.v_read
  i = np.einsum("brm,prtmn->bprtn", v, g_eff[0])
  fs = float(chip.adc_full_scale)
  assert fs == pytest.approx(i.max(), rel=1e-12)  # "max" calibration
  q = np.round(np.clip(i / fs, 0, 1) * 31) / 31 * fs
  d = spec.device
  z = (q[:, 0] - q[:, 1]).sum(1) / (spec.dac.v_read * (d.g_max - d.g_min))
  ref = z.reshape(4, -1)[:, :7] * float(chip.x_scale * chip.w_scale)
  np.testing.assert_allclose(y, ref, rtol=1e-9, atol=1e-12)


def _bipolar_numpy(i, fs, bits, offset=0.0, gain=0.0):
  """Sign-magnitude ADC reading from its documented formula."""
  levels = 2 ** (bits - 1) - 1
  z = np.clip(i / fs * (1 + gain) + offset, -1, 1)
  return np.round(z * levels) / levels * fs


def test_analog_pair_subtraction_matches_numpy():
  """Analog pair subtraction: per tile, slice and input cycle, the sense
  amplifier subtracts the pair's column currents and one bipolar 5-bit ADC
  (with its column's offset and gain) digitizes I+ - I-, calibrated on the
  largest |I+ - I-|; then shift-and-add and the sum over tiles, in NumPy
  from the chip's G_eff. Two slices, two input cycles, 2 x 2 tiles."""
  spec = _small_tiles(ChipSpec(
      wires=RERAM_WIRES, inputs="non_negative", pair_subtraction="analog",
      mapping=dataclasses.replace(ChipSpec().mapping, weight_bits=4),
      dac=periphery.DACSpec(input_bits=4, dac_bits=2),
      adc=periphery.ADCSpec(bits=5, offset_sigma=0.01, gain_sigma=0.02)))
  x, w = _data(8, 4, 12, 9, signed=False)
  w = w - 1.0  # Mostly negative: the largest |I+ - I-| is a negative one.
  chip = crossbar.calibrate(
      crossbar.program(w, spec, key=jax.random.key(3)), x, spec)
  y = crossbar.read(x, chip, spec)

  g_eff = np.asarray(chip.g_eff)  # [S, P, Tr, Tc, M, N]
  s, p, tr, tc, m, n = g_eff.shape
  assert (s, p, tr, tc) == (2, 2, 2, 2)
  x01 = np.pad(np.asarray(x) / float(chip.x_scale), [(0, 0), (0, tr * m - 12)])
  u = np.asarray(periphery.stream(x01, spec.dac))  # [C, B, Tr M]
  v = u.reshape(u.shape[:2] + (tr, m)) * spec.dac.v_read
  i = np.einsum("cbrm,sprtmn->cbsprtn", v, g_eff)
  diff = i[:, :, :, 0] - i[:, :, :, 1]  # [C, B, S, Tr, Tc, N]
  fs = float(chip.adc_full_scale)
  assert fs == pytest.approx(np.abs(diff).max(), rel=1e-12)
  assert -diff.min() > diff.max()
  offset = np.asarray(chip.adc_offset)[:, 0]  # Polarity 0's ADC per pair.
  gain = np.asarray(chip.adc_gain)[:, 0]
  assert np.abs(offset).max() > 0 and np.abs(gain).max() > 0
  q = _bipolar_numpy(diff, fs, 5, offset, gain)
  cw = periphery.cycle_weights(spec.dac)
  sw = mapping.slice_weights(spec.mapping, spec.device)
  acc = np.einsum("cbsrtn,c,s->btn", q, cw, sw)
  d = spec.device
  ref = (acc.reshape(4, -1)[:, :9] / (spec.dac.v_read * (d.g_max - d.g_min))
         * float(chip.x_scale * chip.w_scale))
  np.testing.assert_allclose(y, ref, rtol=1e-9, atol=1e-12)
  # Not the digital subtraction of the same chip (calibrated its own way).
  digital = spec.replace(pair_subtraction="digital")
  y_dig = crossbar.read(x, crossbar.calibrate(chip, x, digital), digital)
  assert float(jnp.abs(y - y_dig).max()) > 1e-3 * float(jnp.abs(y).max())


@pytest.mark.parametrize("split", [False, True])
def test_partly_filled_last_tiles_read_matches_numpy(monkeypatch, split):
  """Digital pairs, two slices, two input cycles, 6-bit ADCs with per-column
  offsets and gains, a 13 x 9 layer on 8 x 6 tiles: the last tile row
  carries 5 of its 8 rows and the last tile column 3 of its 6 columns,
  which the read leaves out (`reads._read_forward`). NumPy reads every
  row and column of every tile from the chip's G_eff, padding included,
  and discards the padding columns' readings; jointly and with the two
  polarities in separate scans."""
  spec = _small_tiles(ChipSpec(
      wires=RERAM_WIRES, inputs="non_negative",
      mapping=dataclasses.replace(ChipSpec().mapping, weight_bits=4),
      dac=periphery.DACSpec(input_bits=4, dac_bits=2),
      adc=periphery.ADCSpec(bits=6, offset_sigma=0.01, gain_sigma=0.02)))
  x, w = _data(12, 4, 13, 9, signed=False)
  chip = crossbar.calibrate(
      crossbar.program(w, spec, key=jax.random.key(6)), x, spec)
  if split:
    monkeypatch.setattr(crossbar.reads, "SPLIT_CURRENTS", 0)
  y = crossbar.read(x, chip, spec)

  g_eff = np.asarray(chip.g_eff)  # [S, P, Tr, Tc, M, N]
  s, p, tr, tc, m, n = g_eff.shape
  assert (s, p, tr, tc) == (2, 2, 2, 2)
  x01 = np.pad(np.asarray(x) / float(chip.x_scale), [(0, 0), (0, tr * m - 13)])
  u = np.asarray(periphery.stream(x01, spec.dac))  # [C, B, Tr M]
  v = u.reshape(u.shape[:2] + (tr, m)) * spec.dac.v_read
  i = np.einsum("cbrm,sprtmn->cbsprtn", v, g_eff)
  fs = float(chip.adc_full_scale)
  offset, gain = np.asarray(chip.adc_offset), np.asarray(chip.adc_gain)
  assert np.abs(offset).max() > 0 and np.abs(gain).max() > 0
  z = np.clip(i / fs * (1 + gain) + offset, 0, 1)
  q = np.round(z * 63) / 63 * fs
  cw = periphery.cycle_weights(spec.dac)
  sw = mapping.slice_weights(spec.mapping, spec.device)
  acc = np.einsum("cbsprtn,c,s->bptn", q, cw, sw)
  d = spec.device
  ref = ((acc[:, 0] - acc[:, 1]).reshape(4, -1)[:, :9]
         / (spec.dac.v_read * (d.g_max - d.g_min))
         * float(chip.x_scale * chip.w_scale))
  np.testing.assert_allclose(y, ref, rtol=1e-9, atol=1e-12)
  assert float(jnp.abs(y - x @ w).max()) > 1e-3  # A non-ideal read.


@pytest.mark.parametrize("dac_model", ["ideal", "divider"])
def test_polarity_split_read_equals_the_joint_read(monkeypatch, dac_model):
  """Large digital-pair reads run the two polarities as separate scans
  (`crossbar.reads.SPLIT_CURRENTS`); forcing that path on a small layer must
  give the joint read's numbers: ADC offsets and gains of each polarity's own
  columns, the negative crossbar subtracted."""
  spec = _small_tiles(ChipSpec(
      wires=RERAM_WIRES, inputs="signed",
      mapping=dataclasses.replace(ChipSpec().mapping, weight_bits=4),
      dac=periphery.DACSpec(input_bits=4, dac_bits=2, model=dac_model),
      adc=periphery.ADCSpec(bits=6, offset_sigma=0.01, gain_sigma=0.02)))
  x, w = _data(10, 5, 12, 9)
  chip = crossbar.calibrate(
      crossbar.program(w, spec, key=jax.random.key(5)), x, spec)
  joint = crossbar.read(x, chip, spec)
  monkeypatch.setattr(crossbar.reads, "SPLIT_CURRENTS", 0)
  split = crossbar.read(x, chip, spec)
  np.testing.assert_allclose(split, joint, rtol=1e-12,
                             atol=1e-12 * float(jnp.abs(joint).max()))
  assert float(jnp.abs(joint - x @ w).max()) > 1e-3  # A non-ideal read.


def test_divider_dac_matches_numpy():
  spec = _small_tiles(_ideal(
      wires=RERAM_WIRES, inputs="non_negative",
      dac=periphery.DACSpec(input_bits=None, dac_bits=None, model="divider",
                            r_pd=2e3, v_ref=0.5)))
  x, w = _data(7, 3, 10, 6, signed=False)
  chip = crossbar.calibrate(
      crossbar.program(w, spec, key=jax.random.key(0)), x, spec)
  y = crossbar.read(x, chip, spec)

  g_eff = np.asarray(chip.g_eff)[0]  # [P, Tr, Tc, M, N]
  tr, m = g_eff.shape[1], g_eff.shape[3]
  u = np.zeros((3, tr * m))
  u[:, :10] = np.asarray(x) / float(chip.x_scale)
  u = u.reshape(3, tr, m)
  d = spec.device
  g_nom = spec.mapping.tile_cols * (d.g_min + d.g_max) / 2
  g_pd, v_ref = 1 / 2e3, 0.5
  t = u * spec.dac.v_read / v_ref  # [B, Tr, M]
  g_dac = t * (g_pd + g_nom) / (1 - t)
  g_load = g_eff.sum(-1)  # [P, Tr, Tc, M]
  v = v_ref * g_dac[:, None, :, None, :] / (
      g_dac[:, None, :, None, :] + g_pd + g_load[None])
  i = np.einsum("bprtm,prtmn->bprtn", v, g_eff).sum(2)
  z = (i[:, 0] - i[:, 1]) / (spec.dac.v_read * (d.g_max - d.g_min))
  ref = z.reshape(3, -1)[:, :6] * float(chip.x_scale * chip.w_scale)
  np.testing.assert_allclose(y, ref, rtol=1e-9, atol=1e-12)
  # The loaded divider does not deliver the ideal voltages.
  ideal = crossbar.read(x, chip, spec.replace(dac=periphery.DACSpec.ideal()))
  assert float(jnp.abs(y - ideal).max()) > 1e-3 * float(jnp.abs(ideal).max())


def test_same_key_same_chip_different_keys_differ():
  spec = _small_tiles(ChipSpec())
  _, w = _data(8, 1, 20, 9)
  a = crossbar.program(w, spec, key=jax.random.key(3))
  b = crossbar.program(w, spec, key=jax.random.key(3))
  c = crossbar.program(w, spec, key=jax.random.key(4))
  np.testing.assert_array_equal(a.g_eff, b.g_eff)
  assert float(jnp.abs(a.g - c.g).max()) > 0


def test_vmap_over_chip_instances_equals_loop():
  spec = _small_tiles(ChipSpec(inputs="non_negative"))
  x, w = _data(9, 4, 20, 9, signed=False)
  keys = jax.random.split(jax.random.key(0), 3)
  chips = jax.vmap(lambda k: crossbar.program(w, spec, key=k))(keys)
  chips = jax.vmap(lambda c: crossbar.calibrate(c, x, spec))(chips)
  ys = jax.vmap(lambda c: crossbar.read(x, c, spec))(chips)
  for k in range(3):
    chip = crossbar.calibrate(crossbar.program(w, spec, key=keys[k]), x, spec)
    np.testing.assert_allclose(ys[k], crossbar.read(x, chip, spec),
                               rtol=1e-12, atol=1e-15)
  assert float(jnp.abs(ys[0] - ys[1]).max()) > 0


def test_straight_through_gradient_is_matmul_gradient():
  spec = _small_tiles(ChipSpec())  # non-ideal forward
  x, w = _data(10, 5, 14, 8)
  dy = jax.random.normal(jax.random.key(1), (5, 8), jnp.float64)
  loss = lambda x, w: jnp.sum(rxjax.matmul(x, w, spec, key=jax.random.key(2))
                              * dy)
  gx, gw = jax.grad(loss, argnums=(0, 1))(x, w)
  np.testing.assert_allclose(gx, dy @ w.T, rtol=1e-12)
  np.testing.assert_allclose(gw, x.T @ dy, rtol=1e-12)


def test_ideal_spec_passes_check_grads():
  from jax.test_util import check_grads
  spec = _small_tiles(_ideal())
  x, w = _data(11, 3, 9, 7)
  check_grads(lambda x, w: rxjax.matmul(x, w, spec, key=jax.random.key(0)),
              (x, w), order=1, modes=["rev"], eps=1e-6)


def test_transposed_read_gradient_is_explicit_backward_read():
  spec = _small_tiles(ChipSpec(backward="transposed_read",
                           wires=dataclasses.replace(
                               RERAM_WIRES, r_source_backward=300.0)))
  x, w = _data(12, 4, 14, 8)
  chip = crossbar.calibrate(
      crossbar.program(w, spec, key=jax.random.key(0)), x, spec)
  dy = jax.random.normal(jax.random.key(1), (4, 8), jnp.float64)
  _, vjp = jax.vjp(lambda x: crossbar.crossbar_matmul(x, w, chip, None, spec),
                   x)
  (gx,) = vjp(dy)
  explicit = crossbar.read(dy, chip, spec, direction="backward")
  np.testing.assert_array_equal(gx, explicit)
  # It approximates dy @ w.T, but is not it.
  ref = dy @ w.T
  err = float(jnp.linalg.norm(gx - ref) / jnp.linalg.norm(ref))
  assert 1e-4 < err < 0.3


@pytest.mark.parametrize("signed,wires", [
    ("differential", dataclasses.replace(RERAM_WIRES, r_source_backward=300.0,
                                         r_sense_backward=30.0)),
    ("offset", dataclasses.replace(RERAM_WIRES, r_source_backward=300.0,
                                   r_sense_backward=30.0)),
    # Same terminals both ways: the chip reuses the forward G_eff.
    ("differential", RERAM_WIRES)])
def test_backward_read_matches_node_solves(signed, wires):
  assert wires.reciprocal == (wires is RERAM_WIRES)
  spec = _small_tiles(_ideal(wires=wires, backward="transposed_read"))
  spec = spec.replace(mapping=dataclasses.replace(spec.mapping, signed=signed))
  x, w = _data(13, 2, 11, 9)
  chip = crossbar.program(w, spec, key=jax.random.key(0))
  dy = np.random.default_rng(0).normal(size=(2, 9))
  y = crossbar.read(dy, chip, spec, direction="backward")

  g = np.asarray(chip.g)
  s, p, tr, tc, m, n = g.shape
  nd = n - 1 if signed == "offset" else n
  scale = np.abs(dy).max()
  d = spec.device
  unit = spec.dac.v_read * (d.g_max - d.g_min)
  out = 0
  for sign, part in ((1, np.maximum(dy, 0)), (-1, np.maximum(-dy, 0))):
    u = np.zeros((2, tc * nd))
    u[:, :9] = part / scale
    u = u.reshape(2, tc, nd)
    if signed == "offset":
      u = np.concatenate([u, np.zeros((2, tc, 1))], -1)
    i = np.zeros((2, p, tr, m))
    for pp, r, t in np.ndindex(p, tr, tc):
      sol = circuit.node_voltages(g[0, pp, r, t], u[:, t] * spec.dac.v_read,
                                  spec.wires, direction="backward")
      i[:, pp, r] += np.asarray(sol.i_out)
    if signed == "differential":
      z = (i[:, 0] - i[:, 1]) / unit
    else:
      base = d.g_min * spec.dac.v_read * u.sum((1, 2))[:, None, None]
      z = 2 * (i[:, 0] - base) / unit - u.sum((1, 2))[:, None, None]
    out = out + sign * z.reshape(2, -1)[:, :11]
  np.testing.assert_allclose(y, out * scale * float(chip.w_scale),
                             rtol=1e-9, atol=1e-12)


def test_ideal_backward_read_is_transposed_matmul():
  spec = _small_tiles(_ideal(backward="transposed_read"))
  x, w = _data(14, 3, 13, 10)
  chip = crossbar.program(w, spec, key=jax.random.key(0))
  dy = jnp.asarray(np.random.default_rng(1).normal(size=(3, 10)))
  y = crossbar.read(dy, chip, spec, direction="backward")
  np.testing.assert_allclose(y, dy @ w.T, rtol=1e-9, atol=1e-12)


def test_read_noise_needs_key_and_varies_per_read():
  spec = _small_tiles(ChipSpec(device=dataclasses.replace(device.DeviceSpec(),
                                                      read_noise=0.05)))
  x, w = _data(15, 2, 10, 5)
  chip = crossbar.program(w, spec, key=jax.random.key(0))
  with pytest.raises(ValueError, match="read_noise"):
    crossbar.read(x, chip, spec)
  a = crossbar.read(x, chip, spec, key=jax.random.key(1))
  b = crossbar.read(x, chip, spec, key=jax.random.key(2))
  c = crossbar.read(x, chip, spec, key=jax.random.key(1))
  np.testing.assert_array_equal(a, c)
  assert float(jnp.abs(a - b).max()) > 0


def test_bad_inputs_raise_clear_errors():
  with pytest.raises(ValueError, match="backward"):
    ChipSpec(backward="sideways")
  with pytest.raises(ValueError, match="inputs"):
    ChipSpec(inputs="complex")
  with pytest.raises(ValueError, match="divider_exact"):
    ChipSpec(backward="transposed_read",
         dac=periphery.DACSpec(model="divider_exact"))
  with pytest.raises(TypeError, match="wires"):
    ChipSpec(wires=(1.0, 4.6))
  with pytest.raises(ValueError, match="pair_subtraction"):
    ChipSpec(pair_subtraction="optical")
  with pytest.raises(ValueError, match="mapping.signed='offset'"):
    ChipSpec(pair_subtraction="analog",
         mapping=dataclasses.replace(ChipSpec().mapping, signed="offset"))
  with pytest.raises(ValueError, match="adc.bits=1"):
    ChipSpec(pair_subtraction="analog", adc=periphery.ADCSpec(bits=1))
  with pytest.raises(ValueError, match="r_row"):
    ChipSpec(wires=circuit.Wires(r_row=-1.0))
  x, w = _data(16, 2, 10, 5)
  with pytest.raises(ValueError, match=r"\[\.\.\., 10\]"):
    rxjax.matmul(x[:, :9], w, key=jax.random.key(0))
  with pytest.raises(ValueError, match="fan_in, fan_out"):
    rxjax.matmul(x, w[None], key=jax.random.key(0))
  chip = crossbar.program(w, _small_tiles(ChipSpec()), key=jax.random.key(0))
  with pytest.raises(ValueError, match="transposed_read"):
    crossbar.read(jnp.ones((2, 5)), chip, _small_tiles(ChipSpec()),
                  direction="backward")


@pytest.mark.parametrize("backward, divider_exact", [
    ("straight_through", False), ("transposed_read", False),
    ("straight_through", True)])  # divider_exact is forward-only.
def test_one_solve_of_many_chips_equals_a_solve_per_tile(backward,
                                                         divider_exact):
  """`solve` of many written chips (one batch of all their tiles) gives each
  chip the `G_eff` of a direct solve of its own tiles (and the port
  admittance of the exact DAC), and equals `program` chip by chip."""
  spec = _small_tiles(ChipSpec(backward=backward, wires=circuit.Wires(
      r_row=2.0, r_col=5.0, r_source=50.0, r_sense=20.0)))
  if divider_exact:
    spec = spec.replace(dac=periphery.DACSpec(model="divider_exact"))
  ws = [_data(30 + k, 1, fi, fo)[1] for k, (fi, fo) in
        enumerate([(20, 9), (7, 13), (16, 6)])]
  keys = [jax.random.key(40 + k) for k in range(3)]
  written = [crossbar.write(w, spec, key=k) for w, k in zip(ws, keys)]
  assert all(c.g_eff is None for c in written)
  chips = jax.jit(lambda cs: crossbar.solve(cs, spec))(written)
  for w, k, before, chip in zip(ws, keys, written, chips):
    np.testing.assert_array_equal(chip.g, before.g)
    np.testing.assert_allclose(
        chip.g_eff, circuit.effective_conductance(chip.g, spec.wires),
        rtol=1e-12)
    if backward == "straight_through":
      assert chip.g_eff_bwd is None
    else:  # Non-reciprocal terminals: a backward solve of its own.
      np.testing.assert_allclose(chip.g_eff_bwd, circuit.effective_conductance(
          chip.g, spec.wires, direction="backward"), rtol=1e-12)
    if divider_exact:
      np.testing.assert_allclose(
          chip.y_port, periphery.port_admittance(chip.g, spec.wires),
          rtol=1e-12)
    else:
      assert chip.y_port is None
    one = crossbar.program(w, spec, key=k)
    for a, b in zip(jax.tree.leaves(chip), jax.tree.leaves(one)):
      np.testing.assert_allclose(a, b, rtol=1e-12, atol=0)
    assert (chip.fan_in, chip.fan_out) == w.shape
  with pytest.raises(ValueError, match="not solved"):
    crossbar.read(jnp.ones((2, 20)), written[0], spec)
  with pytest.raises(ValueError, match=r"chips\[0\]"):
    crossbar.solve(written, spec.replace(mapping=dataclasses.replace(
        spec.mapping, tile_rows=16)))


@pytest.mark.parametrize("signed", ["differential", "offset", "analog"])
@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_fold_is_the_linear_read(signed, direction):
  """`W_eff` from `fold` reproduces `read` of a linear chip, both ways
  ("analog": differential pairs subtracted before one ADC per pair)."""
  pairs = "analog" if signed == "analog" else "digital"
  signed = "differential" if signed == "analog" else signed
  spec = _small_tiles(ChipSpec(
      dac=periphery.DACSpec.ideal(),
      adc=periphery.ADCSpec(bits=None, gain_sigma=0.05),
      mapping=dataclasses.replace(ChipSpec().mapping, signed=signed),
      backward="transposed_read", pair_subtraction=pairs))
  assert spec.linear
  x, w = _data(3, 5, 19, 13)
  chip = crossbar.calibrate(crossbar.program(w, spec, key=jax.random.key(2)),
                            x, spec)
  w_eff = crossbar.fold(chip, spec, direction)
  if direction == "forward":
    x_in = jnp.clip(x, -chip.x_scale, chip.x_scale)
    np.testing.assert_allclose(x_in @ w_eff, crossbar.read(x, chip, spec),
                               rtol=1e-9, atol=1e-12)
  else:
    dy = jnp.asarray(np.random.default_rng(4).normal(size=(5, 13)))
    np.testing.assert_allclose(
        dy @ w_eff, crossbar.read(dy, chip, spec, direction="backward"),
        rtol=1e-9, atol=1e-12)
  # The chip is not ideal: W_eff differs from w.
  assert float(jnp.abs(w_eff - (w if direction == "forward" else w.T)
                       ).max()) > 1e-3


def test_aam_solver_programs_the_aam_conductance():
  """`solver="aam"` stores `circuit.aam_conductance` of the programmed
  devices, both directions, and stays close to the exact chip for ReRAM."""
  spec = _small_tiles(ChipSpec(backward="transposed_read"))
  aam = spec.replace(solver="aam", aam_paths=2)
  w = _data(3, 1, 20, 9)[1]
  key = jax.random.key(4)
  chip = crossbar.program(w, aam, key=key)
  exact = crossbar.program(w, spec, key=key)
  np.testing.assert_array_equal(chip.g, exact.g)
  np.testing.assert_allclose(
      chip.g_eff, circuit.aam_conductance(chip.g, spec.wires, paths=2),
      rtol=1e-12, atol=0)
  np.testing.assert_allclose(
      chip.g_eff_bwd, circuit.aam_conductance(
          chip.g, spec.wires, paths=2, direction="backward"),
      rtol=1e-12, atol=0)
  # The devices are 100 kOhm - 1 MOhm: the AAM is within 1e-3 of exact.
  np.testing.assert_allclose(chip.g_eff, exact.g_eff, rtol=1e-3)
  assert not np.allclose(chip.g_eff, exact.g_eff, rtol=1e-9, atol=0)
  with pytest.raises(ValueError, match="solver"):
    ChipSpec(solver="spice")
  with pytest.raises(ValueError, match="aam_paths"):
    ChipSpec(solver="aam", aam_paths=0)


def test_reprogram_at_the_same_weights_is_the_exact_chip():
  """Interpolated FCM with L = 1: the stored distortion applied to
  unchanged weights reproduces the exactly programmed chip."""
  spec = _small_tiles(ChipSpec(backward="transposed_read"))
  w = _data(8, 1, 20, 9)[1]
  key = jax.random.key(6)
  chip = crossbar.program(w, spec, key=key)
  again = crossbar.reprogram(chip, w, spec, key=key)
  for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(chip)):
    np.testing.assert_allclose(a, b, rtol=1e-14, atol=0)


def test_reprogram_interpolates_the_distortion_of_changed_weights():
  """After a weight change the stored distortion is close to the exact one:
  the error is first order in the change (0.1% of the weights' scale: 0.06%
  of the IR distortion itself) and grows with it; the calibration is
  kept."""
  spec = _small_tiles(ChipSpec(backward="transposed_read",
                           device=dataclasses.replace(ChipSpec().device,
                                                      device_bits=None)))
  spec = spec.replace(mapping=dataclasses.replace(spec.mapping,
                                                  weight_bits=None))
  _, w = _data(9, 1, 20, 9)
  key = jax.random.key(7)
  chip = crossbar.program(w, spec, key=key)
  errors = []
  for step in (0.001, 0.01, 0.1):
    w2 = w + step * jax.random.normal(jax.random.key(8), w.shape, w.dtype)
    interp = crossbar.reprogram(chip, w2, spec, key=key)
    exact = crossbar.program(w2, spec, key=key)
    np.testing.assert_allclose(interp.g, exact.g, rtol=1e-14, atol=0)
    distortion = np.abs(exact.g - exact.g_eff).max()
    err = max(np.abs(interp.g_eff - exact.g_eff).max(),
              np.abs(interp.g_eff_bwd - exact.g_eff_bwd).max())
    # First order in the change: measured err / distortion ~ 0.55 * step
    # for weights of unit scale.
    assert 0 < err < step * distortion
    errors.append(err)
    np.testing.assert_array_equal(interp.adc_full_scale, chip.adc_full_scale)
  assert errors[0] < errors[1] < errors[2]


@pytest.mark.parametrize("fan_in,fan_out,pairs", [
    (7, 5, "digital"), (20, 9, "digital"), (20, 13, "digital"),
    (20, 13, "analog")])
def test_backward_read_with_adc_matches_numpy(fan_in, fan_out, pairs):
  """The transposed read with bit-streamed errors, 4 slices and 5-bit row
  ADCs, against NumPy from the chip's backward G_eff: per-tile row currents,
  ADC range = max current over the rows that carry the fan-in, shift-and-add
  over cycles and slices, pair subtraction. Covers one tile (rows and
  columns trimmed), several tile rows (padding rows in the last) and several
  tile columns. With analog pair subtraction the row ADCs are bipolar and
  digitize the pair's difference."""
  spec = _small_tiles(ChipSpec(backward="transposed_read",
                           adc=periphery.ADCSpec(bits=5),
                           wires=RERAM_WIRES, pair_subtraction=pairs),
                      m=8, n=6)
  _, w = _data(21, 1, fan_in, fan_out)
  dy = np.random.default_rng(22).normal(size=(3, fan_out))
  chip = crossbar.program(w, spec, key=jax.random.key(9))
  y = crossbar.read(dy, chip, spec, direction="backward")

  g = np.asarray(chip.g_eff_bwd)  # [S, P, Tr, Tc, M, N]
  s, p, tr, tc, m, n = g.shape
  scale = np.abs(dy).max()
  passes = np.stack([np.maximum(dy, 0), np.maximum(-dy, 0)]) / scale
  u = np.asarray(periphery.stream(passes, spec.dac))  # [C, Q, B, F]
  u = np.pad(u, [(0, 0)] * 3 + [(0, tc * n - fan_out)])
  v = u.reshape(u.shape[:3] + (tc, n)) * spec.dac.v_read
  # Row currents of every tile: [C, Q, B, S, P, Tr, Tc, M].
  i = np.einsum("cqbtn,sprtmn->cqbsprtm", v, g)
  rows = np.arange(tr * m).reshape(tr, m) < fan_in  # Rows read.
  if pairs == "analog":
    i = i[:, :, :, :, :1] - i[:, :, :, :, 1:]
  full_scale = np.abs(i[..., rows[:, None, :].repeat(tc, 1)]).max()
  if pairs == "analog":
    i = _bipolar_numpy(i, full_scale, 5).sum(6)
  else:
    i = np.asarray(periphery.adc(i, full_scale, spec.adc)).sum(6)
  cw = periphery.cycle_weights(spec.dac)
  sw = mapping.slice_weights(spec.mapping, spec.device)
  acc = np.einsum("cqbsprm,c,s->qbprm", i, cw, sw)
  d = spec.device
  acc = acc if pairs == "analog" else acc[:, :, :1] - acc[:, :, 1:]
  z = acc[:, :, 0] / (spec.dac.v_read * (d.g_max - d.g_min))
  z = (z[0] - z[1]).reshape(3, -1)[:, :fan_in]
  np.testing.assert_allclose(y, z * scale * float(chip.w_scale), rtol=1e-9,
                             atol=1e-12 * np.abs(z).max())


def test_column_gain_is_the_per_column_least_squares_fit():
  rng = np.random.default_rng(0)
  y_chip = rng.normal(size=(4, 10, 3))
  y_chip[..., 2] = 0.0  # A column that read nothing keeps gain 1.
  y_ideal = 1.7 * y_chip + 0.1 * rng.normal(size=y_chip.shape)
  got = np.asarray(crossbar.column_gain(y_chip, y_ideal))
  a, b = y_chip.reshape(-1, 3), y_ideal.reshape(-1, 3)
  for c in range(2):
    want = np.linalg.lstsq(a[:, c:c + 1], b[:, c], rcond=None)[0][0]
    np.testing.assert_allclose(got[c], want, rtol=1e-12)
  assert got[2] == 1.0
  with pytest.raises(ValueError, match="y_chip"):
    crossbar.column_gain(y_chip, y_ideal[..., :2])
  with pytest.raises(ValueError, match="gain_correction"):
    crossbar.ChipSpec(gain_correction="row")
