"""rxjax.device.update against TxSim eq. 1 written out independently.

The reference `_eq1` below is the paper's formula in siemens, in numpy
(float64), exactly as printed (TxSim IV-C, eq. 1); the library computes it in
normalized units in another arrangement. Noise statistics are checked
against `std = gamma * |dg|` (the paper's `gamma * sqrt(g_max - g_min) *
|dG_ideal|` in normalized units) with tolerances of several standard errors.
Bounds hold for any input (hypothesis). The suite runs in float64
(tests/conftest.py); float32 is cast explicitly.
"""

import math

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rxjax import device as device_module
from rxjax.device import DeviceSpec, UpdateSpec, update

DTYPES = [jnp.float32, jnp.float64]
DEVICE = DeviceSpec()  # TxSim V: 100 kohm - 1 Mohm.
G_MIN, G_MAX = DEVICE.g_min, DEVICE.g_max
R = G_MAX - G_MIN


def _eq1(g, dg, nu, g_min=G_MIN, g_max=G_MAX):
  """TxSim eq. 1, as printed: the mean conductance change (siemens)."""
  g = np.asarray(g, np.float64)
  dg = np.asarray(dg, np.float64)
  if nu == 0:  # The limit nu -> 0 of both cases.
    return dg
  big = (g_max - g_min) / (1 - np.exp(-nu))
  # 1 - exp(-nu dG / R), written with expm1 so that the reference itself
  # does not cancel for small steps.
  factor = -np.expm1(-nu * (dg / (g_max - g_min)))
  case1 = (big + g_min - g) * factor  # dG_ideal > 0
  case2 = (big - g_max + g) * factor  # dG_ideal < 0
  return np.where(dg > 0, case1, np.where(dg < 0, case2, 0.0))


def _ulp(dtype):
  return float(jnp.finfo(dtype).eps) * G_MAX


# ---------------------------------------------------------------------------
# UpdateSpec.


def test_defaults_are_the_papers_setting_and_ideal_is_off():
  assert (UpdateSpec().nu, UpdateSpec().gamma) == (0.01, 5.0)
  assert (UpdateSpec.ideal().nu, UpdateSpec.ideal().gamma) == (0.0, 0.0)
  assert hash(UpdateSpec(0.1, 2.0)) == hash(UpdateSpec(0.1, 2.0))


@pytest.mark.parametrize("kwargs, field", [
    (dict(nu=-0.1), "nu"), (dict(nu=float("nan")), "nu"),
    (dict(nu=float("inf")), "nu"), (dict(nu="0.1"), "nu"),
    (dict(nu=True), "nu"), (dict(gamma=-1), "gamma"),
    (dict(gamma=None), "gamma"),
])
def test_invalid_specs_name_the_field_and_range(kwargs, field):
  with pytest.raises(ValueError, match=f"`{field}` must be a finite number "
                     ">= 0, got"):
    UpdateSpec(**kwargs)


# ---------------------------------------------------------------------------
# Deterministic response (gamma = 0).


