"""rxjax.circuit against the scipy MNA reference, closed forms and circuit laws.

Every check compares the kernel with something it shares no code with
(STYLE.md, tests): the sparse modified nodal analysis of `rxjax.reference`,
finite differences of that reference, closed forms of small networks, and
theorems of linear resistive networks (reciprocity, the maximum principle,
Rayleigh monotonicity, Thomson's principle). Nothing is compared with a
snapshot of our own outputs; float32 is compared with float64.

Conventions are DESIGN.md section 2. The suite runs in float64
(tests/conftest.py); tests that want float32 cast explicitly.
"""

import dataclasses
import functools
import json
import subprocess
import sys
import textwrap
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from jax.test_util import check_grads

from rxjax import circuit, reference
from rxjax.circuit import Wires
from regimes import REGIMES


# A "read" is a direction plus its terminals: "backward_own" sets
# r_source_backward / r_sense_backward to values different from the forward
# terminals (and from each other), so a kernel that ignored them would fail.
READS = ("forward", "backward", "backward_own")

# 1x1, 1xN, Mx1, non-square both ways, square. A backward read runs the
# flipped-transposed tile, so (1, 7) and (7, 1), (5, 11) and (11, 5) share
# their compilations between the directions.
SHAPES = [(1, 1), (1, 7), (7, 1), (5, 11), (11, 5), (16, 16), (64, 64)]

RTOL_REFERENCE = 1e-9  # float64 kernel vs scipy sparse LU, per entry.
RTOL_FLOAT32 = 5e-5  # float32 kernel vs float64 kernel, per entry.


def _shape_id(shape):
  return "x".join(map(str, shape))


def _rng(*key):
  """A generator seeded by the test's parameters (same case, same numbers)."""
  return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _tile(regime, shape, *key):
  """Device conductances (siemens), uniform in resistance over the range."""
  (r_lo, r_hi), _ = REGIMES[regime]
  return 1.0 / _rng(regime, shape, *key).uniform(r_lo, r_hi, size=shape)


def _read(regime, read):
  """(wires, direction) of a read in a regime."""
  wires = REGIMES[regime][1]
  if read == "backward_own":
    wires = dataclasses.replace(
        wires, r_source_backward=0.3 * wires.r_source + 7.0,
        r_sense_backward=2.2 * wires.r_sense)
    return wires, "backward"
  return wires, read


def _kernel(g, wires, direction):
  return np.asarray(circuit.effective_conductance(
      jnp.asarray(g), wires, direction=direction))


@functools.lru_cache(maxsize=None)
def _reference_case(regime, shape, read):
  """(g, wires, direction, scipy G_eff) of a case; the LU is the slow part."""
  wires, direction = _read(regime, read)
  g = _tile(regime, shape)
  return g, wires, direction, reference.effective_conductance(
      g, wires, direction=direction)


def _max_rel(a, b):
  return float(np.max(np.abs(np.asarray(a) - b) / np.abs(b)))


# ---------------------------------------------------------------------------
# 1. Against the scipy sparse MNA reference, float64.


def _check_reference(regime, shape, read):
  g, wires, direction, g_ref = _reference_case(regime, shape, read)
  g_eff = circuit.effective_conductance(jnp.asarray(g), wires,
                                        direction=direction)
  assert g_eff.shape == shape and g_eff.dtype == jnp.float64
  np.testing.assert_allclose(
      np.asarray(g_eff), g_ref, rtol=RTOL_REFERENCE, atol=0,
      err_msg=f"{regime} {read} {shape}: kernel vs scipy MNA")


@pytest.mark.parametrize("read", READS)
@pytest.mark.parametrize("shape", SHAPES, ids=_shape_id)
@pytest.mark.parametrize("regime", list(REGIMES))
def test_matches_reference(regime, shape, read):
  _check_reference(regime, shape, read)


# 128 x 128 once per direction: 5-15 s of sparse LU per read on a loaded
# 2-core machine, plus the kernel's compilation, hence `slow`.
@pytest.mark.slow
@pytest.mark.parametrize("regime, read", [("reram", "forward"),
                                          ("pcm", "backward_own")])
def test_matches_reference_128(regime, read):
  _check_reference(regime, (128, 128), read)


# `method="auto"` runs the row sweep up to 64 x 64 and nested dissection from
# 128 x 128 on (when r_row, r_col > 0): nested is also checked where auto
# would not pick it (padded odd shape, and 64 x 64).
@pytest.mark.parametrize("read", ["forward", "backward_own"])
@pytest.mark.parametrize("method, regime, shape", [
    ("nested", "reram", (64, 64)),
    ("nested", "spintronic", (5, 11)),
], ids=["nested-64x64", "nested-5x11"])
def test_methods_match_reference(method, regime, shape, read):
  g, wires, direction, g_ref = _reference_case(regime, shape, read)
  g_eff = circuit.effective_conductance(jnp.asarray(g), wires,
                                        direction=direction, method=method)
  np.testing.assert_allclose(np.asarray(g_eff), g_ref, rtol=RTOL_REFERENCE,
                             atol=0)


