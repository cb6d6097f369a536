"""Flax layers on crossbars against the digital layers and the raw read.

References: `nn.Dense` / `nn.Conv` (digital, and the ideal chip limit), the
explicit per-layer `crossbar.read` of the layer's patches through the same
chip (folded fast path), plain autodiff of the digital model (gradients), a
Python loop over chips (vmap).
"""

import dataclasses
import json
import os
import re
import subprocess
import sys
import textwrap
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rxjax import circuit, crossbar, periphery
from rxjax import nn as rnn
from rxjax.nn import conv as nn_conv
from rxjax.crossbar import ChipSpec

# Small tiles so that layers span several tile rows and columns.
_MAP = dataclasses.replace(ChipSpec().mapping, tile_rows=16, tile_cols=8)
# Linear read (folds into W_eff) with every circuit non-ideality on.
LINEAR = ChipSpec(mapping=_MAP, dac=periphery.DACSpec.ideal(),
              adc=periphery.ADCSpec.ideal())
# Exercises the general (scan) read, but ideal: reproduces x @ w.
_MAP_FULL = dataclasses.replace(_MAP, weight_bits=None)
IDEAL = ChipSpec.ideal(mapping=_MAP_FULL)
IDEAL_GENERAL = ChipSpec.ideal(dac=periphery.DACSpec(input_bits=40,
                                                 dac_bits=None),
                           mapping=_MAP_FULL)
DEFAULT_SMALL = ChipSpec(mapping=_MAP)

CONVS = [
    dict(kernel_size=(3, 3), padding="SAME"),
    dict(kernel_size=(3, 2), strides=(2, 1), padding="VALID"),
    dict(kernel_size=(3, 3), padding=((1, 2), (0, 1)), kernel_dilation=2),
    dict(kernel_size=(3, 3), padding=1, feature_group_count=2),
    dict(kernel_size=(1, 1), input_dilation=2, padding=((1, 0), (0, 1))),
    dict(kernel_size=(5,), padding="SAME"),  # 1-D.
    # Flax's input paddings, a weight mask, more than 3 spatial dims.
    dict(kernel_size=(3, 3), padding="CIRCULAR", strides=(1, 2)),
    dict(kernel_size=(2, 3), padding="REFLECT", kernel_dilation=(1, 2)),
    dict(kernel_size=(3,), padding="CAUSAL", kernel_dilation=2),
    dict(kernel_size=(3, 3), padding="SAME_LOWER",
         mask=np.tril(np.ones((3, 3, 4, 8)))),
    dict(kernel_size=(2, 2, 2, 2), padding="VALID", strides=2),  # 4-D.
]


class Net(nn.Module):
  """A conv (parameterized) -> relu -> dense network of plain Linen layers."""
  conv: dict

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(8, **self.conv)(x)
    x = nn.relu(x)
    return nn.Dense(5)(x.reshape(x.shape[0], -1))


def _setup(conv, seed=0):
  nd = len(conv["kernel_size"])
  shape = (3,) + (7,) * nd + (4,)
  x = jax.random.normal(jax.random.key(seed), shape, jnp.float64)
  model = Net(conv)
  variables = model.init(jax.random.key(seed + 1), x)
  variables = jax.tree.map(lambda a: a.astype(jnp.float64), variables)
  return model, variables, x


def _rel(a, b):
  return float(jnp.abs(a - b).max() / jnp.abs(b).max())


@pytest.mark.parametrize("conv, spec", [(c, IDEAL) for c in CONVS] + [
    (c, IDEAL_GENERAL) for c in (CONVS[2], CONVS[3], CONVS[6], CONVS[9])])
def test_ideal_chip_reproduces_the_digital_model(conv, spec):
  model, variables, x = _setup(conv)
  chips = rnn.program(model, variables, x, spec, key=jax.random.key(3))
  y = rnn.apply(model, variables, chips, x, spec)
  assert _rel(y, model.apply(variables, x)) < 1e-9


