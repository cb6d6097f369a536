"""Circuit-aware re-training gradients (`rxjax.circuit_grad`, issue 21).

References: central finite differences of the chip's loss (the chip
re-programmed with the exact solve at w +- h), the digital model's autodiff
in the ideal limit, and the straight-through formula `x.T @ dL/dy`.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rxjax import circuit
from rxjax import crossbar
from rxjax import experiment
from rxjax import nn as rnn
from rxjax import validate

from configs import lenet_mnist  # pylint: disable=g-import-not-at-top


class _Two(nn.Module):
  """Two dense layers without biases (so the second layer's inputs scale
  with the first's)."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Dense(5, use_bias=False)(x))
    return nn.Dense(3, use_bias=False)(x)


def _chip(**overrides):
  """Full precision, 4 x 4 tiles (the layers span 2 x 2 tile grids) of
  10 kOhm - 100 kOhm devices with 10% variation and real wires: every G_eff
  differs from g by percents."""
  spec = crossbar.ChipSpec.ideal(
      mapping=dataclasses.replace(crossbar.ChipSpec.ideal().mapping,
                                  tile_rows=4, tile_cols=4),
      wires=circuit.Wires(r_row=40.0, r_col=60.0, r_source=200.0,
                          r_sense=150.0))
  spec = spec.replace(device=dataclasses.replace(
      spec.device, r_min=1e4, r_max=1e5, sigma=0.1))
  return spec.replace(**overrides)


def _problem(seed=0):
  x = jax.random.normal(jax.random.key(seed), (8, 6), jnp.float64)
  y = jnp.arange(8) % 3
  model = _Two()
  variables = jax.tree.map(lambda a: a.astype(jnp.float64),
                           model.init(jax.random.key(seed + 1), x))
  return model, dict(variables), x, y


def _loss(logits, y):
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def _chip_loss(model, params, x, y, spec, key):
  """The chip's loss: the weights programmed exactly (calibrated on 2 x, so
  that nothing clips at x or at w +- h), then read."""
  chips = rnn.program(model, {"params": params}, 2 * x, spec, key=key)
  return _loss(rnn.apply(model, {"params": params}, chips, x, spec), y)


def _grad(model, params, chips, x, y, spec, backward):
  def loss(p):
    kw = {} if backward == "straight_through" else {"backward": backward}
    out = rnn.apply(model, {"params": p}, chips, x, spec,
                    refresh=backward == "straight_through", **kw)
    logits = out[0] if backward == "straight_through" else out
    return _loss(logits, y)
  return jax.value_and_grad(loss)(params)


def _flat(tree):
  return np.concatenate([np.ravel(a) for a in jax.tree.leaves(tree)])


def test_circuit_gradient_equals_finite_differences_of_the_chips_loss():
  model, variables, x, y = _problem()
  spec = _chip()
  key = jax.random.key(7)
  params = variables["params"]
  chips = rnn.program(model, variables, 2 * x, spec, key=key)
  value, grad = _grad(model, params, chips, x, y, spec, "circuit")
  assert np.isclose(value, _chip_loss(model, params, x, y, spec, key),
                    rtol=1e-12)
  h = 1e-6
  leaves, treedef = jax.tree.flatten(params)
  g_leaves = jax.tree.leaves(grad)
  checked = 0
  for li, leaf in enumerate(leaves):
    flat = np.asarray(leaf).ravel()
    # A few weights per layer, and each layer's largest |w| (it sets the
    # mapping's scale w_max).
    picks = {0, 3, flat.size - 1, int(np.argmax(np.abs(flat)))}
    for i in sorted(picks):
      def at(delta):
        bumped = list(leaves)
        bumped[li] = jnp.asarray(flat.copy()).at[i].add(delta).reshape(
            leaf.shape)
        return _chip_loss(model, jax.tree.unflatten(treedef, bumped), x, y,
                          spec, key)
      fd = (at(h) - at(-h)) / (2 * h)
      got = np.asarray(g_leaves[li]).ravel()[i]
      assert abs(got - fd) <= 1e-6 * max(abs(fd), 1e-3), (li, i, got, fd)
      checked += 1
  assert checked >= 6
  # Not the straight-through gradient: the wires change it by percents.
  _, st = _grad(model, params, chips, x, y, spec, "straight_through")
  rel = np.linalg.norm(_flat(st) - _flat(grad)) / np.linalg.norm(_flat(grad))
  assert rel > 0.02, rel


def test_in_the_ideal_limit_every_backward_is_the_digital_gradient():
  model, variables, x, y = _problem(1)
  spec = crossbar.ChipSpec.ideal()
  chips = rnn.program(model, variables, 2 * x, spec, key=jax.random.key(0))
  digital = jax.grad(lambda p: _loss(model.apply({"params": p}, x), y))(
      variables["params"])
  for backward in validate.RETRAIN_BACKWARDS:
    _, g = _grad(model, variables["params"], chips, x, y, spec, backward)
    np.testing.assert_allclose(_flat(g), _flat(digital), rtol=1e-10,
                               atol=1e-14)


def test_interpolated_gradient_is_exact_where_the_chip_was_programmed():
  """At the weights the chip was programmed with, the stored distortion is
  the exact one: the forward values agree; the gradients differ only by the
  distortion's own derivative, which the interpolated form drops."""
  model, variables, x, y = _problem(2)
  spec = _chip()
  chips = rnn.program(model, variables, 2 * x, spec, key=jax.random.key(3))
  p = variables["params"]
  v_exact, g_exact = _grad(model, p, chips, x, y, spec, "circuit")
  v_interp, g_interp = _grad(model, p, chips, x, y, spec,
                             "circuit_interpolated")
  _, g_st = _grad(model, p, chips, x, y, spec, "straight_through")
  assert np.isclose(v_exact, v_interp, rtol=1e-12)
  err = lambda g: np.linalg.norm(_flat(g) - _flat(g_exact)) / np.linalg.norm(
      _flat(g_exact))
  assert err(g_interp) < err(g_st), (err(g_interp), err(g_st))


def _one_dense_layer(seed: int):
  """A bias-free 6 -> 5 dense layer in float64, 8 inputs (key `seed`) and
  their labels; the layer initialised with key `seed + 1`."""
  x = jax.random.normal(jax.random.key(seed), (8, 6), jnp.float64)
  y = jnp.arange(8) % 5
  model = nn.Dense(5, use_bias=False)
  variables = jax.tree.map(lambda a: a.astype(jnp.float64),
                           model.init(jax.random.key(seed + 1), x))
  return model, variables, x, y


def test_straight_through_weight_gradient_is_x_transpose_dy():
  """RxNN re-training, unchanged: on a non-ideal chip the weight gradient
  is `x.T @ dL/dy` at the chip's output, whatever the wires do."""
  model, variables, x, y = _one_dense_layer(4)
  spec = _chip()
  chips = rnn.program(model, variables, 2 * x, spec, key=jax.random.key(6))
  _, grad = _grad(model, variables["params"], chips, x, y, spec,
                  "straight_through")
  logits = rnn.apply(model, variables, chips, x, spec)
  dy = jax.grad(lambda z: _loss(z, y))(logits)
  np.testing.assert_allclose(grad["kernel"], x.T @ dy, rtol=1e-12)


def test_quantized_weights_and_converters_read_the_chip():
  """8-bit weights in 2-bit slices, 8-bit DACs and ADCs: the circuit step's
  forward value is the chip's own read at the programmed weights."""
  model, variables, x, y = _problem(3)
  fine = _chip()
  coarse = fine.replace(
      mapping=dataclasses.replace(fine.mapping, weight_bits=8),
      device=dataclasses.replace(fine.device, device_bits=2),
      dac=crossbar.ChipSpec().dac, adc=crossbar.ChipSpec().adc)
  assert not coarse.linear
  chips = rnn.program(model, variables, 2 * x, coarse, key=jax.random.key(8))
  for backward in ("circuit", "circuit_interpolated"):
    value, grad = _grad(model, variables["params"], chips, x, y, coarse,
                        backward)
    read = _loss(rnn.apply(model, variables, chips, x, coarse), y)
    assert np.isclose(value, read, rtol=1e-12)
    assert np.all(np.isfinite(_flat(grad))) and np.any(_flat(grad) != 0)


def test_quantized_converters_pass_the_gradient_straight_through():
  """With 8-bit DACs and ADCs (full-precision weights) the weight gradient
  is the full-precision chip's circuit gradient (the one that matches finite
  differences) taken at the quantized read's output error."""
  model, variables, x, y = _one_dense_layer(9)
  fine = _chip()
  coarse = fine.replace(dac=crossbar.ChipSpec().dac,
                        adc=crossbar.ChipSpec().adc)
  key = jax.random.key(11)
  p = variables["params"]
  chips = rnn.program(model, variables, 2 * x, coarse, key=key)
  _, grad = _grad(model, p, chips, x, y, coarse, "circuit")
  dy = jax.grad(lambda z: _loss(z, y))(
      rnn.apply(model, variables, chips, x, coarse))
  chips_fine = rnn.program(model, variables, 2 * x, fine, key=key)
  _, vjp = jax.vjp(lambda q: rnn.apply(model, {"params": q}, chips_fine, x,
                                       fine, backward="circuit"), p)
  (want,) = vjp(dy)
  np.testing.assert_allclose(_flat(grad), _flat(want), rtol=1e-9)


def test_a_bad_retrain_backward_fails_before_any_work(tmp_path):
  config = lenet_mnist.get_config()
  config.retrain.backward = "exact"
  with pytest.raises(validate.ConfigError) as e:
    experiment.train_and_evaluate(config, str(tmp_path / "run"))
  assert e.value.field == "retrain.backward"
  assert "`retrain.backward`" in str(e.value) and "'circuit'" in str(e.value)
  assert "'exact'" in str(e.value)
  assert not (tmp_path / "run").exists()
  config.retrain.backward = "circuit"
  config.chip.backward = "transposed_read"
  with pytest.raises(validate.ConfigError, match="chip.backward"):
    validate.check(config)
  config.chip.backward = "straight_through"
  assert validate.check(config).retrain_backward == "circuit"
  assert validate.check(lenet_mnist.get_config()).retrain_backward == (
      "straight_through")


def test_bad_backward_arguments_are_refused():
  model, variables, x, _ = _problem(4)
  with pytest.raises(ValueError, match="`backward` must be one of"):
    rnn.apply(model, variables, {}, x, _chip(), backward="exact")
  with pytest.raises(ValueError, match="neither `refresh`"):
    rnn.apply(model, variables, {}, x, _chip(), backward="circuit",
              refresh=True)
  with pytest.raises(ValueError, match="needs a chip `spec`"):
    experiment.train_step(model, optax.sgd(0.1), None, backward="circuit")