# ---------------------------------------------------------------------------
# 2. float32 against float64.


# The backward read runs the same solver on the flipped tile; at 128 it would
# only repeat the forward case at twice the cost. 128 x 128 is `slow`: nested
# dissection (auto's choice there) compiles for ~12 s per dtype.
@pytest.mark.parametrize("size, read", [
    (64, "forward"), (64, "backward_own"),
    pytest.param(128, "forward", marks=pytest.mark.slow)])
@pytest.mark.parametrize("regime", list(REGIMES))
def test_float32_matches_float64(regime, size, read, method="auto"):
  wires, direction = _read(regime, read)
  g = _tile(regime, (size, size), "f32")
  g32 = jnp.asarray(g, jnp.float32)
  # Same float32-rounded devices in both, so only the solve's rounding counts.
  g64 = jnp.asarray(g32, jnp.float64)
  out32 = circuit.effective_conductance(g32, wires, direction=direction,
                                        method=method)
  out64 = circuit.effective_conductance(g64, wires, direction=direction,
                                        method=method)
  assert out32.dtype == jnp.float32 and out64.dtype == jnp.float64
  np.testing.assert_allclose(np.asarray(out32, np.float64), np.asarray(out64),
                             rtol=RTOL_FLOAT32, atol=0)


@pytest.mark.parametrize("regime", list(REGIMES))
def test_float32_nested_matches_float64(regime):
  # Auto picks the sweep at 64 x 64: nested dissection's float32 on its own.
  test_float32_matches_float64(regime, 64, "forward", method="nested")


# ---------------------------------------------------------------------------
# 3. Closed forms and circuit laws.


@pytest.mark.parametrize("dtype, rtol", [(jnp.float64, 1e-13),
                                         (jnp.float32, 1e-6)])
@pytest.mark.parametrize("read", READS)
@pytest.mark.parametrize("regime", list(REGIMES))
def test_single_device_is_series_circuit(regime, read, dtype, rtol):
  # One device: source, device and sense in series; no wire segment exists.
  wires, direction = _read(regime, read)
  _, _, r_source, r_sense = wires.terminals(direction)
  g = _tile(regime, (6, 1, 1))  # six 1x1 tiles in one batch
  expected = 1.0 / (r_source + 1.0 / g + r_sense)
  out = circuit.effective_conductance(jnp.asarray(g, dtype), wires,
                                      direction=direction)
  assert out.dtype == dtype and out.shape == g.shape
  np.testing.assert_allclose(np.asarray(out, np.float64), expected, rtol=rtol)


@pytest.mark.parametrize("wires", [
    Wires(), Wires.ideal(),
    Wires(r_source_backward=0.0, r_sense_backward=0.0)],
    ids=["default", "ideal", "explicit_backward"])
@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_ideal_wires_give_g_exactly(dtype, direction, wires):
  # Batched and non-square; the backward read runs the other orientation.
  g = jnp.asarray(_tile("pcm", (2, 3, 5, 11), "ideal"), dtype)
  out = circuit.effective_conductance(g, wires, direction=direction)
  assert out.dtype == dtype
  np.testing.assert_array_equal(np.asarray(out), np.asarray(g))


def _unequal_terminals(regime):
  """Regime wires with r_source != r_sense (the regimes have them equal)."""
  wires = REGIMES[regime][1]
  return dataclasses.replace(wires, r_sense=0.4 * wires.r_source)