@pytest.mark.parametrize("conv", CONVS[:4])
def test_folded_layer_equals_the_explicit_read_of_its_patches(conv):
  """The fast path (`W_eff` in a native conv) is the chip's own read."""
  model, variables, x = _setup(conv)
  chips = rnn.program(model, variables, x, LINEAR, key=jax.random.key(4))
  y_model = rnn.apply(model, variables, chips, x, LINEAR)
  # Conv layer by hand: patches through `crossbar.read` of each group.
  params = variables["params"]
  layer = nn.Conv(8, **conv)
  geometry = nn_conv.conv_geometry(layer)
  kernel = params["Conv_0"]["kernel"]
  patches, out_spatial = geometry.patches(x)
  c = chips["Conv_0"]["chip"]
  outs = [crossbar.read(patches[g], jax.tree.map(lambda a: a[g], c), LINEAR)
          for g in range(geometry.groups)]
  h = jnp.concatenate(outs, axis=-1).reshape(x.shape[:1] + out_spatial
                                             + (8,))
  h = nn.relu(h + params["Conv_0"]["bias"])
  d = jax.tree.map(lambda a: a[0], chips["Dense_0"]["chip"])
  y_ref = crossbar.read(h.reshape(3, -1), d, LINEAR) + params["Dense_0"][
      "bias"]
  assert _rel(y_model, y_ref) < 1e-9
  # And the chip really is non-ideal.
  assert _rel(y_model, model.apply(variables, x)) > 1e-3


def test_crossbar_modules_match_linen_and_share_its_parameters():
  x = jax.random.normal(jax.random.key(0), (2, 6, 6, 4), jnp.float64)
  for ours, theirs in [
      (rnn.CrossbarConv(6, (3, 3), strides=2, feature_group_count=2),
       nn.Conv(6, (3, 3), strides=2, feature_group_count=2)),
      (rnn.CrossbarDense(3), nn.Dense(3))]:
    v = jax.tree.map(lambda a: a.astype(jnp.float64),
                     theirs.init(jax.random.key(1), x))
    assert (jax.tree.map(jnp.shape, ours.init(jax.random.key(1), x))
            == jax.tree.map(jnp.shape, v))
    assert _rel(ours.apply(v, x), theirs.apply(v, x)) < 1e-12
    on_chip = ours.clone(spec=IDEAL)
    # The module's own spec wins over `program`'s (None: plain layers
    # digital); it reads its chips by itself.
    chips = rnn.program(on_chip, v, x, None, key=jax.random.key(2))
    assert set(chips) == {"chip", "key", "w_eff", "w_eff_bwd", "gain"}
    y = on_chip.apply({**v, "chips": chips}, x)
    assert _rel(y, theirs.apply(v, x)) < 1e-9
    assert _rel(rnn.apply(on_chip, v, chips, x, None), y) == 0.0


def test_kernel_matrix_round_trip_and_patch_order():
  kernel = jax.random.normal(jax.random.key(0), (3, 2, 3, 6))
  w = rnn.kernel_to_matrix(kernel, groups=2)
  assert w.shape == (2, 3 * 3 * 2, 3)
  np.testing.assert_array_equal(rnn.matrix_to_kernel(w, (3, 2)), kernel)
  geometry = nn_conv.ConvGeometry((3, 2), 1, "SAME", 1, 1, 2)
  x = jax.random.normal(jax.random.key(1), (2, 5, 5, 6))
  p, out_spatial = geometry.patches(x)
  y = jnp.concatenate([p[g] @ w[g] for g in range(2)], -1)
  np.testing.assert_allclose(y.reshape(2, 5, 5, 6), geometry(x, kernel),
                             atol=1e-5)


def test_one_key_is_one_chip_and_vmap_over_keys_equals_a_loop():
  model, variables, x = _setup(CONVS[0])
  spec = DEFAULT_SMALL
  keys = jax.random.split(jax.random.key(7), 3)
  program = jax.jit(lambda k: rnn.program(model, variables, x, spec, key=k))
  run = jax.jit(lambda c: rnn.apply(model, variables, c, x, spec))
  loop = [run(program(k)) for k in keys]
  batched = jax.vmap(lambda k: run(program(k)))(keys)
  for i in range(3):
    assert _rel(batched[i], loop[i]) < 1e-9
  assert _rel(loop[0], loop[1]) > 1e-3  # Different chips differ.
  assert _rel(run(program(keys[0])), loop[0]) == 0.0  # Same key, same chip.


