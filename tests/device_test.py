"""rxjax.device against closed-form statistics of its distributions.

Every random effect is checked on a large array against the moments it is
defined by (mean 1 and std sigma of the lognormal / normal variation, its
skewness, the write-noise std, binomial stuck fractions, the read-noise std),
with tolerances of several standard errors. Deterministic properties: same
key same chip, effects drawing independently, all-off is the identity, dtypes
are kept. The suite runs in float64 (tests/conftest.py); float32 is cast
explicitly.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rxjax import device as device_module
from rxjax.device import DeviceSpec, read, vary

N_SAMPLES = 1_000_000
DTYPES = [jnp.float32, jnp.float64]
OFF = dict(sigma=0.0, write_noise=0.0, stuck_at_min=0.0, stuck_at_max=0.0,
           read_noise=0.0)


def _spec(**kwargs):
  """A spec with every effect off except those given."""
  return DeviceSpec(**{**OFF, **kwargs})


def _g(spec, n=N_SAMPLES, dtype=jnp.float64, seed=0):
  """Conductances uniform over the middle of [g_min, g_max] (siemens)."""
  rng = np.random.default_rng(seed)
  lo = spec.g_min + 0.25 * (spec.g_max - spec.g_min)
  hi = spec.g_min + 0.75 * (spec.g_max - spec.g_min)
  return jnp.asarray(rng.uniform(lo, hi, n), dtype)


def _skewness(x):
  x = np.asarray(x, np.float64)
  c = x - x.mean()
  return (c**3).mean() / (c**2).mean()**1.5


# ---------------------------------------------------------------------------
# DeviceSpec.


def test_conductance_range_is_inverse_resistance():
  spec = DeviceSpec(r_min=20e3, r_max=500e3)
  assert spec.g_max == pytest.approx(1 / 20e3, rel=1e-15)
  assert spec.g_min == pytest.approx(1 / 500e3, rel=1e-15)


def test_defaults_match_the_design():
  spec = DeviceSpec()
  assert (spec.r_min, spec.r_max, spec.device_bits) == (100e3, 1e6, 2)
  assert (spec.variation, spec.sigma, spec.read_noise) == ("lognormal", 0.1, 0)


def test_ideal_is_continuous_and_clean():
  spec = DeviceSpec.ideal(r_min=10e3, r_max=1e5)
  assert spec.device_bits is None
  assert (spec.r_min, spec.r_max) == (10e3, 1e5)
  assert spec == _spec(r_min=10e3, r_max=1e5, device_bits=None)


@pytest.mark.parametrize("kwargs, field", [
    (dict(r_min=1e6, r_max=1e6), "r_min"),
    (dict(r_min=2e6, r_max=1e6), "r_min"),
    (dict(r_min=-1.0), "r_min"),
    (dict(r_min=0.0), "r_min"),
    (dict(r_max=-5.0), "r_max"),
    (dict(r_max=math.inf), "r_max"),
    (dict(r_min=math.nan), "r_min"),
    (dict(device_bits=0), "device_bits"),
    (dict(device_bits=-2), "device_bits"),
    (dict(device_bits=2.0), "device_bits"),
    (dict(device_bits=True), "device_bits"),
    (dict(variation="uniform"), "variation"),
    (dict(sigma=-0.1), "sigma"),
    (dict(sigma=math.nan), "sigma"),
    (dict(write_noise=-1e-3), "write_noise"),
    (dict(read_noise=math.inf), "read_noise"),
    (dict(stuck_at_min=1.5), "stuck_at_min"),
    (dict(stuck_at_max=-0.1), "stuck_at_max"),
    (dict(stuck_at_min=0.6, stuck_at_max=0.5), "stuck_at_max"),
])
def test_invalid_specs_name_the_field(kwargs, field):
  with pytest.raises(ValueError, match=f"`{field}`"):
    DeviceSpec(**kwargs)


def test_r_min_not_below_r_max_says_g_min_not_below_g_max():
  with pytest.raises(ValueError, match="g_min >= g_max"):
    DeviceSpec(r_min=2e6, r_max=1e6)


def test_edge_values_are_valid():
  DeviceSpec(device_bits=1, stuck_at_min=0.5, stuck_at_max=0.5)
  DeviceSpec(device_bits=None, sigma=0.0, variation="normal")
  DeviceSpec(stuck_at_max=1.0)


def test_spec_is_hashable():
  assert hash(DeviceSpec()) == hash(DeviceSpec())


# ---------------------------------------------------------------------------
# vary.


@pytest.mark.parametrize("dtype", DTYPES)
def test_all_off_is_identity(dtype):
  spec = _spec()
  g = _g(spec, n=1000, dtype=dtype)
  out = vary(g, spec, key=jax.random.key(0))
  assert out.dtype == dtype
  np.testing.assert_array_equal(np.asarray(out), np.asarray(g))
  np.testing.assert_array_equal(
      np.asarray(vary(g, DeviceSpec.ideal(), key=jax.random.key(1))),
      np.asarray(g))


@pytest.mark.parametrize("dtype", DTYPES)
def test_dtype_and_shape_kept(dtype):
  spec = DeviceSpec(sigma=0.1, write_noise=0.01, stuck_at_min=0.1,
                    stuck_at_max=0.1, read_noise=0.05)
  g = _g(spec, n=2 * 3 * 4 * 5, dtype=dtype).reshape(2, 3, 4, 5)
  out = vary(g, spec, key=jax.random.key(0))
  assert out.shape == g.shape and out.dtype == dtype
  out = read(g, spec, key=jax.random.key(0))
  assert out.shape == g.shape and out.dtype == dtype


def test_same_key_same_chip_different_keys_differ():
  spec = DeviceSpec(sigma=0.1, write_noise=0.01, stuck_at_min=0.05,
                    stuck_at_max=0.05)
  g = _g(spec, n=10_000)
  a = vary(g, spec, key=jax.random.key(3))
  b = vary(g, spec, key=jax.random.key(3))
  c = vary(g, spec, key=jax.random.key(4))
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert np.mean(np.asarray(a) != np.asarray(c)) > 0.99


def test_raw_uint32_keys_work():
  spec = DeviceSpec(sigma=0.1)
  g = _g(spec, n=100)
  a = vary(g, spec, key=jax.random.PRNGKey(7))
  b = vary(g, spec, key=jax.random.PRNGKey(7))
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert not np.array_equal(np.asarray(a), np.asarray(g))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("variation", ["lognormal", "normal"])
def test_variation_has_mean_one_and_std_sigma(variation, dtype):
  sigma = 0.2
  spec = _spec(variation=variation, sigma=sigma)
  g = _g(spec, dtype=dtype)
  out = vary(g, spec, key=jax.random.key(11))
  ratio = np.asarray(out, np.float64) / np.asarray(g, np.float64)
  n = ratio.size
  # Standard errors: mean sigma/sqrt(n); std about sigma*sqrt((kurt-1)/4n),
  # (kurt - 1) / 4 < 1 for both at sigma = 0.2.
  assert abs(ratio.mean() - 1) < 6 * sigma / math.sqrt(n)
  assert abs(ratio.std() - sigma) < 6 * sigma / math.sqrt(n)
  # Shape: the skewness of a lognormal with cv sigma is (sigma^2 + 3) sigma,
  # of a normal 0 (standard error ~ sqrt(6 / n) ~ 0.0025, more when skewed).
  expected_skew = (sigma**2 + 3) * sigma if variation == "lognormal" else 0.0
  assert abs(_skewness(ratio) - expected_skew) < 0.03
  if variation == "lognormal":
    s = math.sqrt(math.log(1 + sigma**2))
    log_ratio = np.log(ratio)
    assert abs(log_ratio.mean() + s**2 / 2) < 6 * s / math.sqrt(n)
    assert abs(log_ratio.std() - s) < 6 * s / math.sqrt(n)


def test_normal_variation_is_clipped_at_zero():
  spec = _spec(variation="normal", sigma=1.0)
  g = _g(spec)
  out = np.asarray(vary(g, spec, key=jax.random.key(2)))
  assert out.min() == 0.0
  # P(1 + N(0, 1) < 0) = Phi(-1).
  p = 0.5 * math.erfc(1 / math.sqrt(2))
  frac = np.mean(out == 0)
  assert abs(frac - p) < 6 * math.sqrt(p * (1 - p) / out.size)
  # Variation may leave [g_min, g_max] (documented): nothing clips above.
  assert out.max() > spec.g_max


@pytest.mark.parametrize("dtype", DTYPES)
def test_write_noise_is_additive_with_std_fraction_of_range(dtype):
  write_noise = 0.05
  spec = _spec(write_noise=write_noise)
  g = _g(spec, dtype=dtype)
  diff = (np.asarray(vary(g, spec, key=jax.random.key(5)), np.float64)
          - np.asarray(g, np.float64))
  std = write_noise * (spec.g_max - spec.g_min)
  n = diff.size
  assert abs(diff.mean()) < 6 * std / math.sqrt(n)
  assert abs(diff.std() - std) < 6 * std / math.sqrt(2 * n) + 1e-6 * std
  assert abs(_skewness(diff)) < 0.02


@pytest.mark.parametrize("dtype", DTYPES)
def test_stuck_fractions_match_rates(dtype):
  p_min, p_max = 0.1, 0.03
  spec = _spec(stuck_at_min=p_min, stuck_at_max=p_max)
  g = _g(spec, dtype=dtype)
  out = np.asarray(vary(g, spec, key=jax.random.key(6)))
  g_np = np.asarray(g)
  at_min = out == np.asarray(spec.g_min, dtype)
  at_max = out == np.asarray(spec.g_max, dtype)
  n = out.size
  for frac, p in ((at_min.mean(), p_min), (at_max.mean(), p_max)):
    assert abs(frac - p) < 6 * math.sqrt(p * (1 - p) / n)
  # Every other cell is untouched.
  rest = ~(at_min | at_max)
  np.testing.assert_array_equal(out[rest], g_np[rest])


def test_stuck_rate_one_sticks_every_cell():
  spec = _spec(stuck_at_max=1.0)
  out = np.asarray(vary(_g(spec, n=1000), spec, key=jax.random.key(0)))
  assert np.all(out == spec.g_max)


def test_effects_draw_independently():
  """Switching one effect on does not change another's draws."""
  key = jax.random.key(9)
  base = dict(variation="lognormal", sigma=0.1)
  g = _g(_spec(), n=100_000)
  varied = np.asarray(vary(g, _spec(**base), key=key))
  with_stuck = np.asarray(
      vary(g, _spec(**base, stuck_at_min=0.2, stuck_at_max=0.1), key=key))
  unstuck = (with_stuck != _spec().g_min) & (with_stuck != _spec().g_max)
  assert 0.6 < unstuck.mean() < 0.8
  np.testing.assert_array_equal(with_stuck[unstuck], varied[unstuck])

  # The stuck mask does not depend on variation or write noise.
  stuck_only = np.asarray(vary(g, _spec(stuck_at_min=0.2, stuck_at_max=0.1),
                               key=key))
  all_on = np.asarray(vary(g, _spec(**base, write_noise=0.02,
                                    stuck_at_min=0.2, stuck_at_max=0.1),
                           key=key))
  g_min, g_max = _spec().g_min, _spec().g_max
  np.testing.assert_array_equal(stuck_only == g_min, all_on == g_min)
  np.testing.assert_array_equal(stuck_only == g_max, all_on == g_max)

  # Variation draws do not depend on the write noise: the difference is the
  # write noise alone, whose std is known.
  noisy = np.asarray(vary(g, _spec(**base, write_noise=0.02), key=key))
  std = 0.02 * (g_max - g_min)
  write = noisy - varied
  assert abs(write.std() - std) < 0.02 * std

  # And the effects are uncorrelated with each other (distinct streams):
  # correlation coefficients of independent samples are ~N(0, 1 / n).
  factor = varied / np.asarray(g)
  tol = 6 / math.sqrt(g.size)
  assert abs(np.corrcoef(factor, write)[0, 1]) < tol
  assert abs(np.corrcoef(factor, stuck_only == g_min)[0, 1]) < tol
  assert abs(np.corrcoef(factor, stuck_only == g_max)[0, 1]) < tol
  assert abs(np.corrcoef(write, stuck_only == g_min)[0, 1]) < tol