@pytest.mark.parametrize("shape", [(5, 11), (11, 5), (16, 16)], ids=_shape_id)
@pytest.mark.parametrize("regime", list(REGIMES))
def test_backward_is_reciprocal_forward(regime, shape):
  """Reciprocity of linear passive networks (Tellegen).

  Each physical line keeps its terminal in both reads when the column driver
  of the backward read has the forward sense resistance (same terminal at
  b[M-1, j]) and the row sense amplifier the forward source resistance (same
  terminal at a[i, 0]). Then the network is the same, and the transfer
  conductance between the terminal of row i and that of column j is the same
  in both directions: G_bwd[i, j] == G_fwd[i, j] in the common [M, N] storage.
  As operators, u -> G_bwd @ u is the transpose of v -> v @ G_fwd, i.e.
  u . (v @ G_fwd) == v . (G_bwd @ u) for all v, u.
  """
  base = _unequal_terminals(regime)
  same = dataclasses.replace(base, r_source_backward=base.r_sense,
                             r_sense_backward=base.r_source)
  g = _tile(regime, shape)
  fwd = _kernel(g, base, "forward")
  bwd = _kernel(g, same, "backward")
  np.testing.assert_allclose(bwd, fwd, rtol=1e-10, atol=0)
  rng = _rng("reciprocity", regime, shape)
  v, u = rng.uniform(-1, 1, shape[0]), rng.uniform(-1, 1, shape[1])
  np.testing.assert_allclose(u @ (v @ fwd), v @ (bwd @ u), rtol=1e-10)
  # The physics, independently of the kernel: the reference obeys it too.
  np.testing.assert_allclose(
      reference.effective_conductance(g, same, direction="backward"),
      reference.effective_conductance(g, base, direction="forward"),
      rtol=1e-10, atol=0)
  # Default backward terminals (r_source drives the columns, r_sense senses
  # the rows) swap the terminals of every line: a different network. 1e-4 is
  # far below the measured difference (2e-3 ReRAM, 0.04-0.06 PCM, 0.07-0.1
  # spintronic) and far above rounding, so mixed-up terminals would fail.
  swapped = _kernel(g, base, "backward")
  assert _max_rel(swapped, fwd) > 1e-4
  np.testing.assert_allclose(
      swapped, reference.effective_conductance(g, base, direction="backward"),
      rtol=RTOL_REFERENCE, atol=0)


def _rayleigh_fields(read):
  if read == "backward_own":
    return ("r_row", "r_col", "r_source_backward", "r_sense_backward")
  return ("r_row", "r_col", "r_source", "r_sense")


def _off_tile(regime, shape):
  """A tile with about half its devices 1000x lower (programmed off)."""
  g = _tile(regime, shape, "off")
  off = _rng("off-mask", regime, shape).random(shape) < 0.5
  return np.where(off, 1e-3 * g, g)


@pytest.mark.parametrize("field_index", range(4),
                         ids=["r_row", "r_col", "source", "sense"])
@pytest.mark.parametrize("read", READS)
@pytest.mark.parametrize("regime", list(REGIMES))
def test_more_resistance_never_increases_total_current(regime, read,
                                                       field_index):
  """Rayleigh monotonicity and the maximum principle.

  With every input at 1 V (all-ones v), all drivers are one node at 1 V and
  all virtual grounds are one node at 0 V, so sum(G_eff) = 1' G_eff 1 is the
  effective conductance between two terminals of a resistor network. Rayleigh's
  monotonicity law (Doyle & Snell, "Random walks and electric networks",
  sec. 1.4) says it never increases when any resistance increases, and
  decreases strictly when the resistor carries current (every segment and
  terminal here does); it is at most sum(g), its value with ideal wires.
  The maximum principle (node voltages of a unit-input read lie in [0, 1])
  gives G_eff >= 0 entrywise.

  Not asserted, because it is false: single entries of G_eff and single
  output currents under all-ones input can grow with a wire resistance via
  sneak paths (scipy reference, spintronic 8x8 with half the devices off:
  tripling r_row raised one entry by 36% and one all-ones column current).
  """
  wires, direction = _read(regime, read)
  field = _rayleigh_fields(read)[field_index]
  g = _off_tile(regime, (11, 5))
  value = getattr(wires, field)
  totals = []
  for scale in (0.5, 1.0, 3.0):
    g_eff = _kernel(g, dataclasses.replace(wires, **{field: scale * value}),
                    direction)
    assert np.all(g_eff >= 0)
    totals.append(g_eff.sum())
  assert totals[0] <= g.sum()
  assert totals[0] > totals[1] > totals[2], (field, totals)


# The sweep runs over the longer side: an M > N tile skips a zero r_col /
# r_sense, an M < N tile a zero r_row / r_source (its reciprocal). A backward
# read is a forward read of the flipped tile, so forward covers every skip.
@pytest.mark.parametrize("field, shape", [
    ("r_col", (11, 5)), ("r_sense", (11, 5)),
    ("r_row", (5, 11)), ("r_source", (5, 11))])
def test_tiny_resistance_is_continuous_at_zero(field, shape):
  # r = 0 skips the element at trace time; r > 0 runs the resistance-form
  # step. The two paths must meet: G_eff is analytic in each resistance.
  wires = REGIMES["spintronic"][1]
  g = _tile("spintronic", shape, "tiny")
  at_zero = _kernel(g, dataclasses.replace(wires, **{field: 0.0}), "forward")
  for tiny in (1e-12, 1e-300):
    near = _kernel(g, dataclasses.replace(wires, **{field: tiny}), "forward")
    np.testing.assert_allclose(near, at_zero, rtol=1e-12, atol=0,
                               err_msg=f"{field}={tiny}")


# ---------------------------------------------------------------------------
# 4. Property tests: random tiles and resistances, zeros included.