class TwoConvs(nn.Module):
  """Two convolutions: under vmap over chips the second one's input carries
  the chip axis too."""

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Conv(6, (3, 3))(x))
    x = nn.relu(nn.Conv(4, (3, 3), strides=2)(x))
    return nn.Dense(3)(x.reshape(x.shape[0], -1))


def test_folded_convolutions_under_vmap_equal_a_loop_values_and_gradients():
  """The folded layers' own vmap rule (`rxjax.nn.stages.chipwise`): vmapped over chips
  (kernel, clip range and, from the second layer on, the input batched) and
  over inputs alone, values and gradients equal a loop over the same chips
  and inputs."""
  model = TwoConvs()
  x = jax.random.normal(jax.random.key(0), (2, 7, 7, 3), jnp.float64)
  variables = jax.tree.map(lambda a: a.astype(jnp.float64),
                           model.init(jax.random.key(1), x))
  keys = jax.random.split(jax.random.key(2), 3)
  chips = jax.jit(jax.vmap(
      lambda k: rnn.program(model, variables, x, LINEAR, key=k)))(keys)

  def loss(v, chips, x):
    return jnp.sum(jnp.sin(rnn.apply(model, v, chips, x, LINEAR)))

  step = jax.jit(jax.value_and_grad(loss, argnums=(0, 2)))
  loop = [step(variables, jax.tree.map(lambda a: a[i], chips), x)
          for i in range(3)]
  batched = jax.jit(jax.vmap(step, in_axes=(None, 0, None)))(variables, chips,
                                                             x)
  for i, want in enumerate(loop):
    got = jax.tree.map(lambda a: a[i], batched)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      assert _rel(a, b) < 1e-12
  assert _rel(loop[0][0], loop[1][0]) > 1e-4  # The chips differ.
  # Inputs alone batched: one chip, three input sets.
  xs = jax.random.normal(jax.random.key(3), (3,) + x.shape, jnp.float64)
  one = jax.tree.map(lambda a: a[0], chips)
  batched = jax.vmap(lambda x: rnn.apply(model, variables, one, x, LINEAR))(xs)
  for i in range(3):
    assert _rel(batched[i],
                rnn.apply(model, variables, one, xs[i], LINEAR)) < 1e-12


def test_programming_solves_every_layer_of_the_network_exactly():
  """`program` solves all layers' tiles in one batch: each layer's stored
  `G_eff` is the direct solve of its stored conductances, for one chip and
  for chips vmapped over keys."""
  model, variables, x = _setup(CONVS[3])  # Two conv groups and a dense.
  spec = DEFAULT_SMALL.replace(backward="transposed_read")
  program = lambda k: rnn.program(model, variables, x, spec, key=k)
  keys = jax.random.split(jax.random.key(3), 2)
  for chips in [jax.jit(program)(keys[0]),
                jax.tree.map(lambda a: a[1], jax.jit(jax.vmap(program))(keys))]:
    layers = [chips[name]["chip"] for name in ("Conv_0", "Dense_0")]
    assert layers[0].g.shape[0] == 2  # Groups.
    for chip in layers:
      want = circuit.effective_conductance(chip.g, spec.wires)
      np.testing.assert_allclose(chip.g_eff, want, rtol=1e-12)
      np.testing.assert_allclose(chip.g_eff_bwd, want, rtol=1e-12)


def test_a_step_that_programs_equals_program_then_read():
  """`apply(program_key=k)` (programming inside the forward pass) gives the
  output and chips of `program(key=k)` followed by `apply`."""
  model, variables, x = _setup(CONVS[0])
  spec = DEFAULT_SMALL
  key = jax.random.key(4)
  chips = rnn.program(model, variables, x, spec, key=key)
  y = rnn.apply(model, variables, chips, x, spec)
  y_one, state = rnn.apply(model, variables, None, x, spec, program_key=key)
  assert _rel(y_one, y) < 1e-12
  plain = lambda a: (jax.random.key_data(a)
                     if jnp.issubdtype(a.dtype, jax.dtypes.prng_key) else a)
  for a, b in zip(jax.tree.leaves(state["chips"]), jax.tree.leaves(chips)):
    np.testing.assert_allclose(plain(a), plain(b), rtol=1e-12, atol=0)