def test_vary_under_jit_matches_eager():
  spec = DeviceSpec(sigma=0.1, write_noise=0.01, stuck_at_min=0.05)
  g = _g(spec, n=1000)
  key = jax.random.key(1)
  jitted = jax.jit(vary, static_argnames="spec")(g, spec, key=key)
  # Same draws; XLA may fuse the arithmetic differently (1 ulp).
  np.testing.assert_allclose(np.asarray(jitted),
                             np.asarray(vary(g, spec, key=key)), rtol=1e-14)


def test_vary_over_keys_with_vmap():
  spec = DeviceSpec(sigma=0.1)
  g = _g(spec, n=100)
  keys = jax.random.split(jax.random.key(0), 3)
  chips = jax.vmap(lambda k: vary(g, spec, key=k))(keys)
  for i in range(3):
    np.testing.assert_array_equal(np.asarray(chips[i]),
                                  np.asarray(vary(g, spec, key=keys[i])))


# ---------------------------------------------------------------------------
# read.


@pytest.mark.parametrize("dtype", DTYPES)
def test_read_noise_off_is_identity(dtype):
  spec = DeviceSpec(sigma=0.3, write_noise=0.1, read_noise=0.0)
  g = _g(spec, n=1000, dtype=dtype)
  out = read(g, spec, key=jax.random.key(0))
  assert out.dtype == dtype
  np.testing.assert_array_equal(np.asarray(out), np.asarray(g))