# A short list bounds the number of compilations (one per shape, direction
# and, on the eager path, pattern of zero resistances). Backward reads run
# the flipped tile, so (1, 6) and (4, 9) also cover Mx1 and M > N; (1, 1)
# and (12, 12) are the ends of the 1..12 range.
_PROPERTY_SHAPES = [(1, 1), (1, 6), (4, 9), (12, 12)]


def _resistances():
  # Exactly 0 (ideal: a separate code path) or 1e-3 .. 50 ohm. The floor is
  # the reference's, not the kernel's: its conductance-form MNA puts 1/r next
  # to 1e-6 S devices. Smaller resistances are checked against r = 0 above.
  return st.one_of(st.just(0.0), st.floats(1e-3, 50.0))


@st.composite
def _circuits(draw, backward_none):
  m, n = draw(st.sampled_from(_PROPERTY_SHAPES))
  log_g = draw(hnp.arrays(np.float64, (m, n), elements=st.floats(-6.0, -2.0)))
  r = [draw(_resistances()) for _ in range(4)]
  bwd = st.one_of(st.none(), _resistances()) if backward_none else (
      _resistances())
  r_bwd = [draw(bwd) for _ in range(2)]
  direction = draw(st.sampled_from(["forward", "backward"]))
  return 10.0 ** log_g, Wires(*r, *r_bwd), direction


@settings(max_examples=10, deadline=None, derandomize=True)
@given(_circuits(backward_none=True))
def test_property_eager_matches_reference(case):
  # Eager call: resistances are static and exact zeros are skipped.
  g, wires, direction = case
  np.testing.assert_allclose(
      _kernel(g, wires, direction),
      reference.effective_conductance(g, wires, direction=direction),
      rtol=RTOL_REFERENCE, atol=0, err_msg=f"{wires} {direction}")


_geff_jit = jax.jit(circuit.effective_conductance,
                    static_argnames=("direction",))


@settings(max_examples=30, deadline=None, derandomize=True)
@given(_circuits(backward_none=False))
def test_property_traced_matches_reference(case):
  # Wires as a jit argument: resistances are tracers, zeros are not skipped.
  g, wires, direction = case
  out = _geff_jit(jnp.asarray(g), wires, direction=direction)
  np.testing.assert_allclose(
      np.asarray(out),
      reference.effective_conductance(g, wires, direction=direction),
      rtol=RTOL_REFERENCE, atol=0, err_msg=f"{wires} {direction}")


# ---------------------------------------------------------------------------
# 5. Batching, jit, vmap.


@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize("shape", [(5, 11), (11, 5)], ids=_shape_id)
def test_batch_equals_per_tile(shape, direction):
  wires = REGIMES["pcm"][1]
  g = _tile("pcm", (2, 3) + shape, "batch")
  out = _kernel(g, wires, direction)
  assert out.shape == g.shape
  for idx in np.ndindex(2, 3):
    np.testing.assert_allclose(out[idx], _kernel(g[idx], wires, direction),
                               rtol=1e-12, atol=0, err_msg=str(idx))
  np.testing.assert_allclose(
      out[1, 2], reference.effective_conductance(g[1, 2], wires,
                                                 direction=direction),
      rtol=RTOL_REFERENCE, atol=0)


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_jit_and_vmap(direction):
  wires = REGIMES["reram"][1]
  tiles = _tile("reram", (3, 11, 5), "jit")
  expected = np.stack([reference.effective_conductance(
      t, wires, direction=direction) for t in tiles])
  jitted = jax.jit(lambda g: circuit.effective_conductance(
      g, wires, direction=direction))
  np.testing.assert_allclose(np.asarray(jitted(jnp.asarray(tiles[0]))),
                             expected[0], rtol=RTOL_REFERENCE, atol=0)
  mapped = jax.vmap(lambda g: circuit.effective_conductance(
      g, wires, direction=direction))
  np.testing.assert_allclose(np.asarray(mapped(jnp.asarray(tiles))),
                             expected, rtol=RTOL_REFERENCE, atol=0)


