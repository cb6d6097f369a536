"""rxjax.periphery against closed forms, numpy solves and the scipy MNA.

Each check uses a reference written here independently of the module:
integer bit arithmetic for the input streaming, the textbook divider formula
for the DAC, a dense numpy nodal solve for the exact divider, the scipy MNA
of `rxjax.reference` and circuit laws for the row-port admittance, and numpy
for the ADC and calibration. The suite runs in float64 (tests/conftest.py);
float32 cases cast explicitly.
"""

import functools
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rxjax import circuit, periphery, reference
from rxjax.circuit import Wires
from rxjax.periphery import ADCSpec, DACSpec
from regimes import REGIMES

DTYPES = ("float32", "float64")
EPS = {"float32": np.finfo(np.float32).eps, "float64": np.finfo(np.float64).eps}


def _rng(*key):
  return np.random.default_rng(zlib.crc32(repr(key).encode()))


# ---------------------------------------------------------------------------
# Input streaming.

STREAMS = [(8, 1), (8, 3), (7, 4), (8, 8), (4, 6), (8, None), (None, 1),
           (None, None)]


@pytest.mark.parametrize("bits", STREAMS, ids=str)
def test_n_cycles_and_cycle_weights(bits):
  input_bits, dac_bits = bits
  dac = DACSpec(input_bits=input_bits, dac_bits=dac_bits)
  cw = periphery.cycle_weights(dac)
  assert cw.dtype == np.float64
  if input_bits is None or dac_bits is None:
    assert periphery.n_cycles(dac) == 1
    np.testing.assert_array_equal(cw, [1.0])
    return
  c = -(-input_bits // dac_bits)
  assert periphery.n_cycles(dac) == c
  l_in, l_dac = 2**input_bits - 1, 2**dac_bits - 1
  np.testing.assert_allclose(
      cw, [l_dac * 2**(k * dac_bits) / l_in for k in range(c)], rtol=1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bits", STREAMS, ids=str)
def test_stream_round_trip(bits, dtype):
  input_bits, dac_bits = bits
  dac = DACSpec(input_bits=input_bits, dac_bits=dac_bits)
  rng = _rng("stream", bits, dtype)
  # Out-of-range values are clipped; exact grid points and halves included.
  x = rng.uniform(-0.2, 1.2, size=(7, 33)).astype(dtype)
  x[0, :5] = [0, 1, 0.5, -0.0, 1e-30]
  u = periphery.stream(jnp.asarray(x), dac)
  c = periphery.n_cycles(dac)
  assert u.shape == (c,) + x.shape and u.dtype == np.dtype(dtype)
  u = np.asarray(u, np.float64)
  xc = np.clip(x, 0, 1)
  if input_bits is None:
    np.testing.assert_array_equal(u[0], xc)
    return
  l_in = 2**input_bits - 1
  # Rounding in the input dtype, as the module does (half to even).
  q = np.round(xc * np.asarray(l_in, dtype)).astype(np.int64)
  recon = np.einsum("c...,c->...", u, periphery.cycle_weights(dac))
  np.testing.assert_allclose(recon, q / l_in, rtol=4 * EPS[dtype], atol=0)
  if dac_bits is None:
    np.testing.assert_allclose(u[0], q / l_in, rtol=EPS[dtype])
    return
  l_dac = 2**dac_bits - 1
  digits = np.round(u * l_dac)
  # On the grid k / L_dac, and the digits are those of integer arithmetic.
  np.testing.assert_allclose(u * l_dac, digits, atol=4 * EPS[dtype] * l_dac)
  for k in range(c):
    np.testing.assert_array_equal(
        digits[k], (q >> (k * dac_bits)) & (2**dac_bits - 1))
  assert u.min() >= 0 and u.max() <= 1


def test_stream_jit_static_spec():
  dac = DACSpec(input_bits=8, dac_bits=3)
  x = jnp.linspace(0, 1, 50)
  f = jax.jit(periphery.stream, static_argnums=1)
  np.testing.assert_array_equal(f(x, dac), periphery.stream(x, dac))


# ---------------------------------------------------------------------------
# Divider DAC.

R_PD, V_REF, V_READ = 10e3, 0.5, 0.25


def _divider_reference(u, g_load, g_nom, r_pd=R_PD, v_ref=V_REF,
                       v_read=V_READ):
  """Textbook divider: R_DAC from the nominal load, then loaded by g_load."""
  u = np.asarray(u, np.float64)
  t = u * v_read
  g_pd = 1 / r_pd
  # v_ref * G / (G + g_pd + g_nom) = t  =>  G = t (g_pd + g_nom) / (v_ref - t)
  g_dac = t * (g_pd + g_nom) / (v_ref - t)
  return v_ref * g_dac / (g_dac + g_pd + np.asarray(g_load, np.float64))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dac_bits", [1, 4])
def test_divider_exact_at_nominal_load_for_every_code(dac_bits, dtype):
  g_nom = 64 * (1e-6 + 1e-5) / 2
  dac = DACSpec(input_bits=dac_bits, dac_bits=dac_bits, model="divider",
                nominal_load=g_nom)
  codes = np.arange(2**dac_bits) / (2**dac_bits - 1)
  # Loads from none to 30x nominal (RxNN fig. 3a: loads 10x apart); row 2
  # is the nominal load itself.
  factors = np.array([0.0, 0.3, 1.0, 3.0, 30.0])[:, None]
  u = jnp.asarray(codes, dtype)
  v = periphery.dac_voltage(u, dac, jnp.asarray(factors * g_nom, dtype))
  assert v.dtype == np.dtype(dtype) and v.shape == (5, codes.size)
  v = np.asarray(v, np.float64)
  t = np.asarray(u, np.float64) * V_READ
  np.testing.assert_allclose(v[2], t, rtol=2 * EPS[dtype], atol=0)
  np.testing.assert_array_equal(v[:, 0], 0.0)
  rtol = 1e-5 if dtype == "float32" else 1e-13
  np.testing.assert_allclose(
      v, _divider_reference(codes, factors * g_nom, g_nom), rtol=rtol, atol=0)
  # Lighter load: higher voltage; heavier load: lower voltage.
  assert np.all(v[:2, 1:] > t[1:]) and np.all(v[3:, 1:] < t[1:])
  assert np.all(np.diff(v[:, 1:], axis=0) < 0)


def test_divider_per_row_load_and_nominal_load_sources():
  rng = _rng("divider rows")
  u = rng.uniform(0, 1, size=(4, 6))
  g_load = rng.uniform(1e-5, 1e-3, size=(6,))  # One load per row.
  dac = DACSpec(model="divider")
  v = periphery.dac_voltage(u, dac, g_load, nominal_load=2e-4)
  np.testing.assert_allclose(v, _divider_reference(u, g_load, 2e-4),
                             rtol=1e-13)
  # The spec's nominal load is used when set.
  dac_nom = DACSpec(model="divider", nominal_load=5e-4)
  np.testing.assert_allclose(
      periphery.dac_voltage(u, dac_nom, g_load),
      _divider_reference(u, g_load, 5e-4), rtol=1e-13)
  with pytest.raises(ValueError, match="nominal_load"):
    periphery.dac_voltage(u, dac, g_load)
  with pytest.raises(ValueError, match="g_load"):
    periphery.dac_voltage(u, dac, nominal_load=2e-4)
  with pytest.raises(ValueError, match="dac_voltage_exact"):
    periphery.dac_voltage(u, DACSpec(model="divider_exact"), g_load,
                          nominal_load=2e-4)
  # The ideal DAC ignores any load.
  np.testing.assert_array_equal(
      periphery.dac_voltage(u, DACSpec(), g_load), u * V_READ)


def _random_port_admittance(rng, m, batch=()):
  """A symmetric, diagonally dominant M-matrix (siemens), like a y_port."""
  w = rng.uniform(0, 1e-5, size=batch + (m, m))
  w = (w + np.swapaxes(w, -1, -2)) / 2
  w = w * (1 - np.eye(m))
  shunt = rng.uniform(1e-5, 1e-3, size=batch + (m,))
  return np.eye(m) * (shunt + w.sum(-1))[..., None] - w


def _exact_reference(u, y, g_nom):
  """Dense numpy nodal solve: Thevenin dividers driving y_port, per vector."""
  t = u * V_READ
  g_pd = 1 / R_PD
  g_dac = t * (g_pd + g_nom) / (V_REF - t)
  g_th = g_dac + g_pd
  v_th = V_REF * g_dac / g_th
  out = np.empty(np.broadcast_shapes(u.shape, y.shape[:-1]))
  for idx in np.ndindex(out.shape[:-1]):
    ui = idx[len(idx) - (u.ndim - 1):] if u.ndim > 1 else ()
    yi = idx[len(idx) - (y.ndim - 2):] if y.ndim > 2 else ()
    ui = tuple(0 if u.shape[k] == 1 else j for k, j in enumerate(ui))
    yi = tuple(0 if y.shape[k] == 1 else j for k, j in enumerate(yi))
    a = np.diag(g_th[ui]) + y[yi]
    out[idx] = np.linalg.solve(a, g_th[ui] * v_th[ui])
  return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shapes", [((7,), ()), ((3, 1, 7), (2,))], ids=str)
def test_dac_voltage_exact_dense_solve(shapes, dtype):
  u_batch, y_batch = shapes[0][:-1], shapes[1]
  m = shapes[0][-1]
  rng = _rng("exact", shapes, dtype)
  u = rng.uniform(0, 1, size=u_batch + (m,))
  y = _random_port_admittance(rng, m, y_batch)
  g_nom = 3e-4
  dac = DACSpec(model="divider_exact", nominal_load=g_nom)
  v = periphery.dac_voltage_exact(jnp.asarray(u, dtype), dac,
                                  jnp.asarray(y, dtype))
  assert v.dtype == np.dtype(dtype)
  want = _exact_reference(u, y, g_nom)
  assert v.shape == want.shape
  np.testing.assert_allclose(v, want, rtol=1e-4 if dtype == "float32"
                             else 1e-12)


def test_dac_voltage_exact_diagonal_is_the_divider():
  rng = _rng("exact diag")
  u = rng.uniform(0, 1, size=(5, 8))
  g_load = rng.uniform(1e-5, 1e-3, size=(8,))
  y = np.diag(g_load)
  v = periphery.dac_voltage_exact(u, DACSpec(model="divider_exact"), y,
                                  nominal_load=2e-4)
  np.testing.assert_allclose(
      v, periphery.dac_voltage(u, DACSpec(model="divider"), g_load,
                               nominal_load=2e-4), rtol=1e-13)
  np.testing.assert_allclose(v, _divider_reference(u, g_load, 2e-4),
                             rtol=1e-13)
  # At the nominal load on every row the output is the target.
  v = periphery.dac_voltage_exact(u, DACSpec(model="divider"),
                                  np.eye(8) * 2e-4, nominal_load=2e-4)
  np.testing.assert_allclose(v, u * V_READ, rtol=1e-14)
  with pytest.raises(ValueError, match="nominal_load"):
    periphery.dac_voltage_exact(u, DACSpec(model="divider"), y)
  with pytest.raises(ValueError, match="y_port"):
    periphery.dac_voltage_exact(u, DACSpec(model="divider"), y[:-1],
                                nominal_load=2e-4)


# ---------------------------------------------------------------------------
# Row-port admittance of a ReRAM tile.


def _reram_tile(shape, *key):
  (r_lo, r_hi), wires = REGIMES["reram"]
  g = 1 / _rng("tile", shape, *key).uniform(r_lo, r_hi, size=shape)
  return g, wires


@pytest.fixture(scope="module")
def reram_port():
  g, wires = _reram_tile((6, 5))
  return g, wires, np.asarray(periphery.port_admittance(g, wires))


def test_port_admittance_laws(reram_port):
  g, wires, y = reram_port
  assert y.shape == (6, 6)
  # (a) Reciprocity.
  np.testing.assert_allclose(y, y.T, rtol=1e-10, atol=1e-10 * np.abs(y).max())
  # (c) Current in = current out: sum_i y[i, a] = sum_j G_eff[a, j].
  g_eff = np.asarray(circuit.effective_conductance(g, wires))
  np.testing.assert_allclose(y.sum(0), g_eff.sum(-1), rtol=1e-10)
  # A driven row takes current, the others give it back (an M-matrix).
  assert np.all(np.diag(y) > 0)
  assert np.all(y[~np.eye(6, dtype=bool)] < 0)
  # The wires cost load: the diagonal is below the bare row sums.
  assert np.all(np.diag(y) < g.sum(-1))


def test_port_admittance_against_mna(reram_port):
  g, wires, y = reram_port
  want = np.empty_like(y)
  for a in range(6):
    v = np.eye(6)[a]
    v_row, _, _ = reference.node_voltages(g, v, wires)
    # Source current through r_source, from the MNA node voltages only.
    want[:, a] = (v - v_row[:, 0]) / wires.r_source
  np.testing.assert_allclose(y, want, rtol=1e-9, atol=1e-9 * np.abs(y).max())


def test_port_admittance_zero_wires_and_batch():
  g, _ = _reram_tile((2, 6, 5), "batch")
  y = periphery.port_admittance(g, Wires.ideal())
  want = np.zeros((2, 6, 6))
  for t in range(2):
    want[t] = np.diag(g[t].sum(-1))
  np.testing.assert_allclose(y, want, rtol=1e-14, atol=1e-20)
  _, wires = REGIMES["reram"]
  y = periphery.port_admittance(g, wires)
  for t in range(2):
    np.testing.assert_allclose(y[t], periphery.port_admittance(g[t], wires),
                               rtol=1e-13)
  np.testing.assert_array_equal(periphery.row_load(g), g.sum(-1))


@pytest.mark.parametrize("dtype", DTYPES)
def test_divider_exact_on_a_tile_obeys_kcl(reram_port, dtype):
  """Closed loop: the solved voltages, applied to the tile (scipy MNA), draw
  exactly the current the Thevenin dividers deliver at those voltages."""
  g, wires, y = reram_port
  u = _rng("kcl").uniform(0, 1, size=(6,))
  g_nom = 5 * (1e-6 + 1e-5) / 2
  dac = DACSpec(model="divider_exact", nominal_load=g_nom)
  v = np.asarray(periphery.dac_voltage_exact(jnp.asarray(u, dtype), dac,
                                             jnp.asarray(y, dtype)))
  v_row, _, _ = reference.node_voltages(g, v.astype(np.float64), wires)
  i_tile = (v - v_row[:, 0]) / wires.r_source
  t = u * V_READ
  g_dac = t * (1 / R_PD + g_nom) / (V_REF - t)
  i_dac = g_dac * (V_REF - v) - v / R_PD
  np.testing.assert_allclose(i_tile, i_dac,
                             rtol=1e-3 if dtype == "float32" else 1e-9)


# ---------------------------------------------------------------------------
# ADC and calibration.


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bits", [1, 4, 8])
def test_adc_grid_and_clipping(bits, dtype):
  rng = _rng("adc", bits, dtype)
  fs = 3e-5
  i = rng.uniform(-0.3 * fs, 1.3 * fs, size=(50, 9)).astype(dtype)
  out = periphery.adc(jnp.asarray(i), jnp.asarray(fs, dtype),
                      ADCSpec(bits=bits))
  assert out.dtype == np.dtype(dtype) and out.shape == i.shape
  levels = 2**bits - 1
  k = np.asarray(out, np.float64) / fs * levels
  np.testing.assert_allclose(k, np.round(k), atol=1e-4 if dtype == "float32"
                             else 1e-10)
  want = np.round(np.clip(i.astype(np.float64) / fs, 0, 1) * levels)
  # Away from rounding ties the codes are those of the closed form.
  frac = np.abs(np.clip(i / fs, 0, 1) * levels % 1 - 0.5)
  ok = frac > 1e-3
  np.testing.assert_array_equal(np.round(k)[ok], want[ok])
  np.testing.assert_array_equal(
      np.asarray(periphery.adc_codes(jnp.asarray(i), fs, ADCSpec(bits=bits)))
      [ok], want[ok])
  np.testing.assert_allclose(np.asarray(out)[i >= fs], fs, rtol=EPS[dtype])
  assert np.all(np.asarray(out)[i <= 0] == 0)


def test_adc_ideal_is_identity():
  rng = _rng("identity")
  i = rng.normal(size=(4, 7)) * 1e-5
  np.testing.assert_array_equal(periphery.adc(i, 3.3e-6, ADCSpec.ideal()), i)
  zeros = np.zeros(7)
  np.testing.assert_array_equal(
      periphery.adc(i, 3.3e-6, ADCSpec.ideal(), offset=zeros, gain=zeros), i)
  i32 = i.astype(np.float32)
  out = periphery.adc(i32, 3.3e-6, ADCSpec.ideal(), offset=zeros, gain=zeros)
  assert out.dtype == np.float32
  np.testing.assert_array_equal(out, i32)


@pytest.mark.parametrize("alpha", [-1.0, -0.3, 0.5, 1.0])
def test_adc_nonlinearity(alpha):
  fs = 2e-5
  spec = ADCSpec(bits=None, nonlinearity=alpha)
  z = np.array([0.0, 0.5, 1.0])
  out = np.asarray(periphery.adc(z * fs, fs, spec)) / fs
  np.testing.assert_allclose(out, [0.0, 0.5 + alpha / 4, 1.0], rtol=1e-15,
                             atol=1e-16)
  grid = np.linspace(-0.5, 1.5, 2001)
  curve = np.asarray(periphery.adc(grid * fs, fs, spec)) / fs
  inside = (grid >= 0) & (grid <= 1)
  np.testing.assert_allclose(curve[inside], (grid + alpha * grid * (1 - grid))
                             [inside], rtol=1e-13, atol=1e-15)
  assert np.all(np.diff(curve) >= -1e-15)  # Monotone for |alpha| <= 1.
  # The integral non-linearity peaks at mid-scale: alpha / 4.
  np.testing.assert_allclose(np.abs(curve - grid)[inside].max(),
                             abs(alpha) / 4, rtol=1e-12)
  # Quantized: the mid-scale code moves by about alpha/4 of full scale.
  q = periphery.adc(np.array([0.0, 0.5, 1.0]) * fs, fs,
                    ADCSpec(bits=8, nonlinearity=alpha))
  np.testing.assert_allclose(np.asarray(q) / fs,
                             np.round(np.array([0, 0.5 + alpha / 4, 1]) * 255)
                             / 255, atol=1e-15)


@pytest.mark.parametrize("bits", [2, 5, 8])
def test_adc_bipolar_is_sign_magnitude(bits):
  """The bipolar ADC of analog pair subtraction: 2 L + 1 levels, L =
  2**(bits-1) - 1, symmetric about an exact zero; odd (also its curve);
  clipped at +-full scale; the unipolar ADC of bits - 1 on |i|."""
  fs = 4e-6
  spec = ADCSpec(bits=bits)
  # Exactly symmetric, with zero, and off the half-step ties (rounding
  # there depends on the last bit of i / fs).
  half = (np.arange(1500) + np.sqrt(0.1)) / 1000 * fs
  i = np.concatenate([-half[::-1], [0.0], half])
  out = np.asarray(periphery.adc_bipolar(i, fs, spec))
  levels = 2 ** (bits - 1) - 1
  np.testing.assert_allclose(out, np.round(np.clip(i / fs, -1, 1) * levels)
                             / levels * fs, rtol=1e-15, atol=1e-22)
  assert len(np.unique(out)) == 2 * levels + 1
  assert periphery.adc_bipolar(np.zeros(1), fs, spec)[0] == 0
  np.testing.assert_array_equal(out, -out[::-1])
  assert out[1500] == 0
  unipolar = periphery.adc(np.abs(i), fs, ADCSpec(bits=bits - 1))
  np.testing.assert_allclose(out, np.sign(i) * unipolar, rtol=1e-15,
                             atol=1e-22)
  curved = ADCSpec(bits=None, nonlinearity=0.5)
  c = np.asarray(periphery.adc_bipolar(i, fs, curved))
  np.testing.assert_allclose(c, -c[::-1], rtol=1e-15, atol=1e-22)
  np.testing.assert_allclose(c[i > 0], periphery.adc(i[i > 0], fs, curved),
                             rtol=1e-15)
  ideal = np.random.default_rng(0).normal(size=50) * fs
  np.testing.assert_array_equal(
      periphery.adc_bipolar(ideal, fs, ADCSpec.ideal()), ideal)
  with pytest.raises(ValueError, match="bits=1"):
    periphery.adc_bipolar(i, fs, ADCSpec(bits=1))


def test_adc_per_column_offset_and_gain():
  fs = 1e-5
  n = 5
  offset = np.linspace(-0.05, 0.05, n)
  gain = np.linspace(0.1, -0.1, n)
  i = np.tile(np.linspace(0.1, 0.8, 6)[:, None] * fs, (3, 1, n))  # [3, 6, 5]
  out = np.asarray(periphery.adc(i, fs, ADCSpec.ideal(), offset=offset,
                                 gain=gain))
  np.testing.assert_allclose(out, i * (1 + gain) + offset * fs, rtol=1e-14)
  for bits in (4, 8):
    out = np.asarray(periphery.adc(i, fs, ADCSpec(bits=bits), offset=offset,
                                   gain=gain))
    levels = 2**bits - 1
    want = np.round(np.clip(i / fs * (1 + gain) + offset, 0, 1) * levels)
    np.testing.assert_allclose(out, want / levels * fs, rtol=1e-14)
    # Columns differ by their own errors only.
    assert len({tuple(out[..., j].ravel()) for j in range(n)}) > 1


def test_adc_variation_keys():
  spec = ADCSpec(offset_sigma=0.01, gain_sigma=0.02)
  key = jax.random.PRNGKey(3)
  o1, g1 = periphery.adc_variation((4, 64), spec, key=key, dtype=jnp.float32)
  o2, g2 = periphery.adc_variation((4, 64), spec, key=key, dtype=jnp.float32)
  assert o1.shape == g1.shape == (4, 64) and o1.dtype == jnp.float32
  np.testing.assert_array_equal(o1, o2)
  np.testing.assert_array_equal(g1, g2)
  o3, _ = periphery.adc_variation((4, 64), spec, key=jax.random.PRNGKey(4),
                                  dtype=jnp.float32)
  assert not np.array_equal(o1, o3)
  np.testing.assert_array_equal(
      o1, 0.01 * jax.random.normal(jax.random.fold_in(key, 0), (4, 64),
                                   jnp.float32))
  np.testing.assert_array_equal(
      g1, 0.02 * jax.random.normal(jax.random.fold_in(key, 1), (4, 64),
                                   jnp.float32))
  o, g = periphery.adc_variation((3,), ADCSpec(), key=key, dtype=jnp.float64)
  np.testing.assert_array_equal(o, np.zeros(3))
  np.testing.assert_array_equal(g, np.zeros(3))


@pytest.mark.parametrize("dtype", DTYPES)
def test_calibration(dtype):
  rng = _rng("calibrate", dtype)
  values = rng.exponential(size=(200, 17)).astype(dtype)
  got = periphery.full_scale(jnp.asarray(values), ADCSpec())
  assert got.dtype == np.dtype(dtype) and got.shape == ()
  assert float(got) == values.max()
  for p in (50.0, 99.0, 99.99, 100.0):
    got = periphery.calibrate(jnp.asarray(values), "percentile", p)
    np.testing.assert_allclose(got, np.percentile(values.astype(np.float64),
                                                  p),
                               rtol=1e-6 if dtype == "float32" else 1e-13)
  x = -values  # input_scale uses |x|.
  dac = DACSpec(calibration="percentile", percentile=99.0)
  np.testing.assert_allclose(periphery.input_scale(jnp.asarray(x), dac),
                             np.percentile(values.astype(np.float64), 99.0),
                             rtol=1e-6 if dtype == "float32" else 1e-13)
  # Calibrated range: max-calibrated currents reach the top code exactly.
  fs = periphery.full_scale(jnp.asarray(values), ADCSpec())
  out = periphery.adc(jnp.asarray(values), fs, ADCSpec(bits=6))
  assert float(out.max()) == float(fs)
  # All-zero data: 1.0, never a division by zero.
  assert float(periphery.calibrate(jnp.zeros(5, dtype))) == 1.0
  np.testing.assert_array_equal(
      periphery.calibrate(jnp.asarray(values), axis=0), values.max(0))
  with pytest.raises(ValueError, match="calibration"):
    periphery.calibrate(values, "mean")


def test_jit_with_static_specs():
  dac = DACSpec(model="divider", nominal_load=1e-4)
  adc_spec = ADCSpec(bits=6, nonlinearity=0.2)

  def pipeline(x, dac, adc_spec):
    u = periphery.stream(x, dac)
    v = periphery.dac_voltage(u, dac, jnp.full(x.shape[-1:], 2e-4, x.dtype))
    i = v.sum(0) * 1e-5
    return periphery.adc(i, periphery.full_scale(i, adc_spec), adc_spec)

  x = jnp.linspace(0, 1, 12, dtype=jnp.float32).reshape(3, 4)
  out = jax.jit(pipeline, static_argnums=(1, 2))(x, dac, adc_spec)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, pipeline(x, dac, adc_spec), rtol=1e-6)


# ---------------------------------------------------------------------------
# Validation.


@pytest.mark.parametrize("kwargs, field", [
    (dict(dac_bits=0), "dac_bits"),
    (dict(input_bits=True), "input_bits"),
    (dict(input_bits=2.0), "input_bits"),
    (dict(v_read=0.0), "v_read"),
    (dict(v_ref=0.25), "v_ref"),
    (dict(v_ref=0.1), "v_ref"),
    (dict(v_ref=float("inf")), "v_ref"),
    (dict(r_pd=-1.0), "r_pd"),
    (dict(r_pd=0.0), "r_pd"),
    (dict(model="spice"), "model"),
    (dict(calibration="mean"), "calibration"),
    (dict(percentile=0.0), "percentile"),
    (dict(percentile=100.5), "percentile"),
    (dict(nominal_load=-1e-4), "nominal_load"),
])
def test_invalid_dac_spec(kwargs, field):
  with pytest.raises(ValueError, match=f"`{field}`") as info:
    DACSpec(**kwargs)
  assert repr(next(iter(kwargs.values()))) in str(info.value)


@pytest.mark.parametrize("kwargs, field", [
    (dict(bits=True), "bits"),
    (dict(bits=0), "bits"),
    (dict(percentile=0), "percentile"),
    (dict(nonlinearity=2.0), "nonlinearity"),
    (dict(nonlinearity=float("nan")), "nonlinearity"),
    (dict(offset_sigma=-0.1), "offset_sigma"),
    (dict(gain_sigma=-0.1), "gain_sigma"),
    (dict(calibration="min"), "calibration"),
])
def test_invalid_adc_spec(kwargs, field):
  with pytest.raises(ValueError, match=f"`{field}`") as info:
    ADCSpec(**kwargs)
  assert repr(next(iter(kwargs.values()))) in str(info.value)


def test_ideal_specs_and_hashable():
  assert DACSpec.ideal() == DACSpec(input_bits=None, dac_bits=None)
  assert ADCSpec.ideal().bits is None
  assert len({DACSpec(), DACSpec(), ADCSpec(), ADCSpec.ideal()}) == 3
