"""NaN / inf and bad arguments at the public entry points (issue 20, cases
3 and 6): a clear error outside jit, a diagnostic inside.

References: `np.isfinite` of the inputs (which values are bad), the ideal
`x @ w` (clean inputs still read right), the dtype's smallest normal number.
"""

import flax.linen
import hypothesis
from hypothesis import strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rxjax
from rxjax import circuit
from rxjax import crossbar
from rxjax import finite
from rxjax import nn as rnn

FAST = hypothesis.settings(max_examples=15, deadline=None)
KEY = jax.random.key(0)
SPEC = crossbar.ChipSpec(mapping=crossbar.mapping_lib.MappingSpec(
    tile_rows=8, tile_cols=8))


def _xw(batch=4, fan_in=6, fan_out=5):
  rng = np.random.default_rng(0)
  return (rng.uniform(0, 1, (batch, fan_in)).astype(np.float32),
          rng.normal(size=(fan_in, fan_out)).astype(np.float32))


# ---------------------------------------------------------------------------
# Outside jit: errors naming the argument.


def test_a_nan_input_row_raises_naming_x():
  x, w = _xw()
  x[2, 3] = np.nan
  with pytest.raises(ValueError, match=r"`x`.*1 NaN.*index \(2, 3\)"):
    rxjax.matmul(x, w, SPEC, key=KEY)


def test_a_nan_weight_raises_naming_w():
  x, w = _xw()
  w[1, 1] = np.inf
  with pytest.raises(ValueError, match=r"`w`.*1 inf"):
    rxjax.matmul(x, w, SPEC, key=KEY)
  with pytest.raises(ValueError, match=r"`w`"):
    crossbar.program(w, SPEC, key=KEY)


def test_a_nan_calibration_input_raises_naming_x():
  x, w = _xw()
  chip = crossbar.program(w, SPEC, key=KEY)
  x[0, 0] = np.nan
  with pytest.raises(ValueError, match=r"`x` \(calibration inputs\)"):
    crossbar.calibrate(chip, x, SPEC)


class _Tiny(flax.linen.Module):
  """Two small dense layers: the chips of a network, compiled in seconds."""

  @flax.linen.compact
  def __call__(self, x):
    x = flax.linen.relu(flax.linen.Dense(4)(x.reshape((x.shape[0], -1))))
    return flax.linen.Dense(3)(x)


def _mlp():
  model = _Tiny()
  x = np.random.default_rng(1).uniform(0, 1, (4, 3, 2, 1)).astype(np.float32)
  variables = model.init(KEY, x[:1])
  return model, variables, x


def test_nn_program_raises_on_a_nan_pixel_or_weight():
  model, variables, x = _mlp()
  bad = x.copy()
  bad[1, 2, 1, 0] = np.nan
  with pytest.raises(ValueError, match=r"`x`.*calibration batch"):
    rnn.program(model, variables, bad, SPEC, key=KEY)
  params = jax.tree.map(np.array, variables["params"])
  leaf = jax.tree.leaves(params)[0]
  leaf.flat[0] = np.nan
  with pytest.raises(ValueError, match=r"`variables\[.params.\]"):
    rnn.program(model, {"params": params}, x, SPEC, key=KEY)


def test_negative_or_nonfinite_conductances_raise():
  g = np.full((4, 4), 1e-5)
  g[1, 2] = -1e-6
  wires = circuit.Wires(r_row=1.0, r_col=1.0)
  with pytest.raises(ValueError, match=r"`g` must be conductances >= 0.*"
                     r"index \(1, 2\)"):
    circuit.effective_conductance(g, wires)
  g[1, 2] = np.nan
  with pytest.raises(ValueError, match="`g` must be finite"):
    circuit.effective_conductance(g, wires)


def test_half_precision_conductances_raise():
  g = np.full((4, 4), 1e-6, np.float16)
  assert np.finfo(np.float16).tiny > 1e-6  # Subnormal there: the reason.
  with pytest.raises(TypeError, match="float32 or float64"):
    circuit.effective_conductance(g, circuit.Wires(r_row=1.0))


@pytest.mark.parametrize("value", [True, "1.5", b"1"])
def test_wires_refuse_bools_and_strings(value):
  with pytest.raises(ValueError, match="`r_row` must be a resistance"):
    circuit.Wires(r_row=value)