_PLACEMENT_PROBE = textwrap.dedent("""
    import json
    import jax
    import numpy as np
    jax.config.update("jax_num_cpu_devices", 2)
    jax.config.update("jax_enable_x64", True)
    from jax.sharding import NamedSharding, PartitionSpec
    from rxjax import circuit, reference
    from rxjax.circuit import Wires

    wires = Wires(r_row=2.5, r_col=2.5, r_source=500.0, r_sense=500.0)
    g = 1 / np.random.default_rng(7).uniform(5e3, 5e5, (4, 8, 8))
    mesh = jax.make_mesh((2,), ("tiles",),
                         axis_types=(jax.sharding.AxisType.Auto,))
    both = NamedSharding(mesh, PartitionSpec("tiles"))
    worst, placed = 0.0, []
    for method in ("sweep", "nested"):
      for direction in ("forward", "backward"):
        solve = lambda g: circuit.effective_conductance(
            g, wires, direction=direction, method=method)
        on_1 = solve(jax.device_put(g, jax.devices()[1]))
        sharded = jax.jit(solve)(jax.device_put(g, both))
        placed.append([[d.id for d in on_1.devices()],
                       sharded.sharding.is_equivalent_to(both, 3)])
        for t in range(4):
          ref = reference.effective_conductance(g[t], wires,
                                                direction=direction)
          for out in (on_1, sharded):
            worst = max(worst, float(np.max(np.abs(out[t] - ref) / ref)))
    print(json.dumps({"worst": worst, "placed": placed}))
""")