@pytest.mark.parametrize("dtype", DTYPES)
def test_read_noise_is_relative_with_std(dtype):
  read_noise = 0.03
  spec = _spec(read_noise=read_noise)
  g = _g(spec, dtype=dtype)
  a = read(g, spec, key=jax.random.key(1))
  b = read(g, spec, key=jax.random.key(2))
  rel = np.asarray(a, np.float64) / np.asarray(g, np.float64) - 1
  n = rel.size
  assert abs(rel.mean()) < 6 * read_noise / math.sqrt(n)
  assert abs(rel.std() - read_noise) < 6 * read_noise / math.sqrt(2 * n)
  # A new key per VMM: two reads differ.
  assert np.mean(np.asarray(a) != np.asarray(b)) > 0.99


def test_read_noise_clipped_at_zero():
  spec = _spec(read_noise=2.0)
  out = np.asarray(read(_g(spec, n=100_000), spec, key=jax.random.key(0)))
  assert out.min() == 0.0
  p = 0.5 * math.erfc(0.5 / math.sqrt(2))  # P(1 + 2 N(0, 1) < 0)
  assert abs(np.mean(out == 0) - p) < 6 * math.sqrt(p * (1 - p) / out.size)


# ---------------------------------------------------------------------------
# Large arrays are drawn in parts (rxjax.device.CHUNK elements at a time).


