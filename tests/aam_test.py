"""rxjax.circuit.aam_conductance against the exact model and circuit laws.

The approximate analytical model (TxSim IV-D) is checked against
`effective_conductance` (itself tested against scipy MNA in circuit_test.py)
where it must be exact (no parasitics, a single conducting device, lines that
decouple, 1 x N and M x 1 tiles), where it must converge (more paths, larger
device resistances) and for the conventions it shares with the exact model
(shapes, batching, dtypes, the backward read, jit).

The suite runs in float64 (tests/conftest.py); float32 is cast explicitly.
"""

import dataclasses
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rxjax import circuit
from rxjax.circuit import Wires
from regimes import REGIMES

RESISTANCE_FIELDS = ("r_row", "r_col", "r_source", "r_sense")
SHAPE = (5, 11)  # non-square; its backward read runs the (11, 5) flip


def _rng(*key):
  return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _tile(regime, shape, *key):
  """Device conductances (siemens), uniform in resistance over the range."""
  (r_lo, r_hi), _ = REGIMES[regime]
  return 1.0 / _rng(regime, shape, *key).uniform(r_lo, r_hi, size=shape)


def _aam(g, wires, paths=3, direction="forward"):
  return np.asarray(circuit.aam_conductance(
      jnp.asarray(g), wires, paths=paths, direction=direction))


def _exact(g, wires, direction="forward"):
  return np.asarray(circuit.effective_conductance(
      jnp.asarray(g), wires, direction=direction))


def _max_rel(a, b):
  return float(np.max(np.abs(a - b) / np.abs(b)))


# ---------------------------------------------------------------------------
# Where the model is exact.


@pytest.mark.parametrize("wires", [
    Wires(), Wires.ideal(),
    Wires(r_source_backward=0.0, r_sense_backward=0.0)],
    ids=["default", "ideal", "explicit_backward"])
@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_ideal_wires_give_g_exactly(dtype, direction, wires):
  g = jnp.asarray(_tile("pcm", (2, 5, 11), "ideal"), dtype)
  for paths in (1, 3):
    out = circuit.aam_conductance(g, wires, paths=paths, direction=direction)
    assert out.dtype == dtype and out.shape == g.shape
    np.testing.assert_array_equal(np.asarray(out), np.asarray(g))


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_single_device_is_series_circuit(direction):
  """One conducting device: the wires carry its current only."""
  wires = REGIMES["spintronic"][1]
  g = np.zeros(SHAPE)
  g[2, 5] = 1e-3
  np.testing.assert_allclose(_aam(g, wires, direction=direction),
                             _exact(g, wires, direction=direction),
                             rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("kept", [
    ("r_row",), ("r_source",), ("r_row", "r_source"),
    ("r_col",), ("r_sense",), ("r_col", "r_sense")])
def test_lines_that_decouple_are_exact(kept):
  """With ideal columns (or ideal rows) every line is a chain on its own."""
  base = REGIMES["spintronic"][1]
  wires = Wires(**{f: getattr(base, f) for f in kept})
  g = _tile("spintronic", SHAPE, "decouple")
  for paths in (1, 3):
    np.testing.assert_allclose(_aam(g, wires, paths), _exact(g, wires),
                               rtol=1e-12, atol=0, err_msg=str(kept))


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (7, 1)])
@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_single_line_tiles_are_exact(shape, direction):
  wires = REGIMES["spintronic"][1]
  g = _tile("spintronic", shape, "line")
  np.testing.assert_allclose(_aam(g, wires, direction=direction),
                             _exact(g, wires, direction=direction),
                             rtol=1e-12, atol=0)


# ---------------------------------------------------------------------------
# Convergence.


def _errors(g, wires, paths=(1, 2, 3, 4)):
  exact = _exact(g, wires)
  return [_max_rel(_aam(g, wires, p), exact) for p in paths]


# Measured on these tiles (max relative error of G_eff; paths 1 .. 4):
# reram random       2.9e-3, 6.0e-5, 5.9e-5, 5.9e-5
# reram g_max        1.1e-2, 1.4e-4, 5.3e-5, 5.2e-5
# reram_x10 random   3.0e-5, 4.4e-7, 4.4e-7, 4.4e-7  (devices 1-10 MOhm)
# reram_x10 g_max    1.2e-4, 8.0e-8, 6.8e-8, 6.8e-8
@pytest.mark.parametrize("scale", [1.0, 0.1], ids=["reram", "reram_x10"])
@pytest.mark.parametrize("state", ["random", "g_max"])
def test_error_never_increases_with_paths(state, scale):
  (r_lo, _), wires = REGIMES["reram"]
  g = _tile("reram", (64, 64), "paths") if state == "random" else np.full(
      (64, 64), 1 / r_lo)
  errors = _errors(scale * g, wires)
  for p, (before, after) in enumerate(zip(errors, errors[1:]), start=1):
    assert after <= before * (1 + 1e-6), (p, errors)
  # The first sneak family removes most of the error left by the direct paths.
  assert errors[1] < errors[0] / 10, errors
  assert errors[2] < 1.5e-4 * scale**2, errors


def test_error_vanishes_as_devices_outgrow_wires():
  """Error at fixed paths against the device resistance scale: it falls at
  least 50x per decade (measured ~100x; the IR-drop effect itself 10x)."""
  wires = REGIMES["reram"][1]
  g = _tile("reram", (64, 64), "scale")
  for paths in (1, 3):
    errors = [_max_rel(_aam(s * g, wires, paths), _exact(s * g, wires))
              for s in (1.0, 0.1, 0.01)]
    assert errors[1] < errors[0] / 50 and errors[2] < errors[1] / 50, (
        paths, errors)