def test_placement_follows_the_inputs():
  # With two devices, a batch on device 1 is solved there, eagerly, and a
  # batch sharded over both, under jit, stays sharded (each device its
  # tiles): the shardings decide, no eager spreading. A fresh process,
  # because the device count is fixed when JAX starts.
  out = subprocess.run([sys.executable, "-c", _PLACEMENT_PROBE],
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result["placed"] == [[[1], True]] * 4
  assert result["worst"] <= RTOL_REFERENCE


# ---------------------------------------------------------------------------
# 6. Gradients.

_GRAD_SHAPE = (11, 5)  # shares compilations with the tests above


@pytest.mark.parametrize("read", ["forward", "backward_own"])
@pytest.mark.parametrize("regime", ["reram", "spintronic"])
def test_check_grads_wrt_conductance(regime, read):
  wires, direction = _read(regime, read)
  g = _tile(regime, _GRAD_SHAPE, "grad")
  # check_grads steps by eps = 1e-4 in absolute terms: differentiate with
  # respect to x = g / scale ~ 1 so that the step is relative.
  scale = float(np.mean(g))
  f = lambda x: circuit.effective_conductance(
      scale * x, wires, direction=direction) / scale
  check_grads(f, (jnp.asarray(g / scale),), order=1, modes=("rev", "fwd"))


@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize("regime", ["reram", "spintronic"])
@pytest.mark.parametrize("method, shape", [
    ("auto", _GRAD_SHAPE),  # the sweep
    # Nested dissection's gradient compiles for 20-30 s.
    pytest.param("nested", (16, 16), marks=pytest.mark.slow),
], ids=["auto", "nested"])
def test_grad_of_total_conductance_is_squared_voltage_drop(method, shape,
                                                           regime, direction):
  """d(1' G_eff 1)/dg[i, j] == (a[i, j] - b[i, j])**2 under 1 V inputs.

  1' G_eff 1 is a two-terminal conductance (see the Rayleigh test); by
  Thomson's principle its derivative with respect to one conductance is the
  squared voltage across it at 1 V, hence also in [0, 1]. The voltages come
  from the scipy reference.
  """
  wires = REGIMES[regime][1]
  g = _tile(regime, shape, "thomson")
  grad = jax.grad(lambda g: jnp.sum(circuit.effective_conductance(
      g, wires, direction=direction, method=method)))(jnp.asarray(g))
  lines = g.shape[0] if direction == "forward" else g.shape[1]
  v_row, v_col, _ = reference.node_voltages(g, np.ones(lines), wires,
                                            direction=direction)
  np.testing.assert_allclose(np.asarray(grad), (v_row - v_col) ** 2,
                             rtol=1e-9, atol=0)


_R_FIELDS = ("r_row", "r_col", "r_source", "r_sense", "r_source_backward",
             "r_sense_backward")


def _objective(g, c, direction):
  """Scalar sum(c * G_eff) / sum(g) of a tile, as a function of resistances."""
  def kernel(r):
    wires = Wires(**dict(zip(_R_FIELDS, r)))  # traced: validation skipped
    return jnp.sum(c * circuit.effective_conductance(
        jnp.asarray(g), wires, direction=direction)) / g.sum()

  def scipy(r):
    wires = Wires(**dict(zip(_R_FIELDS, r)))
    return np.sum(c * reference.effective_conductance(
        g, wires, direction=direction)) / g.sum()
  return kernel, scipy


def _resistance_vector(wires):
  return np.array([getattr(wires, f) for f in _R_FIELDS], np.float64)


@pytest.mark.parametrize("read", ["forward", "backward_own"])
@pytest.mark.parametrize("regime", list(REGIMES))
def test_grad_wrt_resistances_matches_reference(regime, read):
  wires, direction = _read(regime, read)
  if read == "forward":  # concrete values, so that the six leaves are floats
    wires = dataclasses.replace(wires, r_source_backward=7.0,
                                r_sense_backward=9.0)
  g = _tile(regime, _GRAD_SHAPE, "r-grad")
  c = _rng("r-grad", regime).uniform(0.5, 1.5, _GRAD_SHAPE)
  kernel, scipy = _objective(g, c, direction)
  r0 = _resistance_vector(wires)
  grad = np.asarray(jax.grad(kernel)(jnp.asarray(r0)))
  # The terminals of the other direction do not take part.
  unused = [2, 3] if direction == "backward" else [4, 5]
  np.testing.assert_array_equal(grad[unused], 0.0)
  for k in sorted(set(range(6)) - set(unused)):
    # Fourth-order central difference. G_eff varies on the scale of the
    # device resistances (>= 1 kOhm), so h = 2% of a wire resistance has a
    # truncation error ~1e-12, and the LU's ~1e-14 rounding stays < 1e-8.
    h = 0.02 * r0[k]
    e = np.zeros(6)
    e[k] = h
    fd = (scipy(r0 - 2 * e) - 8 * scipy(r0 - e) + 8 * scipy(r0 + e)
          - scipy(r0 + 2 * e)) / (12 * h)
    np.testing.assert_allclose(grad[k], fd, rtol=1e-6,
                               err_msg=f"d/d{_R_FIELDS[k]}")


@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize("field", ["r_row", "r_col", "r_source", "r_sense"])
def test_grad_wrt_resistance_at_zero_matches_reference(field, direction):
  # r = 0 is legal and common (DESIGN.md section 2); the derivative there is
  # the one-sided one, which the reference gives by a fourth-order one-sided
  # difference (G_eff is analytic in r around 0).
  wires = dataclasses.replace(REGIMES["spintronic"][1], **{field: 0.0})
  g = _tile("spintronic", _GRAD_SHAPE, "zero-grad")
  c = _rng("zero-grad").uniform(0.5, 1.5, _GRAD_SHAPE)
  kernel, scipy = _objective(g, c, direction)
  r0 = _resistance_vector(dataclasses.replace(
      wires, r_source_backward=wires.r_source,
      r_sense_backward=wires.r_sense))
  k = _R_FIELDS.index(field)
  if direction == "backward" and k in (2, 3):
    k += 2  # the backward read uses the backward terminals
  grad = float(jax.grad(kernel)(jnp.asarray(r0))[k])
  h = 0.05
  e = np.zeros(6)
  e[k] = h
  f = [scipy(r0 + i * e) for i in range(5)]
  fd = (-25 * f[0] + 48 * f[1] - 36 * f[2] + 16 * f[3] - 3 * f[4]) / (12 * h)
  np.testing.assert_allclose(grad, fd, rtol=1e-6,
                             err_msg=f"d/d{_R_FIELDS[k]} at 0, {direction}")


_MEMORY_PROBE = textwrap.dedent("""
    import resource
    import jax
    import jax.numpy as jnp
    import numpy as np
    jax.config.update("jax_enable_x64", True)
    from rxjax.circuit import Wires, effective_conductance
    g = jnp.asarray(1 / np.random.default_rng(0).uniform(1e5, 1e6, (256, 256)))
    wires = Wires(r_row=1.0, r_col=4.6, r_source=100.0, r_sense=100.0)
    g.block_until_ready()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    grad = jax.grad(lambda g: jnp.sum(effective_conductance(g, wires)))(g)
    grad = np.asarray(grad)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(after - before, grad.min(), grad.max(), np.isfinite(grad).all())
""")


@pytest.mark.slow
def test_grad_256_memory():
  # A fresh process, so that the peak RSS (ru_maxrss, KiB on Linux) is this
  # gradient's and not that of whatever ran earlier in the pytest worker.
  out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE],
                       capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stderr
  delta_kib, g_min, g_max, finite = out.stdout.split()
  print(f"peak RSS grew {int(delta_kib) / 1024 ** 2:.2f} GiB")
  assert int(delta_kib) < 2 * 1024 ** 2, f"peak RSS grew {delta_kib} KiB"
  assert finite == "True"
  # Thomson's principle (see above): every entry lies in [0, 1].
  assert 0.0 <= float(g_min) <= float(g_max) <= 1.0


_BATCH_GRAD_PROBE = textwrap.dedent("""
    import sys
    import jax
    import jax.numpy as jnp
    import numpy as np
    from rxjax.circuit import Wires, effective_conductance
    g = 1 / np.random.default_rng(1).uniform(1e5, 1e6, (8, 128, 128))
    wires = Wires(r_row=1.0, r_col=4.6, r_source=100.0, r_sense=100.0)
    grad = jax.jit(jax.grad(lambda g: jnp.sum(effective_conductance(
        g, wires))))(jnp.asarray(g, jnp.float32))
    np.save(sys.argv[1], g)
    np.save(sys.argv[2], np.asarray(grad))
""")