def test_refresh_reuses_the_stored_distortion():
  model, variables, x = _setup(CONVS[0])
  spec = LINEAR
  chips = rnn.program(model, variables, x, spec, key=jax.random.key(1))
  y = rnn.apply(model, variables, chips, x, spec)
  y_same, state = rnn.apply(model, variables, chips, x, spec, refresh=True)
  assert _rel(y_same, y) < 1e-12  # Unchanged weights: exact.
  # Changed weights: close to a fresh exact programming of the same chip.
  moved = jax.tree.map(lambda a: a * 1.05, variables)
  y_refresh, _ = rnn.apply(model, moved, chips, x, spec, refresh=True)
  exact = rnn.program(model, moved, x, spec, key=jax.random.key(1))
  y_exact = rnn.apply(model, moved, exact, x, spec)
  assert _rel(y_refresh, y_exact) < 0.02


@pytest.mark.parametrize("backward", ["straight_through", "transposed_read"])
@pytest.mark.parametrize("spec", [IDEAL, IDEAL_GENERAL],
                         ids=["folded", "scan"])
def test_gradients_in_the_ideal_limit_equal_autodiff(spec, backward):
  model, variables, x = _setup(CONVS[3])
  spec = spec.replace(backward=backward)
  chips = rnn.program(model, variables, x, spec, key=jax.random.key(1))
  loss = lambda p, x: jnp.sum(
      rnn.apply(model, {"params": p}, chips, x, spec) ** 2)
  ref = lambda p, x: jnp.sum(model.apply({"params": p}, x) ** 2)
  g, gx = jax.grad(loss, (0, 1))(variables["params"], x)
  g_ref, gx_ref = jax.grad(ref, (0, 1))(variables["params"], x)
  for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
    assert _rel(a, b) < 1e-8
  assert _rel(gx, gx_ref) < 1e-8


def test_transposed_read_gradient_goes_through_the_chip():
  model, variables, x = _setup(CONVS[0])
  spec = LINEAR.replace(backward="transposed_read")
  chips = rnn.program(model, variables, x, spec, key=jax.random.key(1))
  dense = jax.tree.map(lambda a: a[0], chips["Dense_0"]["chip"])
  h = jax.random.normal(jax.random.key(2), (3, dense.fan_in))
  dy = jax.random.normal(jax.random.key(3), (3, 5))
  layer = nn.Dense(5)
  v = {"params": variables["params"]["Dense_0"],
       "chips": jax.tree.map(lambda a: a, chips["Dense_0"])}
  with rnn.on_crossbars(spec):
    _, vjp = jax.vjp(lambda h: layer.apply(v, h), h)
  np.testing.assert_allclose(
      vjp(dy)[0], crossbar.read(dy, dense, spec, direction="backward"),
      rtol=1e-9, atol=1e-12)


def test_errors_are_clear():
  model, variables, x = _setup(CONVS[0])
  with pytest.raises(ValueError, match="no programmed chip"):
    rnn.apply(model, variables, {}, x, LINEAR)
  with pytest.raises(ValueError, match="`mode` must be one of"):
    rnn.mode_spec("analog")
  with pytest.raises(ValueError, match="`padding` must be"):
    nn_conv.ConvGeometry((3, 3), 1, "WRAP", 1, 1, 1)
  with pytest.raises(ValueError, match="'CAUSAL' padding is only"):
    nn_conv.ConvGeometry((3, 3), 1, "CAUSAL", 1, 1, 1)
  layer = rnn.CrossbarConv(8, (3, 3), mask=np.ones((3, 3, 2, 8)))
  with pytest.raises(ValueError, match="`mask` must have the kernel's shape"):
    layer.init(jax.random.key(0), x)


def test_any_batch_dims_as_flax_takes_them():
  """A conv layer on inputs with two batch dims and with none, against
  `nn.Conv` in the ideal-chip limit (Flax flattens the batch dims)."""
  model = nn.Conv(6, (3, 3), padding="CIRCULAR")
  x = jax.random.normal(jax.random.key(0), (2, 3, 7, 7, 4), jnp.float64)
  variables = jax.tree.map(lambda a: a.astype(jnp.float64),
                           model.init(jax.random.key(1), x))
  chips = rnn.program(model, variables, x, IDEAL, key=jax.random.key(2))
  for inputs in (x, x[0, 0]):
    y = rnn.apply(model, variables, chips, inputs, IDEAL)
    assert y.shape == inputs.shape[:-1] + (6,)
    assert _rel(y, model.apply(variables, inputs)) < 1e-9