@pytest.fixture
def small_chunk(monkeypatch):
  """Parts of at most 10_000 elements; the shapes below are used nowhere else
  (jit caches by shape, and a cached trace would keep the real chunk)."""
  monkeypatch.setattr(device_module, "CHUNK", 10_000)


def test_parts_have_the_statistics_and_are_distinct(small_chunk):
  sigma, p_max = 0.2, 0.05
  spec = _spec(sigma=sigma, stuck_at_max=p_max)
  shape = (40, 100, 250)  # parts of 250 elements (100 * 250 > 10_000).
  g = _g(spec, n=math.prod(shape)).reshape(shape)
  key = jax.random.key(21)
  out = np.asarray(vary(g, spec, key=key))
  np.testing.assert_array_equal(out, np.asarray(vary(g, spec, key=key)))
  stuck = out == spec.g_max
  n = out.size
  assert abs(stuck.mean() - p_max) < 6 * math.sqrt(p_max * (1 - p_max) / n)
  ratio = (out / np.asarray(g))[~stuck]
  assert abs(ratio.mean() - 1) < 6 * sigma / math.sqrt(ratio.size)
  assert abs(ratio.std() - sigma) < 6 * sigma / math.sqrt(ratio.size)
  # Parts draw from different keys: no two rows of 250 repeat.
  rows = (out / np.asarray(g)).reshape(-1, 250)
  assert len(np.unique(rows[:, :3], axis=0)) == rows.shape[0]
  # Read noise goes through the same parts.
  rspec = _spec(read_noise=0.03)
  rel = np.asarray(read(g, rspec, key=key)) / np.asarray(g) - 1
  assert abs(rel.std() - 0.03) < 6 * 0.03 / math.sqrt(2 * n)
  assert len(np.unique(rel.reshape(-1, 250)[:, :3], axis=0)) == n // 250


def test_parts_when_last_axis_exceeds_chunk(small_chunk):
  spec = _spec(sigma=0.1)
  g = _g(spec, n=2 * 12_345).reshape(2, 12_345)  # drawn whole.
  ratio = np.asarray(vary(g, spec, key=jax.random.key(0))) / np.asarray(g)
  assert abs(ratio.mean() - 1) < 6 * 0.1 / math.sqrt(ratio.size)