@pytest.mark.slow
def test_grad_of_a_batch_of_128_tiles(tmp_path):
  """The reverse-mode derivative of eight 128 x 128 tiles' solve in one
  batch (nested dissection, float32): it crashed XLA:CPU (a YNNPACK
  matrix-product kernel) when the tiles were vmapped together
  (`circuit.geff` now maps them one at a time). Run in a fresh process, so
  that a crash fails this test only; checked against Thomson's principle
  (see above) with scipy's node voltages for two of the tiles."""
  g_path, grad_path = tmp_path / "g.npy", tmp_path / "grad.npy"
  out = subprocess.run(
      [sys.executable, "-c", _BATCH_GRAD_PROBE, str(g_path), str(grad_path)],
      capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
  g, grad = np.load(g_path), np.load(grad_path)
  wires = Wires(r_row=1.0, r_col=4.6, r_source=100.0, r_sense=100.0)
  for k in (0, 7):
    v_row, v_col, _ = reference.node_voltages(
        np.asarray(g[k], np.float32).astype(np.float64), np.ones(128), wires)
    np.testing.assert_allclose(grad[k], (v_row - v_col) ** 2, rtol=1e-3,
                               atol=1e-6)


# ---------------------------------------------------------------------------
# 7. Node voltages.


@pytest.mark.parametrize("read", READS)
@pytest.mark.parametrize("shape", [(5, 11), (11, 5)], ids=_shape_id)
@pytest.mark.parametrize("regime", ["reram", "spintronic"])
def test_node_voltages_match_reference(regime, shape, read):
  wires, direction = _read(regime, read)
  g = _tile(regime, shape, "nodes")
  lines = shape[0] if direction == "forward" else shape[1]
  v = _rng("nodes", regime, shape).uniform(0.05, 1.0, lines)
  out = circuit.node_voltages(jnp.asarray(g), jnp.asarray(v), wires,
                              direction=direction)
  v_row, v_col, i_out = reference.node_voltages(g, v, wires,
                                                direction=direction)
  assert out.v_row.shape == out.v_col.shape == shape
  assert out.i_out.shape == (shape[1] if direction == "forward" else shape[0],)
  atol = 1e-9 * np.max(np.abs(v))
  np.testing.assert_allclose(np.asarray(out.v_row), v_row, rtol=0, atol=atol)
  np.testing.assert_allclose(np.asarray(out.v_col), v_col, rtol=0, atol=atol)
  np.testing.assert_allclose(np.asarray(out.i_out), i_out,
                             rtol=RTOL_REFERENCE, atol=0)
  g_eff = _kernel(g, wires, direction)
  linear = v @ g_eff if direction == "forward" else g_eff @ v
  np.testing.assert_allclose(np.asarray(out.i_out), linear, rtol=1e-10, atol=0)


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_node_voltages_ideal_wires(direction):
  # No wire or terminal resistance: rows sit at their input, columns at the
  # virtual ground (forward), or the reverse; the currents are ideal.
  m, n = 11, 5
  g = _tile("pcm", (m, n), "ideal-nodes")
  rng = _rng("ideal-nodes", direction)
  if direction == "forward":
    v = rng.uniform(-1, 1, m)
    want_row, want_col = np.repeat(v[:, None], n, 1), np.zeros((m, n))
    want_i = v @ g
  else:
    v = rng.uniform(-1, 1, n)
    want_row, want_col = np.zeros((m, n)), np.repeat(v[None, :], m, 0)
    want_i = g @ v
  out = circuit.node_voltages(jnp.asarray(g), jnp.asarray(v), Wires(),
                              direction=direction)
  np.testing.assert_allclose(np.asarray(out.v_row), want_row, atol=1e-15)
  np.testing.assert_allclose(np.asarray(out.v_col), want_col, atol=1e-15)
  np.testing.assert_allclose(np.asarray(out.i_out), want_i, rtol=1e-13)


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_node_voltages_broadcast_leading_axes(direction):
  wires, _ = _read("spintronic", "backward_own")
  g = _tile("spintronic", (2, 1, 5, 11), "broadcast")
  lines = 5 if direction == "forward" else 11
  v = _rng("broadcast", direction).uniform(0.05, 1.0, (3, lines))
  out = circuit.node_voltages(jnp.asarray(g), jnp.asarray(v), wires,
                              direction=direction)
  assert out.v_row.shape == out.v_col.shape == (2, 3, 5, 11)
  assert out.i_out.shape == (2, 3, 16 - lines)
  for a, b in np.ndindex(2, 3):
    v_row, v_col, i_out = reference.node_voltages(g[a, 0], v[b], wires,
                                                  direction=direction)
    np.testing.assert_allclose(np.asarray(out.i_out[a, b]), i_out,
                               rtol=RTOL_REFERENCE, atol=0)
    np.testing.assert_allclose(np.asarray(out.v_row[a, b]), v_row, atol=1e-9)
    np.testing.assert_allclose(np.asarray(out.v_col[a, b]), v_col, atol=1e-9)


# ---------------------------------------------------------------------------
# 8. Errors.


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf"),
                                   float("-inf"), "ten"], ids=str)
