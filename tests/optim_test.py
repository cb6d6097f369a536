"""rxjax.optim.apply_device_response against digital SGD and TxSim eq. 1.

References: with every non-ideality off the chain must train exactly like
`optax.sgd` (with and without momentum) to float rounding; with `nu > 0` one
step must equal eq. 1 (written out independently below) applied to the two
devices of each pair; the write noise of the realized weights must have the
standard deviation `gamma * |dw| / sqrt(2)` (two devices, each asked for half
the change). The suite runs in float64 (tests/conftest.py); float32 is cast
explicitly.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rxjax import mapping
from rxjax.device import DeviceSpec, UpdateSpec
from rxjax.optim import (DeviceUpdateState, apply_device_response,
                         pair_conductances, pair_weights, update_pair)

DTYPES = [jnp.float32, jnp.float64]
DEVICE = DeviceSpec()
G_MIN, G_MAX = DEVICE.g_min, DEVICE.g_max
R = G_MAX - G_MIN


def _eq1(g, dg, nu):
  """TxSim eq. 1 as printed (siemens, float64): the mean change."""
  big = R / (1 - math.exp(-nu))
  factor = -np.expm1(-nu * dg / R)  # 1 - exp(-nu dG / R)
  return np.where(dg > 0, (big + G_MIN - g) * factor,
                  np.where(dg < 0, (big - G_MAX + g) * factor, 0.0))


def _params(dtype, seed=0):
  """A small network: two dense layers, a conv kernel and their biases."""
  rng = np.random.default_rng(seed)

  def normal(*shape):
    return jnp.asarray(0.3 * rng.normal(size=shape), dtype)

  return {
      "conv": {"kernel": normal(3, 3, 2, 4), "bias": jnp.zeros((4,), dtype)},
      "dense": {"kernel": normal(8, 16), "bias": jnp.zeros((16,), dtype)},
      "out": {"kernel": normal(16, 1), "bias": jnp.zeros((1,), dtype)},
  }


def _loss(params, x, y):
  """Quadratic loss of a tiny network that uses every leaf."""
  patches = x[:, :18].reshape(-1, 3, 3, 2)
  conv = jnp.einsum("bhwc,hwcd->bd", patches, params["conv"]["kernel"])
  conv = conv + params["conv"]["bias"]
  h = jnp.tanh(x[:, :8] @ params["dense"]["kernel"]
               + params["dense"]["bias"])
  h = h + jnp.tile(conv, (1, 4))
  out = h @ params["out"]["kernel"] + params["out"]["bias"]
  return jnp.mean((out - y)**2)


def _data(dtype):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(32, 18)), dtype)
  y = jnp.asarray(rng.normal(size=(32, 1)), dtype)
  return x, y


def _train(txs, params, steps, dtype):
  """Trains with every transformation of `txs` from `params`, in lockstep.

  One jitted step runs them all (one compilation instead of one each).
  Returns, per transformation, the params, the state and the losses before
  every step.
  """
  x, y = _data(dtype)

  @jax.jit
  def step(carry):
    out, losses = [], []
    for tx, (params, state) in zip(txs, carry):
      loss, grads = jax.value_and_grad(_loss)(params, x, y)
      updates, state = tx.update(grads, state, params)
      out.append((optax.apply_updates(params, updates), state))
      losses.append(loss)
    return out, losses

  carry = [(params, tx.init(params)) for tx in txs]
  losses = []
  for _ in range(steps):
    carry, loss = step(carry)
    losses.append(loss)
  losses = np.asarray(losses, np.float64).T
  return [(p, s, list(l)) for (p, s), l in zip(carry, losses)]


def _device_state(state) -> DeviceUpdateState:
  return state[-1]


# ---------------------------------------------------------------------------
# The per-leaf pure functions.


@pytest.mark.parametrize("dtype", DTYPES)
def test_pairs_start_mid_range_and_round_trip(dtype):
  w = jnp.asarray(np.linspace(-1.5, 1.5, 31), dtype)
  g = pair_conductances(w, jnp.asarray(1.5, dtype), DEVICE)
  assert g.shape == (2, 31) and g.dtype == dtype
  mid = 0.5 * (G_MIN + G_MAX)
  np.testing.assert_allclose(np.asarray(g[:, 15]), mid, rtol=1e-6)
  np.testing.assert_allclose(np.asarray(g[:, 0]), [G_MIN, G_MAX], rtol=1e-6)
  np.testing.assert_allclose(np.asarray(g[0] + g[1]), 2 * mid, rtol=1e-6)
  back = pair_weights(g, jnp.asarray(1.5, dtype), DEVICE)
  assert back.dtype == dtype
  tol = 1e-14 if dtype == jnp.float64 else 1e-6
  np.testing.assert_allclose(np.asarray(back), np.asarray(w), atol=tol * 1.5)
  # Beyond w_scale the pair saturates.
  g = pair_conductances(jnp.asarray([3.0, -3.0], dtype), 1.5, DEVICE)
  np.testing.assert_allclose(np.asarray(pair_weights(g, 1.5, DEVICE)),
                             [1.5, -1.5], rtol=1e-6)


def test_pair_weights_are_mapping_unmap_of_one_analog_slice():
  rng = np.random.default_rng(1)
  w = jnp.asarray(rng.normal(size=(5, 7)))
  g = pair_conductances(w, 3.0, DEVICE)
  spec = mapping.MappingSpec(tile_rows=5, tile_cols=7, weight_bits=None)
  device = DeviceSpec.ideal(r_min=DEVICE.r_min, r_max=DEVICE.r_max)
  layout = g[None, :, None, None]  # [S=1, P=2, Tr=1, Tc=1, M, N]
  np.testing.assert_allclose(
      np.asarray(mapping.unmap(layout, 3.0, spec, device, (5, 7))),
      np.asarray(pair_weights(g, 3.0, DEVICE)), rtol=1e-14)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nu", [0.1, 1.0])
def test_one_step_is_eq1_on_both_devices(nu, dtype):
  rng = np.random.default_rng(2)
  w_scale = 2.0
  w = jnp.asarray(rng.uniform(-1.8, 1.8, 500), dtype)
  dw = jnp.asarray(rng.choice([-1, 1], 500) * 10**rng.uniform(-4, -1, 500),
                   dtype)
  g = pair_conductances(w, w_scale, DEVICE)
  new = update_pair(g, dw, w_scale, DEVICE, UpdateSpec(nu=nu, gamma=0.0),
                    key=None)
  g64 = np.asarray(g, np.float64)
  dg = R / 2 * np.asarray(dw, np.float64) / w_scale
  # Positive device asked for +dg/2 of the pair's dg, negative for -dg/2.
  pos = np.clip(g64[0] + _eq1(g64[0], dg, nu), G_MIN, G_MAX)
  neg = np.clip(g64[1] + _eq1(g64[1], -dg, nu), G_MIN, G_MAX)
  ulp = 4 * float(jnp.finfo(dtype).eps) * G_MAX
  np.testing.assert_allclose(np.asarray(new[0], np.float64), pos, atol=ulp,
                             rtol=0)
  np.testing.assert_allclose(np.asarray(new[1], np.float64), neg, atol=ulp,
                             rtol=0)
  realized = (pos - neg) / R * w_scale - np.asarray(w, np.float64)
  requested = np.asarray(dw, np.float64)
  # The response is non-ideal: it is not the request.
  assert np.max(np.abs(realized / requested - 1)) > 0.01 * nu


# ---------------------------------------------------------------------------
# The Optax transformation.


@pytest.mark.parametrize("dtype", DTYPES)
def test_ideal_device_trains_exactly_like_sgd(dtype):
  params = _params(dtype)
  lr = 0.02
  txs = []
  for momentum in (None, 0.9):
    txs.append(optax.sgd(lr, momentum=momentum))
    txs.append(optax.chain(
        optax.sgd(lr, momentum=momentum),
        apply_device_response(UpdateSpec.ideal(), key=jax.random.key(0))))
  runs = _train(txs, params, 25, dtype)
  tol = 2e-5 if dtype == jnp.float32 else 1e-12
  for (p_dig, _, loss_dig), (p_dev, state, loss_dev) in (runs[:2], runs[2:]):
    assert loss_dig[-1] < 0.7 * loss_dig[0]  # it trains.
    ds = _device_state(state)
    for leaf in ("conv", "dense", "out"):
      w = np.asarray(p_dev[leaf]["kernel"], np.float64)
      scale = float(ds.w_scale[leaf]["kernel"])
      # No weight reached the edge of its pair's range (the device clips).
      assert np.max(np.abs(w)) < 0.9 * scale
      # The params are the weights the pairs hold (numpy: no eager compiles).
      g = np.asarray(ds.g[leaf]["kernel"], np.float64)
      np.testing.assert_allclose(w, scale * (g[0] - g[1]) / R, atol=tol,
                                 rtol=0)
    for a, b in zip(jax.tree.leaves(p_dev), jax.tree.leaves(p_dig)):
      assert a.dtype == dtype
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=tol,
                                 rtol=0)
    np.testing.assert_allclose(loss_dev, loss_dig, rtol=tol * 10)


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_ideal_device_stays_in_range(dtype):
  params = _params(dtype)
  spec = UpdateSpec(nu=1.0, gamma=10.0)
  # A large learning rate drives devices into their bounds.
  tx = optax.chain(optax.sgd(0.5, momentum=0.9),
                   apply_device_response(spec, key=jax.random.key(1),
                                         headroom=1.0))
  [(params, state, _)] = _train([tx], params, 20, dtype)
  ds = _device_state(state)
  for leaf in ("conv", "dense", "out"):
    g = np.asarray(ds.g[leaf]["kernel"])
    assert g.dtype == dtype
    assert g.min() >= np.asarray(G_MIN, dtype)
    assert g.max() <= np.asarray(G_MAX, dtype)
    scale = float(ds.w_scale[leaf]["kernel"])
    assert np.max(np.abs(np.asarray(params[leaf]["kernel"]))) <= scale * (
        1 + 1e-5)
    assert ds.g[leaf]["bias"] is None and ds.w_scale[leaf]["bias"] is None
  hit = np.concatenate([np.asarray(g).ravel()
                        for g in jax.tree.leaves(ds.g)])
  assert np.isclose(hit, G_MIN).any() and np.isclose(hit, G_MAX).any()
  assert int(ds.count) == 20


def test_biases_and_1d_leaves_pass_through_digitally():
  params = _params(jnp.float64)
  params["scale"] = jnp.ones(())  # a scalar leaf.
  requested = jax.tree.map(lambda p: 0.1 * jnp.ones_like(p), params)
  tx = apply_device_response(UpdateSpec(nu=1.0, gamma=10.0),
                             key=jax.random.key(3))
  out, _ = jax.jit(tx.update)(requested, tx.init(params), params)
  for leaf in ("conv", "dense", "out"):
    np.testing.assert_array_equal(np.asarray(out[leaf]["bias"]),
                                  np.asarray(requested[leaf]["bias"]))
    assert not np.allclose(np.asarray(out[leaf]["kernel"]), 0.1)
  np.testing.assert_array_equal(np.asarray(out["scale"]), 0.1)


@pytest.mark.parametrize("dtype", DTYPES)
def test_realized_noise_has_std_gamma_over_sqrt2_of_the_request(dtype):
  gamma = 3.0
  rng = np.random.default_rng(3)
  n = 200_000
  params = {"w": jnp.asarray(rng.uniform(-0.5, 0.5, (n // 100, 100)), dtype)}
  tx = apply_device_response(UpdateSpec(nu=0.0, gamma=gamma),
                             key=jax.random.key(2), w_max=1.0)
  dw = jnp.asarray(rng.choice([-1, 1], (n // 100, 100))
                   * 10**rng.uniform(-4, -3, (n // 100, 100)), dtype)
  state = tx.init(params)
  realized, state = tx.update({"w": dw}, state, params)
  z = ((np.asarray(realized["w"], np.float64) - np.asarray(dw, np.float64))
       / np.abs(np.asarray(dw, np.float64)))
  std = gamma / math.sqrt(2)
  # float32: a weight near 0.5 is resolved to ~3e-8, 3e-4 of the noise.
  assert abs(z.mean()) < 6 * std / math.sqrt(n)
  assert abs(z.std() - std) < 6 * std / math.sqrt(2 * n) + (
      1e-3 if dtype == jnp.float32 else 0)


def test_same_key_same_numbers_different_keys_and_steps_differ():
  params = _params(jnp.float64)
  grads = jax.jit(jax.grad(_loss))(params, *_data(jnp.float64))
  spec = UpdateSpec()
  tx = apply_device_response(spec, key=jax.random.key(5))
  update = jax.jit(tx.update)

  def one_step(state):
    updates, _ = update(grads, state, params)
    return np.concatenate([np.asarray(u).ravel()
                           for u in jax.tree.leaves(updates)])

  state = tx.init(params)
  a = one_step(state)
  again = apply_device_response(spec, key=jax.random.key(5)).init(params)
  np.testing.assert_array_equal(a, one_step(again))
  assert np.mean(a != one_step(state._replace(key=jax.random.key(6)))) > 0.5
  # The step count is folded into the key: step 1 draws other noise.
  step1 = state._replace(count=jnp.asarray(1, jnp.int32))
  assert np.mean(a != one_step(step1)) > 0.5


def test_jit_matches_eager_and_state_evolves():
  rng = np.random.default_rng(4)
  params = {"w": jnp.asarray(rng.normal(size=(4, 3))), "b": jnp.zeros(3)}
  grads = {"w": jnp.asarray(rng.normal(size=(4, 3))), "b": jnp.ones(3)}
  tx = optax.chain(optax.sgd(0.1, momentum=0.9),
                   apply_device_response(UpdateSpec(), key=jax.random.key(7)))
  state = tx.init(params)
  eager, s_eager = tx.update(grads, state, params)
  jitted, s_jit = jax.jit(tx.update)(grads, state, params)
  for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12,
                               atol=1e-15)
  ds = _device_state(s_jit)
  assert int(ds.count) == 1 and int(_device_state(state).count) == 0
  np.testing.assert_array_equal(jax.random.key_data(ds.key),
                                jax.random.key_data(jax.random.key(7)))


def test_paper_setting_still_trains():
  # TxSim's non-ideal setting (nu = 0.01, gamma = 5). The noise is
  # proportional to the step, so a step size that is stable digitally can
  # diverge with it (with momentum 0.9 and lr 0.02 this network does).
  params = _params(jnp.float64)
  tx = optax.chain(optax.sgd(0.02),
                   apply_device_response(UpdateSpec(nu=0.01, gamma=5.0),
                                         key=jax.random.key(8)))
  [(_, _, losses)] = _train([tx], params, 40, jnp.float64)
  assert losses[-1] < 0.5 * losses[0]


def test_w_max_scalar_pytree_and_default_headroom():
  params = _params(jnp.float64)
  top = {k: float(jnp.max(jnp.abs(params[k]["kernel"]))) for k in params}
  default = apply_device_response(UpdateSpec(), key=jax.random.key(0))
  ds = default.init(params)
  for k in params:
    assert float(ds.w_scale[k]["kernel"]) == pytest.approx(2 * top[k])
  ds = apply_device_response(UpdateSpec(), key=jax.random.key(0),
                             w_max=4.0).init(params)
  assert all(float(ds.w_scale[k]["kernel"]) == 4.0 for k in params)
  given = {k: {"kernel": i + 1.0, "bias": None}
           for i, k in enumerate(params)}
  ds = apply_device_response(UpdateSpec(), key=jax.random.key(0),
                             w_max=given).init(params)
  assert [float(ds.w_scale[k]["kernel"]) for k in params] == [1.0, 2.0, 3.0]
  # An all-zero layer gets w_scale = 1.
  zero = apply_device_response(UpdateSpec(), key=jax.random.key(0)).init(
      {"w": jnp.zeros((2, 3))})
  assert float(zero.w_scale["w"]) == 1.0


@pytest.mark.parametrize("kwargs, match", [
    (dict(headroom=0.5), "`headroom` must be a finite number >= 1"),
    (dict(headroom=float("inf")), "`headroom` must be a finite number >= 1"),
    (dict(w_max=0.0), "`w_max` must be None, a finite number > 0"),
    (dict(w_max=-1), "`w_max` must be None, a finite number > 0"),
    (dict(spec=None), "`spec` must be an UpdateSpec"),
    (dict(device="reram"), "`device` must be a DeviceSpec"),
])
def test_invalid_arguments_are_refused(kwargs, match):
  args = dict(spec=UpdateSpec(), key=jax.random.key(0))
  args.update(kwargs)
  spec = args.pop("spec")
  with pytest.raises(ValueError, match=match):
    apply_device_response(spec, **args)


def test_update_without_params_is_refused():
  params = {"w": jnp.ones((2, 2))}
  tx = apply_device_response(UpdateSpec(), key=jax.random.key(0))
  with pytest.raises(ValueError, match="needs `params`"):
    tx.update(params, tx.init(params))