@pytest.mark.parametrize("dtype", DTYPES)
def test_ideal_update_is_clipped_sum(dtype):
  rng = np.random.default_rng(0)
  g = jnp.asarray(rng.uniform(G_MIN, G_MAX, 10_000), dtype)
  dg = jnp.asarray(rng.normal(0, 0.3 * R, 10_000), dtype)
  out = update(g, dg, DEVICE, UpdateSpec.ideal(), key=None)
  assert out.dtype == dtype
  np.testing.assert_array_equal(np.asarray(out),
                                np.asarray(jnp.clip(g + dg, G_MIN, G_MAX)))
  assert 0 < np.mean(np.asarray(out) == G_MAX) < 0.5  # some were clipped.


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nu", [1e-9, 1e-6])
def test_nu_to_zero_gives_the_ideal_update(nu, dtype):
  rng = np.random.default_rng(1)
  g = jnp.asarray(rng.uniform(G_MIN + 0.2 * R, G_MAX - 0.2 * R, 1000), dtype)
  dg = jnp.asarray(rng.uniform(-0.1, 0.1, 1000) * R, dtype)
  out = update(g, dg, DEVICE, UpdateSpec(nu=nu, gamma=0.0), key=None)
  step = np.asarray(out, np.float64) - np.asarray(g, np.float64)
  # The response is dg * (1 + O(nu)).
  np.testing.assert_allclose(step, np.asarray(dg, np.float64),
                             rtol=10 * nu, atol=4 * _ulp(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nu", [0.01, 0.1, 0.5, 1.0, 3.0])
@pytest.mark.parametrize("direction", [1, -1])
def test_steps_match_eq1(nu, direction, dtype):
  rng = np.random.default_rng(2)
  n = 2000
  g = rng.uniform(G_MIN, G_MAX, n)
  dg = direction * R * 10**rng.uniform(-5, -0.5, n)
  g_d = jnp.asarray(g, dtype)
  dg_d = jnp.asarray(dg, dtype)
  out = np.asarray(update(g_d, dg_d, DEVICE, UpdateSpec(nu=nu, gamma=0.0),
                          key=None), np.float64)
  g64 = np.asarray(g_d, np.float64)
  expected = np.clip(g64 + _eq1(g64, np.asarray(dg_d, np.float64), nu),
                     G_MIN, G_MAX)
  tol = 1e-12 if dtype == jnp.float64 else 1e-6
  np.testing.assert_allclose(out, expected, rtol=tol, atol=4 * _ulp(dtype))
  # Steps that stay inside the range, measured relative to their own size.
  inside = (expected > G_MIN) & (expected < G_MAX)
  assert inside.mean() > 0.5
  if dtype == jnp.float64:
    np.testing.assert_allclose((out - g64)[inside],
                               (expected - g64)[inside], rtol=1e-9)


@pytest.mark.parametrize("nu", [0.1, 1.0])
def test_response_is_asymmetric_and_state_dependent(nu):
  u = np.linspace(0, 1, 11)
  g = G_MIN + u * R
  small = 1e-4 * R
  spec = UpdateSpec(nu=nu, gamma=0.0)
  up = np.asarray(update(g, small, DEVICE, spec, key=None)) - g
  down = g - np.asarray(update(g, -small, DEVICE, spec, key=None))
  # Potentiation shrinks towards g_max, depression towards g_min.
  assert np.all(np.diff(up[:-1]) < 0) and np.all(np.diff(down[1:]) > 0)
  # Small steps: slopes nu / (1 - e^-nu) - nu * u and ... - nu * (1 - u).
  slope = nu / (1 - math.exp(-nu))
  np.testing.assert_allclose(up[:-1] / small, (slope - nu * u)[:-1],
                             rtol=nu * 1e-4 + 1e-9)
  np.testing.assert_allclose(down[1:] / small, (slope - nu * (1 - u))[1:],
                             rtol=nu * 1e-4 + 1e-9)
  # Equal only at mid-range.
  assert up[2] > down[2] and up[8] < down[8]
  assert up[5] == pytest.approx(down[5], rel=nu * 1e-3)


def test_large_requests_saturate_at_the_bounds():
  g = jnp.asarray([G_MIN, 0.5 * (G_MIN + G_MAX), G_MAX])
  for nu in (0.0, 0.01, 1.0, 100.0):
    spec = UpdateSpec(nu=nu, gamma=0.0)
    # Exactly the bound, or (nu = 100 from g_min: g_min + R) an ulp below.
    np.testing.assert_allclose(
        np.asarray(update(g, 1e3 * R, DEVICE, spec, key=None)), G_MAX,
        rtol=1e-15)
    np.testing.assert_allclose(
        np.asarray(update(g, -1e3 * R, DEVICE, spec, key=None)), G_MIN,
        rtol=1e-15)
    np.testing.assert_array_equal(
        np.asarray(update(g, 0.0, DEVICE, spec, key=None)), np.asarray(g))


# Every spec and dtype compiles once; hypothesis varies the arrays' values.
_SPECS = [UpdateSpec(nu=0.0, gamma=0.0), UpdateSpec(nu=1e-9, gamma=10.0),
          UpdateSpec(nu=1.0, gamma=1.0), UpdateSpec(nu=60.0, gamma=0.0),
          UpdateSpec(nu=1e4, gamma=10.0)]


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(
    u=st.floats(-0.5, 1.5), x=st.floats(-1e3, 1e3),
    spec=st.sampled_from(_SPECS), seed=st.integers(0, 2**31 - 1),
    f32=st.booleans())
def test_bounds_always_hold(u, x, spec, seed, f32):
  dtype = jnp.float32 if f32 else jnp.float64
  g = jnp.full((64,), G_MIN + u * R, dtype)  # also outside the range.
  out = np.asarray(update(g, x * R, DEVICE, spec,
                          key=jax.random.key(seed)))
  assert out.dtype == dtype
  assert np.all(np.isfinite(out))
  assert np.all(out >= np.asarray(G_MIN, dtype))
  assert np.all(out <= np.asarray(G_MAX, dtype))


def test_bounds_hold_over_many_random_draws():
  rng = np.random.default_rng(3)
  n = 200_000
  g = jnp.asarray(rng.uniform(G_MIN, G_MAX, n))
  dg = jnp.asarray(rng.choice([-1, 1], n) * R * 10**rng.uniform(-6, 1, n))
  for spec in (UpdateSpec(), UpdateSpec(nu=1.0, gamma=10.0)):
    out = np.asarray(update(g, dg, DEVICE, spec, key=jax.random.key(4)))
    assert out.min() >= G_MIN and out.max() <= G_MAX
    assert (out == G_MIN).any() and (out == G_MAX).any()


# ---------------------------------------------------------------------------
# Write noise.


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nu, gamma", [(0.0, 1.0), (0.0, 5.0), (0.1, 2.0)])
def test_noise_is_gaussian_with_std_gamma_times_step(nu, gamma, dtype):
  rng = np.random.default_rng(5)
  n = 400_000
  g = jnp.asarray(rng.uniform(G_MIN + 0.4 * R, G_MAX - 0.4 * R, n), dtype)
  # Both signs, magnitudes over two decades; 5 sigma stays inside the range.
  dg = jnp.asarray(rng.choice([-1, 1], n) * R * 10**rng.uniform(-4, -2, n),
                   dtype)
  out = update(g, dg, DEVICE, UpdateSpec(nu=nu, gamma=gamma),
               key=jax.random.key(6))
  g64, dg64 = np.asarray(g, np.float64), np.asarray(dg, np.float64)
  z = (np.asarray(out, np.float64) - g64 - _eq1(g64, dg64, nu)) / np.abs(dg64)
  assert abs(z.mean()) < 6 * gamma / math.sqrt(n)
  assert abs(z.std() - gamma) < 6 * gamma / math.sqrt(2 * n)
  # Gaussian: the fourth standardized moment is 3.
  assert abs(np.mean(((z - z.mean()) / z.std())**4) - 3) < 6 * math.sqrt(
      96 / n)
  # Independent of the sign of the request.
  for sign in (1, -1):
    sel = np.sign(dg64) == sign
    assert abs(z[sel].std() - gamma) < 6 * gamma / math.sqrt(2 * sel.sum())


def test_same_key_same_update_different_keys_differ():
  rng = np.random.default_rng(7)
  g = jnp.asarray(rng.uniform(G_MIN, G_MAX, 1000))
  dg = jnp.asarray(rng.normal(0, 1e-3 * R, 1000))
  spec = UpdateSpec()
  a = update(g, dg, DEVICE, spec, key=jax.random.key(8))
  b = update(g, dg, DEVICE, spec, key=jax.random.key(8))
  c = update(g, dg, DEVICE, spec, key=jax.random.key(9))
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert np.mean(np.asarray(a) != np.asarray(c)) > 0.99
  # Raw uint32 keys work as well.
  raw = update(g, dg, DEVICE, spec, key=jax.random.PRNGKey(8))
  assert raw.shape == g.shape


def test_broadcasts_and_nests_in_jit_and_vmap():
  g = jnp.linspace(G_MIN, G_MAX, 12).reshape(3, 4)
  spec = UpdateSpec(nu=0.5, gamma=1.0)
  key = jax.random.key(10)
  out = jax.jit(lambda g, k: update(g, 1e-3 * R, DEVICE, spec, key=k))(g, key)
  assert out.shape == (3, 4)
  np.testing.assert_allclose(
      np.asarray(out),
      np.asarray(update(g, jnp.full((3, 4), 1e-3 * R), DEVICE, spec,
                        key=key)), rtol=1e-14)
  keys = jax.random.split(key, 3)
  many = jax.vmap(lambda k: update(g, 1e-3 * R, DEVICE, spec, key=k))(keys)
  np.testing.assert_array_equal(
      np.asarray(many[1]),
      np.asarray(update(g, 1e-3 * R, DEVICE, spec, key=keys[1])))


def test_non_float_g_is_refused():
  with pytest.raises(TypeError, match="`g` must be a floating-point"):
    update(jnp.arange(3), 1.0, DEVICE, UpdateSpec(), key=jax.random.key(0))


def test_large_arrays_draw_in_distinct_parts(monkeypatch):
  monkeypatch.setattr(device_module, "CHUNK", 10_000)
  shape = (3, 60, 250)  # parts of 250 elements; this shape is used only here.
  g = jnp.full(shape, 0.5 * (G_MIN + G_MAX))
  dg = 1e-3 * R
  out = np.asarray(update(g, dg, DEVICE, UpdateSpec(nu=0.0, gamma=2.0),
                          key=jax.random.key(11)))
  z = (out - np.asarray(g) - dg) / dg
  assert abs(z.std() - 2.0) < 6 * 2.0 / math.sqrt(2 * z.size)
  rows = z.reshape(-1, 250)
  assert len(np.unique(rows[:, :3], axis=0)) == rows.shape[0]