@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(Wires)])
def test_wires_rejects_bad_resistance(field, value):
  with pytest.raises(ValueError) as err:
    Wires(**{field: value})
  message = str(err.value)
  assert field in message and repr(value) in message, message


def test_wires_accepts_zero_ints_and_numpy_scalars():
  wires = Wires(r_row=0.0, r_col=np.float32(2.0), r_source=1, r_sense=0,
                r_source_backward=None, r_sense_backward=0.0)
  assert wires.terminals("forward") == (0.0, 2.0, 1, 0)
  assert wires.terminals("backward") == (2.0, 0.0, 1, 0.0)


_GOOD_G = np.full((3, 4), 1e-5)


@pytest.mark.parametrize("g, kwargs, error, pattern", [
    (np.full((4,), 1e-5), {}, ValueError, r"rank"),
    (np.float64(1e-5), {}, ValueError, r"rank"),
    (np.zeros((0, 4)), {}, ValueError, r"\(0, 4\)"),
    (np.zeros((3, 0)), {}, ValueError, r"\(3, 0\)"),
    (np.zeros((2, 3, 0)), {}, ValueError, r"\(2, 3, 0\)"),
    (np.ones((3, 4), np.int32), {}, TypeError, r"int32"),
    (np.ones((3, 4), np.complex128), {}, TypeError, r"complex128"),
    (_GOOD_G, {"direction": "sideways"}, ValueError, r"sideways"),
    (_GOOD_G, {"method": "fast"}, ValueError, r"fast"),
    (_GOOD_G, {"method": "nested", "wires": Wires(r_col=1.0)}, ValueError,
     r"nested.*r_row, r_col > 0"),
], ids=["rank1", "scalar", "empty_rows", "empty_cols", "empty_batch_tile",
        "int", "complex", "direction", "method", "nested_zero_wire"])
def test_effective_conductance_rejects(g, kwargs, error, pattern):
  kwargs = {"wires": REGIMES["reram"][1], **kwargs}
  with pytest.raises(error, match=pattern):
    circuit.effective_conductance(g, **kwargs)


@pytest.mark.parametrize("v_shape, direction, pattern", [
    ((4,), "forward", r"\[\.\.\., 3\].*\(4,\)"),
    ((3,), "backward", r"\[\.\.\., 4\].*\(3,\)"),
    ((2, 5), "forward", r"\(2, 5\)"),
    ((), "forward", r"\(\)"),
], ids=["forward_len", "backward_len", "batched_len", "scalar"])
def test_node_voltages_rejects_wrong_inputs(v_shape, direction, pattern):
  with pytest.raises(ValueError, match=pattern):
    circuit.node_voltages(_GOOD_G, np.ones(v_shape), REGIMES["reram"][1],
                          direction=direction)


def test_node_voltages_rejects_bad_direction():
  with pytest.raises(ValueError, match="sideways"):
    circuit.node_voltages(_GOOD_G, np.ones(3), Wires(), direction="sideways")



def test_reciprocal_wires_read_the_same_g_eff_both_ways():
  """Reciprocity: with the same terminal on every line in both reads the
  backward G_eff equals the forward one; with other terminals it does not
  (so `crossbar` may skip the backward solve only in the first case)."""
  g = jax.random.uniform(jax.random.key(0), (2, 9, 7), jnp.float64,
                         minval=1e-6, maxval=1e-5)
  same = circuit.Wires(r_row=1.0, r_col=4.6, r_source=100.0, r_sense=50.0,
                       r_source_backward=50.0, r_sense_backward=100.0)
  other = circuit.Wires(r_row=1.0, r_col=4.6, r_source=100.0, r_sense=50.0)
  assert same.reciprocal and not other.reciprocal
  assert circuit.Wires(r_row=1.0, r_source=7.0, r_sense=7.0).reciprocal
  f, b = (circuit.effective_conductance(g, same, direction=d)
          for d in ("forward", "backward"))
  np.testing.assert_allclose(b, f, rtol=1e-12, atol=0)
  f, b = (circuit.effective_conductance(g, other, direction=d)
          for d in ("forward", "backward"))
  assert np.abs(b - f).max() > 1e-3 * np.abs(f).max()
  traced = jax.jit(lambda r: jnp.asarray(circuit.Wires(
      r_source=r, r_sense=r).reciprocal))(1.0)
  assert not traced