def test_better_than_ignoring_parasitics_in_every_regime():
  for regime, (_, wires) in REGIMES.items():
    g = _tile(regime, (64, 64), "regimes")
    exact = _exact(g, wires)
    assert _max_rel(_aam(g, wires), exact) < _max_rel(g, exact) / 3, regime


# ---------------------------------------------------------------------------
# Conventions shared with the exact model.


@pytest.mark.parametrize("shape", [SHAPE, SHAPE[::-1]])
@pytest.mark.parametrize("regime", ["reram", "spintronic"])
def test_backward_is_reciprocal_forward(regime, shape):
  """Same terminal on each physical line in both reads: the same network,
  so backward == forward in the common [M, N] storage (circuit_test.py);
  the AAM is symmetric in rows and columns and keeps this to rounding."""
  base = dataclasses.replace(REGIMES[regime][1],
                             r_sense=0.4 * REGIMES[regime][1].r_source)
  same = dataclasses.replace(base, r_source_backward=base.r_sense,
                             r_sense_backward=base.r_source)
  g = _tile(regime, shape, "reciprocal")
  fwd = _aam(g, base)
  np.testing.assert_allclose(_aam(g, same, direction="backward"), fwd,
                             rtol=1e-12, atol=0)
  # The default backward terminals swap every line's terminal: a different
  # network, and the AAM follows the exact model there too.
  swapped = _aam(g, base, direction="backward")
  exact = _exact(g, base, direction="backward")
  assert _max_rel(swapped, fwd) > 1e-4
  # Measured: AAM error 1e-4 (reram) and 0.03 (spintronic) of a 0.003 and
  # 0.06 difference between the reads.
  margin = {"reram": 10, "spintronic": 1.5}[regime]
  assert _max_rel(swapped, exact) < _max_rel(fwd, exact) / margin


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_float32_matches_float64(direction):
  wires = REGIMES["reram"][1]
  g = _tile("reram", (64, 64), "f32")
  out64 = circuit.aam_conductance(jnp.asarray(g), wires, direction=direction)
  out32 = circuit.aam_conductance(jnp.asarray(g, jnp.float32), wires,
                                  direction=direction)
  assert out64.dtype == jnp.float64 and out32.dtype == jnp.float32
  # Measured 1.3e-6: every step adds positive terms (resistance form).
  np.testing.assert_allclose(np.asarray(out32, np.float64), np.asarray(out64),
                             rtol=1e-5, atol=0)


@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize("shape", [SHAPE, SHAPE[::-1]])
def test_batch_equals_per_tile(shape, direction):
  wires = REGIMES["pcm"][1]
  g = _tile("pcm", (2, 3) + shape, "batch")
  out = _aam(g, wires, direction=direction)
  assert out.shape == g.shape
  for idx in np.ndindex(2, 3):
    np.testing.assert_allclose(out[idx], _aam(g[idx], wires,
                                              direction=direction),
                               rtol=1e-13, atol=0, err_msg=str(idx))


def test_many_tiles_in_groups():
  """More tiles than one cache-sized group (lax.map with a padded tail)."""
  wires = REGIMES["reram"][1]
  group = circuit.AAM_GROUP_ELEMENTS // (16 * 16)
  g = _tile("reram", (group + 3, 16, 16), "groups")
  out = _aam(g, wires)
  for k in (0, group - 1, group, group + 2):
    np.testing.assert_allclose(out[k], _aam(g[k], wires), rtol=1e-13, atol=0)


def test_jit_vmap_and_traced_wires():
  wires = REGIMES["reram"][1]
  tiles = jnp.asarray(_tile("reram", (3,) + SHAPE, "jit"))
  eager = _aam(tiles, wires, paths=2)
  jitted = jax.jit(lambda g: circuit.aam_conductance(g, wires, paths=2))
  np.testing.assert_allclose(np.asarray(jitted(tiles)), eager, rtol=1e-13)
  mapped = jax.vmap(lambda g: circuit.aam_conductance(g, wires, paths=2))
  np.testing.assert_allclose(np.asarray(mapped(tiles)), eager, rtol=1e-13)
  # Wires are a pytree: traced resistances take the same code path, and
  # the model is differentiable.
  def total(g, w):
    return circuit.aam_conductance(g, w, paths=2).sum()
  value, grads = jax.jit(jax.value_and_grad(total, argnums=(0, 1)))(
      tiles, wires)
  np.testing.assert_allclose(float(value), eager.sum(), rtol=1e-13)
  assert np.all(np.isfinite(np.asarray(grads[0])))
  # More resistance, less current (Rayleigh): every derivative is < 0.
  for field in RESISTANCE_FIELDS:
    assert float(getattr(grads[1], field)) < 0, field


@pytest.mark.parametrize("paths", [0, -1, 1.5, True, "3"])
def test_bad_paths_raise(paths):
  with pytest.raises(ValueError, match="`paths`"):
    circuit.aam_conductance(jnp.ones((4, 4)), REGIMES["reram"][1],
                            paths=paths)


def test_bad_inputs_raise():
  wires = REGIMES["reram"][1]
  with pytest.raises(ValueError, match="`direction`"):
    circuit.aam_conductance(jnp.ones((4, 4)), wires, direction="up")
  with pytest.raises(ValueError, match="`g`"):
    circuit.aam_conductance(jnp.ones((4,)), wires)
  with pytest.raises(TypeError, match="`g`"):
    circuit.aam_conductance(jnp.ones((4, 4), jnp.int32), wires)