def test_layers_left_digital_are_reported():
  """Layers with weights that `on_crossbars` does not map warn, once per
  class under Python's default filter (however many layers and passes);
  the mapped ones do not."""

  class Mixed(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = nn.DenseGeneral((2, 3))(x)
      return nn.Dense(4)(nn.DenseGeneral(5)(x.reshape(x.shape[0], -1)))

  x = jax.random.normal(jax.random.key(0), (3, 6), jnp.float64)
  variables = Mixed().init(jax.random.key(1), x)
  with warnings.catch_warnings(record=True) as record:
    warnings.simplefilter("default")
    chips = rnn.program(Mixed(), variables, x, IDEAL, key=jax.random.key(2))
    y = rnn.apply(Mixed(), variables, chips, x, IDEAL)
  ours = [w for w in record if "run digitally" in str(w.message)]
  assert len(ours) == 1  # Not nn.Dense; DenseGeneral once (two layers).
  assert re.match("DenseGeneral layers .* run digitally", str(ours[0].message))
  assert _rel(y, Mixed().apply(variables, x)) < 1e-6  # float32 params
  assert set(chips) == {"Dense_0"}  # Only nn.Dense was programmed.


def test_modes_from_the_same_parameters():
  assert rnn.mode_spec("digital") is None
  ideal = rnn.mode_spec("ideal", DEFAULT_SMALL)
  assert all(v is None or float(v) == 0.0  # Every wire resistance zero.
             for v in dataclasses.astuple(ideal.wires))
  assert ideal.device.sigma == 0
  assert ideal.mapping == DEFAULT_SMALL.mapping  # Precision kept.
  assert ideal.adc.bits == DEFAULT_SMALL.adc.bits
  assert rnn.mode_spec("nonideal", DEFAULT_SMALL) is DEFAULT_SMALL
  model, variables, x = _setup(CONVS[0])
  y = {}
  for mode in rnn.MODES:
    spec = rnn.mode_spec(mode, DEFAULT_SMALL)
    chips = rnn.program(model, variables, x, spec, key=jax.random.key(0))
    y[mode] = rnn.apply(model, variables, chips, x, spec)
  # Precision alone costs less than precision plus the circuit.
  assert _rel(y["ideal"], y["digital"]) < _rel(y["nonideal"], y["digital"])


@pytest.mark.parametrize("k,strides,padding,lhs_dil,rhs_dil", [
    ((5, 5), (1, 1), "VALID", (1, 1), (1, 1)),
    ((3, 3), (2, 2), "SAME", (1, 1), (1, 1)),
    ((3, 2), (2, 1), ((1, 2), (0, 1)), (1, 1), (2, 1)),
    ((3, 3), (1, 2), ((1, 1), (2, 0)), (2, 1), (1, 2)),
    ((3, 3), (1, 1), ((-1, 2), (1, -1)), (1, 1), (1, 1)),
    ((4,), (3,), ((2, 1),), (1,), (1,)),
    ((2, 2, 2), (1, 2, 1), "SAME", (1, 1, 1), (1, 1, 1))])
def test_patch_gradient_equals_autodiff_of_lax_patches(k, strides, padding,
                                                       lhs_dil, rhs_dil):
  """Patch extraction by strided slices equals `lax.conv_general_dilated_
  patches`, and its hand-written adjoint (strided pads and adds) equals
  JAX's own VJP of it."""
  conv = nn_conv.ConvGeometry(k, strides, padding, lhs_dil, rhs_dil, 1)
  x = jax.random.normal(jax.random.key(0), (2,) + (7,) * len(k) + (4,),
                        jnp.float64)
  # JAX's patches are channels first; ours channels last.
  ref = lambda x: jnp.moveaxis(jax.lax.conv_general_dilated_patches(
      jnp.moveaxis(x, -1, 1), conv.k, conv.strides, conv.padding,
      lhs_dilation=conv.lhs_dilation, rhs_dilation=conv.rhs_dilation), 1, -1)
  y, vjp_ref = jax.vjp(ref, x)
  y_ours, vjp_ours = jax.vjp(lambda x: nn_conv.patches(x, conv), x)
  np.testing.assert_array_equal(y_ours, y)
  dy = jax.random.normal(jax.random.key(1), y.shape, y.dtype)
  np.testing.assert_allclose(vjp_ours(dy)[0], vjp_ref(dy)[0], rtol=0,
                             atol=1e-13)


_SHARDED_PROBE = textwrap.dedent("""
    import dataclasses
    import json
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as np
    jax.config.update("jax_enable_x64", True)
    from rxjax import device, nn as rnn
    from rxjax.crossbar import ChipSpec

    class Net(nn.Module):
      @nn.compact
      def __call__(self, x):
        x = nn.relu(nn.Conv(8, (3, 3), feature_group_count=2)(x))
        return nn.Dense(5)(x.reshape(x.shape[0], -1))

    def plain(a):
      return (jax.random.key_data(a)
              if jnp.issubdtype(a.dtype, jax.dtypes.prng_key) else a)

    def rel(a, b):
      a, b = np.asarray(plain(a), np.float64), np.asarray(plain(b), np.float64)
      return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))

    # One weight slice per pair: 58 tiles, not a multiple of 4 (padding).
    spec = ChipSpec(mapping=dataclasses.replace(ChipSpec().mapping, tile_rows=16,
                                            tile_cols=8),
                device=device.DeviceSpec(device_bits=8),
                backward="transposed_read")
    auto = jax.sharding.AxisType.Auto
    meshes = {"explicit": jax.make_mesh((2, 2), ("a", "b")),
              "auto": jax.make_mesh((2, 2), ("a", "b"), axis_types=(auto,) * 2)}
    out = {"devices": jax.device_count()}
    for dtype in ("float64", "float32"):
      x = jax.random.normal(jax.random.key(0), (3, 7, 7, 4), dtype)
      model = Net()
      v = jax.tree.map(lambda a: a.astype(dtype),
                       model.init(jax.random.key(1), x))
      program = lambda k, mesh=None: rnn.program(model, v, x, spec, key=k,
                                                 mesh=mesh)
      key = jax.random.key(3)
      one = jax.jit(program)(key)
      res = {"tiles": sum(int(np.prod(c["chip"].g.shape[:-2]))
                          for c in one.values())}
      for name, mesh in meshes.items():
        sharded = jax.jit(lambda k: program(k, mesh))
        got = sharded(key)
        layers = list(zip(got.values(), one.values()))
        res[name] = dict(
            partitions=f"num_partitions=4" in sharded.lower(key).compile(
                ).as_text(),
            g_eff=max(max(rel(a["chip"].g_eff, b["chip"].g_eff),
                          rel(a["chip"].g_eff_bwd, b["chip"].g_eff_bwd))
                      for a, b in layers),
            chips=max(rel(a, b) for a, b in zip(jax.tree.leaves(got),
                                                 jax.tree.leaves(one))),
            same_keys=all(bool(np.array_equal(plain(a["key"]),
                                              plain(b["key"])))
                          for a, b in layers),
            same_g=all(bool(np.array_equal(a["chip"].g, b["chip"].g))
                       for a, b in layers),
            g=max(rel(a["chip"].g, b["chip"].g) for a, b in layers))
      keys = jax.random.split(jax.random.key(4), 2)
      many = jax.jit(jax.vmap(program))(keys)
      many_sharded = jax.jit(jax.vmap(lambda k: program(k, meshes["auto"])))(
          keys)
      res["vmap"] = max(rel(a, b) for a, b in zip(
          jax.tree.leaves(many_sharded), jax.tree.leaves(many)))
      out[dtype] = res
    # Under an Explicit mesh (`jax.set_mesh`) with the batch sharded over
    # it: reads, gradients, a refresh and the programming itself, against
    # the same calls on unplaced inputs.
    explicit = meshes["explicit"]
    x = jax.random.normal(jax.random.key(5), (4, 7, 7, 4), jnp.float32)
    v = model.init(jax.random.key(1), x)
    chips = jax.jit(lambda k: rnn.program(model, v, x, spec, key=k))(key)
    calls = {
        "read": lambda v, c, x: rnn.apply(model, v, c, x, spec),
        "grad": jax.grad(lambda v, c, x: rnn.apply(
            model, v, c, x, spec).sum()),
        "refresh": lambda v, c, x: rnn.apply(model, v, c, x, spec,
                                             refresh=True),
        "program": lambda v, c, x: rnn.program(model, v, x, spec, key=key,
                                               mesh=explicit)}
    want = {name: jax.jit(f)(v, chips, x) for name, f in calls.items()}
    res = {}
    with jax.set_mesh(explicit):
      rows = jax.sharding.NamedSharding(explicit, jax.sharding.PartitionSpec(
          ("a", "b")))
      xs = jax.device_put(x, rows)
      for name, f in calls.items():
        got = jax.jit(f)(v, chips, xs)
        res[name] = max(rel(a, b) for a, b in zip(jax.tree.leaves(got),
                                                 jax.tree.leaves(want[name])))
      res["read_sharding"] = str(jax.typeof(jax.jit(calls["read"])(
          v, chips, xs)).sharding.spec)
    out["explicit_batch"] = res
    print(json.dumps(out))
""")


@pytest.mark.slow
def test_sharded_programming_equals_one_device():
  """On 4 CPU devices, a network programmed with its tiles' solve sharded
  over a 2 x 2 mesh (both axes flattened; 58 tiles, so padded) equals the
  one-device programming, and the same key gives the same chip instance
  (conductances and keys bit for bit: a chip's key never depends on the
  device that solves it). A fresh process: the device count is fixed when
  JAX starts."""
  env = {**os.environ, "JAX_NUM_CPU_DEVICES": "4",
         "PYTHONPATH": os.pathsep.join(
             [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
             + os.environ.get("PYTHONPATH", "").split(os.pathsep))}
  out = subprocess.run([sys.executable, "-c", _SHARDED_PROBE], env=env,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result["devices"] == 4
  for dtype, tol in (("float64", 1e-12), ("float32", 1e-6)):
    res = result[dtype]
    assert res["tiles"] % 4 != 0
    for mesh in ("explicit", "auto"):
      assert res[mesh]["partitions"], (dtype, mesh)
      assert res[mesh]["g_eff"] <= tol, (dtype, mesh, res[mesh])
      assert res[mesh]["same_keys"], (dtype, mesh)
      # The same chip instance: the same keys and, to rounding, the same
      # conductances (another key moves them by ~10%). XLA may partition
      # the mapping and the variation draw too (the same random bits: JAX's
      # threefry is partitionable), and at the tests' optimization level 0
      # one float operation of theirs rounded differently (3e-16 relative
      # in float64); without that flag they were bit for bit equal.
      assert res[mesh]["g"] <= 4 * np.finfo(dtype).eps, (dtype, mesh, res)
    # The whole chips (calibration included) on the mesh with automatic
    # axes, and Monte-Carlo chips vmapped over keys.
    assert res["auto"]["chips"] <= tol, res
    assert res["vmap"] <= tol, res
  # Calibration on an Explicit mesh: float32 rounding may move an ADC code,
  # hence only G_eff above in float32.
  assert result["float64"]["explicit"]["chips"] <= 1e-12
  # A batch sharded over an Explicit mesh: the crossbar layers run on Auto
  # axes inside (`jax.sharding.auto_axes`); the output keeps the batch
  # sharding. float32 sums over a split batch (the gradient) reorder.
  ex = result["explicit_batch"]
  assert ex["read_sharding"] == "P(('a', 'b'), None)", ex
  for name in ("read", "refresh", "program"):
    assert ex[name] <= 1e-6, (name, ex)
  assert ex["grad"] <= 1e-5, ex


class _Mlp(nn.Module):
  """Dense -> relu -> Dense, every fan-in within one 16 x 16 tile."""

  @nn.compact
  def __call__(self, x):
    return nn.Dense(3)(nn.relu(nn.Dense(6)(x)))


def test_column_gain_correction_undoes_per_column_adc_gain_errors():
  """With one ADC per pair and one tile row, a column's ADC gain error
  scales its output by `1 + gain`: the fitted correction restores `x @ w`
  (the digital model) exactly; without it the outputs are off."""
  mapping = dataclasses.replace(_MAP_FULL, tile_rows=16, tile_cols=16)
  spec = ChipSpec.ideal(mapping=mapping, pair_subtraction="analog",
                    adc=periphery.ADCSpec(bits=None, gain_sigma=0.1))
  x = jax.random.normal(jax.random.key(0), (32, 5), jnp.float64)
  model = _Mlp()
  variables = jax.tree.map(lambda a: a.astype(jnp.float64),
                           model.init(jax.random.key(1), x))
  want = model.apply(variables, x)
  for corr, bound in (("none", None), ("column", 1e-9)):
    s = spec.replace(gain_correction=corr)
    chips = rnn.program(model, variables, x, s, key=jax.random.key(2))
    y = rnn.apply(model, variables, chips, x, s)
    if bound is None:
      assert _rel(y, want) > 1e-2
    else:
      assert _rel(y, want) < bound
      # Refreshing the weights keeps the fitted gains (calibration).
      _, state = rnn.apply(model, variables, chips, x, s, refresh=True)
      np.testing.assert_array_equal(state["chips"]["Dense_0"]["gain"],
                                    chips["Dense_0"]["gain"])


def test_column_gain_correction_cuts_the_ir_drop_error_of_a_network():
  """Low-resistance devices on 16 x 8 tiles, 8-bit converters: the
  corrected network is much closer to the digital one."""
  model, variables, x = _setup(CONVS[0])
  lowr = dataclasses.replace(DEFAULT_SMALL.device, r_min=10e3, r_max=100e3,
                             sigma=0.0)
  errors = {}
  for corr in ("none", "column"):
    s = DEFAULT_SMALL.replace(device=lowr, gain_correction=corr)
    chips = rnn.program(model, variables, x, s, key=jax.random.key(2))
    errors[corr] = _rel(rnn.apply(model, variables, chips, x, s),
                        model.apply(variables, x))
  assert errors["column"] < errors["none"] / 2, errors


class _OneDense(nn.Module):

  @nn.compact
  def __call__(self, x):
    return nn.Dense(6, use_bias=False)(x)


def test_fitted_adc_range_is_the_least_error_candidate():
  """A 4-bit ADC on 16 x 8 tiles: `adc_range="fitted"` programs the full
  scale that a brute force over `crossbar.ADC_RANGE_FACTORS` (each
  candidate read with `crossbar.read`, gain-corrected with
  `crossbar.column_gain`) finds closest to `x @ w`, a smaller one than the
  calibrated maximum, and the layer then reads closer to `x @ w`."""
  spec = DEFAULT_SMALL.replace(
      adc=periphery.ADCSpec(bits=4), gain_correction="column",
      device=dataclasses.replace(DEFAULT_SMALL.device, sigma=0.0))
  x = jax.random.uniform(jax.random.key(0), (64, 40), jnp.float64)
  model = _OneDense()
  variables = jax.tree.map(lambda a: a.astype(jnp.float64),
                           model.init(jax.random.key(1), x))
  w = variables["params"]["Dense_0"]["kernel"]
  want = x @ w
  chips = {r: rnn.program(model, variables, x, spec.replace(adc_range=r),
                          key=jax.random.key(2))
           for r in ("calibrated", "fitted")}
  chip = jax.tree.map(lambda a: a[0], chips["calibrated"]["Dense_0"]["chip"])
  errors = []
  for f in crossbar.ADC_RANGE_FACTORS:
    c = chip.replace(adc_full_scale=chip.adc_full_scale * f)
    y = crossbar.read(x, c, spec)
    errors.append(float(jnp.sum((y * crossbar.column_gain(y, want)
                                 - want) ** 2)))
  best = int(np.argmin(errors))
  assert best > 0, errors
  fitted = chips["fitted"]["Dense_0"]["chip"].adc_full_scale[0]
  np.testing.assert_allclose(
      fitted, chip.adc_full_scale * crossbar.ADC_RANGE_FACTORS[best],
      rtol=1e-12)
  out = {r: _rel(rnn.apply(model, variables, chips[r], x,
                           spec.replace(adc_range=r)), want)
         for r in chips}
  assert out["fitted"] < out["calibrated"], out