def test_a_tuple_for_wires_is_a_type_error():
  with pytest.raises(TypeError, match="`wires` must be a rxjax.Wires"):
    circuit.effective_conductance(np.full((2, 2), 1e-5), (1, 1, 1, 1))


def test_a_string_spec_is_a_type_error():
  x, w = _xw()
  with pytest.raises(TypeError, match="`spec` must be a rxjax.ChipSpec"):
    rxjax.matmul(x, w, "ideal", key=KEY)


def test_an_empty_batch_gives_an_empty_output():
  _, w = _xw()
  y = rxjax.matmul(np.zeros((0, 6), np.float32), w, SPEC, key=KEY)
  assert y.shape == (0, 5)


# ---------------------------------------------------------------------------
# Inside jit: the output is poisoned and a status says so.


def test_under_jit_a_nan_row_poisons_the_whole_output_and_the_status():
  x, w = _xw()
  ideal = crossbar.ChipSpec.ideal()
  f = jax.jit(lambda x: rxjax.matmul(x, w, ideal, key=KEY,
                                     return_status=True))
  y, status = f(x)
  assert bool(status.ok) and int(status.nonfinite) == 0
  np.testing.assert_allclose(y, x @ w, rtol=1e-5, atol=1e-5)
  x[2, 3] = np.nan
  y, status = f(x)
  assert not bool(status.ok) and int(status.nonfinite) == 1
  assert np.isnan(np.asarray(y)).all()  # Never a plausible 0.


def test_under_jit_nan_calibration_poisons_every_chip():
  model, variables, x = _mlp()
  x[0, 0, 0, 0] = np.nan
  spec = crossbar.ChipSpec.ideal(mapping=SPEC.mapping)  # Compiles quickly.
  chips = jax.jit(lambda v, x: rnn.program(model, v, x, spec, key=KEY))(
      variables, x)
  status = finite.status(chips)
  assert not bool(status.ok)
  assert all(np.isnan(np.asarray(a)).all() for a in jax.tree.leaves(chips)
             if jnp.issubdtype(a.dtype, jnp.floating))


@FAST
@hypothesis.given(st.integers(0, 3), st.integers(0, 5),
                  st.sampled_from([np.nan, np.inf, -np.inf]))
def test_property_any_nonfinite_input_raises(i, j, bad):
  x, w = _xw()
  x[i, j] = bad
  with pytest.raises(ValueError, match=f"`x`.*index \\({i}, {j}\\)"):
    rxjax.matmul(x, w, SPEC, key=KEY)
  status = finite.status(x)
  assert not bool(status.ok) and int(status.nonfinite) == 1


@FAST
@hypothesis.given(st.integers(0, 5), st.integers(0, 4),
                  st.sampled_from([np.nan, np.inf, -np.inf]))
def test_property_any_nonfinite_weight_raises(i, j, bad):
  _, w = _xw()
  w[i, j] = bad
  with pytest.raises(ValueError, match=f"`w`.*index \\({i}, {j}\\)"):
    crossbar.program(w, SPEC, key=KEY)
  with pytest.raises(ValueError, match=f"`w`.*index \\({i}, {j}\\)"):
    crossbar.write(w, SPEC, key=KEY)  # The first stage of every programming.


@FAST
@hypothesis.given(st.sampled_from(["r_row", "r_col", "r_source", "r_sense",
                                   "r_source_backward", "r_sense_backward"]),
                  st.one_of(st.just(np.nan), st.just(np.inf),
                            st.floats(-1e9, -1e-9)))
def test_property_wires_refuse_out_of_range(name, value):
  with pytest.raises(ValueError, match=f"`{name}`"):
    circuit.Wires(**{name: value})


@FAST
@hypothesis.given(st.integers(0, 3), st.integers(0, 3),
                  st.floats(-1.0, -1e-12))
def test_property_any_negative_conductance_raises(i, j, value):
  g = np.full((4, 4), 1e-5)
  g[i, j] = value
  with pytest.raises(ValueError, match=f"index \\({i}, {j}\\)"):
    circuit.effective_conductance(g, circuit.Wires(r_row=1.0, r_col=1.0))
