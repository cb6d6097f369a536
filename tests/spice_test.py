"""rxjax.circuit against ngspice (rxjax.spice) and the scipy MNA reference.

ngspice is the external reference: every tile read here is simulated by
ngspice from the deck of DESIGN.md section 2 and compared with
`effective_conductance` / `node_voltages` (the kernel) and with
`rxjax.reference` (scipy sparse LU), in float64. Outside CI the ngspice tests
are skipped when ngspice is missing; with `CI` set they run and fail.
"""

import os
import shutil

import jax.numpy as jnp
import numpy as np
import pytest

from rxjax import circuit, reference, spice
from rxjax.circuit import Wires
from regimes import REGIMES

_IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false")
requires_ngspice = pytest.mark.skipif(
    shutil.which("ngspice") is None and not _IN_CI,
    reason="ngspice is not installed (apt-get install -y ngspice); in CI "
    "(CI set) these tests run and fail instead")

RTOL = 1e-9

SHAPES = [(1, 1), (3, 5), (8, 8), (16, 12), (32, 32)]


def _tile(regime, shape, seed):
  (r_lo, r_hi), wires = REGIMES[regime]
  rng = np.random.default_rng(seed)
  g = 1.0 / rng.uniform(r_lo, r_hi, size=shape)
  return rng, g, wires


def _inputs(rng, g, direction):
  # Positive inputs (read voltages) so that every output current is well away
  # from 0 and a per-entry relative tolerance is meaningful.
  m, n = g.shape
  return rng.uniform(0.05, 1.0, size=m if direction == "forward" else n)


def _kernel_currents(g, v, wires, direction):
  g_eff = circuit.effective_conductance(jnp.asarray(g), wires,
                                        direction=direction)
  assert g_eff.dtype == jnp.float64  # tests/conftest.py enables x64
  g_eff = np.asarray(g_eff)
  return v @ g_eff if direction == "forward" else g_eff @ v


def _reference_currents(g, v, wires, direction):
  g_eff = reference.effective_conductance(g, wires, direction=direction)
  return v @ g_eff if direction == "forward" else g_eff @ v


def _check_against_ngspice(g, v, wires, direction):
  """ngspice vs kernel and vs scipy, per entry; returns ngspice's currents."""
  i_spice = spice.simulate(g, v, wires, direction=direction)
  k = g.shape[1] if direction == "forward" else g.shape[0]
  assert i_spice.shape == (k,)
  np.testing.assert_allclose(
      _kernel_currents(g, v, wires, direction), i_spice, rtol=RTOL, atol=0,
      err_msg=f"kernel vs ngspice, {direction}, {g.shape}, {wires}")
  np.testing.assert_allclose(
      _reference_currents(g, v, wires, direction), i_spice, rtol=RTOL,
      atol=0, err_msg=f"scipy reference vs ngspice, {direction}, {g.shape}")
  return i_spice


@requires_ngspice
@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("regime", list(REGIMES))
def test_matches_ngspice(regime, shape, direction):
  rng, g, wires = _tile(regime, shape, seed=sum(shape) + len(regime))
  v = _inputs(rng, g, direction)
  i_spice = _check_against_ngspice(g, v, wires, direction)
  assert np.all(i_spice > 0)  # current flows into the virtual grounds


@requires_ngspice
@pytest.mark.parametrize("shape", [(8, 8), (16, 12), (32, 32)],
                         ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("regime", list(REGIMES))
def test_backward_terminals_match_ngspice(regime, shape):
  """Backward drivers / sense amplifiers that differ from the forward ones."""
  rng, g, wires = _tile(regime, shape, seed=7 + sum(shape))
  wires = Wires(r_row=wires.r_row, r_col=wires.r_col,
                r_source=wires.r_source, r_sense=wires.r_sense,
                r_source_backward=3.0 * wires.r_source,
                r_sense_backward=0.2 * wires.r_sense)
  v = _inputs(rng, g, "backward")
  i_spice = _check_against_ngspice(g, v, wires, "backward")
  # The backward terminals matter: with the forward ones the currents differ.
  same_terminals = Wires(r_row=wires.r_row, r_col=wires.r_col,
                         r_source=wires.r_source, r_sense=wires.r_sense)
  i_default = _kernel_currents(g, v, same_terminals, "backward")
  assert np.max(np.abs(i_default - i_spice) / i_spice) > 1e-4


@requires_ngspice
@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize("wires", [
    Wires(r_row=1.0, r_col=0.0, r_source=0.0, r_sense=100.0),
    Wires(r_row=0.0, r_col=4.6, r_source=100.0, r_sense=0.0),
    Wires(r_row=2.0, r_col=3.0, r_source=0.0, r_sense=0.0,
          r_source_backward=50.0, r_sense_backward=0.0),
    Wires(r_row=0.0, r_col=0.0, r_source=20.0, r_sense=30.0),
], ids=["rsource0-rcol0", "rrow0-rsense0", "terminals0", "wires0"])
def test_zero_resistances_match_ngspice(wires, direction):
  """Zero resistances are 0 V sources in the deck; g == 0 devices are open."""
  rng = np.random.default_rng(3)
  g = 1.0 / rng.uniform(1e3, 1e4, size=(6, 7))
  g[2, :] = 0.0  # a row with no devices
  g[rng.uniform(size=g.shape) < 0.2] = 0.0
  g[:, 4] = 1.0 / 2e3  # keep every column connected: currents stay > 0
  v = _inputs(rng, g, direction)
  _check_against_ngspice(g, v, wires, direction)


@requires_ngspice
@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_ideal_wires_give_g(direction):
  """All resistances 0: ngspice (all wires are 0 V sources) gives v @ g."""
  rng = np.random.default_rng(11)
  g = 1.0 / rng.uniform(1e4, 1e5, size=(5, 4))
  v = _inputs(rng, g, direction)
  i_spice = spice.simulate(g, v, Wires.ideal(), direction=direction)
  np.testing.assert_allclose(i_spice, v @ g if direction == "forward"
                             else g @ v, rtol=RTOL, atol=0)


@requires_ngspice
@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_one_device_closed_form(direction):
  """1x1 tile: a series circuit, i = v / (r_source + 1/g + r_sense)."""
  wires = Wires(r_row=7.0, r_col=9.0, r_source=100.0, r_sense=40.0,
                r_source_backward=60.0, r_sense_backward=10.0)
  _, _, r_source, r_sense = wires.terminals(direction)
  g = np.array([[1.0 / 3.3e3]])
  i_spice = spice.simulate(g, [0.7], wires, direction=direction)
  np.testing.assert_allclose(i_spice, [0.7 / (r_source + 3.3e3 + r_sense)],
                             rtol=1e-13, atol=0)


@requires_ngspice
def test_signed_inputs_match_ngspice():
  """Inputs of both signs (backward reads carry signed errors)."""
  rng, g, wires = _tile("spintronic", (16, 12), seed=5)
  for direction in ("forward", "backward"):
    k = g.shape[0] if direction == "forward" else g.shape[1]
    v = rng.uniform(-1.0, 1.0, size=k)
    i_spice = spice.simulate(g, v, wires, direction=direction)
    scale = np.max(np.abs(i_spice))
    np.testing.assert_allclose(_kernel_currents(g, v, wires, direction),
                               i_spice, rtol=0, atol=RTOL * scale)


@requires_ngspice
@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize("regime", ["reram", "spintronic"])
def test_node_voltages_match_ngspice(regime, direction):
  rng, g, wires = _tile(regime, (4, 5), seed=2)
  wires = Wires(r_row=wires.r_row, r_col=wires.r_col,
                r_source=wires.r_source, r_sense=wires.r_sense,
                r_source_backward=2.0 * wires.r_source,
                r_sense_backward=0.5 * wires.r_sense)
  v = _inputs(rng, g, direction)
  v_row, v_col, i_out = spice.node_voltages(g, v, wires, direction=direction)
  assert v_row.shape == v_col.shape == g.shape
  kernel = circuit.node_voltages(jnp.asarray(g), jnp.asarray(v), wires,
                                 direction=direction)
  for name, ours, theirs in (("v_row", kernel.v_row, v_row),
                             ("v_col", kernel.v_col, v_col),
                             ("i_out", kernel.i_out, i_out)):
    np.testing.assert_allclose(np.asarray(ours), theirs, rtol=RTOL, atol=0,
                               err_msg=f"kernel {name} vs ngspice")
  ref_row, ref_col, ref_i = reference.node_voltages(g, v, wires,
                                                    direction=direction)
  np.testing.assert_allclose(ref_row, v_row, rtol=RTOL, atol=0)
  np.testing.assert_allclose(ref_col, v_col, rtol=RTOL, atol=0)
  np.testing.assert_allclose(ref_i, i_out, rtol=RTOL, atol=0)


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_netlist_elements(direction):
  """The deck has exactly the elements of DESIGN.md section 2."""
  m, n = 3, 4
  g = np.full((m, n), 1e-4)
  g[1, 2] = 0.0
  wires = Wires(r_row=1.0, r_col=0.0, r_source=0.0, r_sense=50.0)
  v = np.ones(m if direction == "forward" else n)
  deck = spice.netlist(g, v, wires, direction=direction)
  names = [line.split()[0] for line in deck.splitlines()[1:]
           if line and line[0] not in "*."]
  count = lambda prefix: sum(name.startswith(prefix) for name in names)
  driven, sensed = (m, n) if direction == "forward" else (n, m)
  assert count("rrow_") == m * (n - 1)
  assert count("vshort_col_") == n * (m - 1) and count("rcol_") == 0
  assert count("rdev_") == m * n - 1 and "rdev_1_2" not in names
  assert count("vin_") == driven and count("vshort_source_") == driven
  assert count("rsense_") == sensed and count("vsense_") == sensed
  first_driven = "a_0_0" if direction == "forward" else f"b_{m - 1}_0"
  assert f"vshort_source_0 src_0 {first_driven} dc 0" in deck
  first_sensed = f"b_{m - 1}_0" if direction == "forward" else "a_0_0"
  assert f"rsense_0 {first_sensed} gnd_0 50.0" in deck


@pytest.mark.parametrize("g, v, direction, field", [
    (np.ones(3), np.ones(3), "forward", "`g`"),
    (-np.ones((2, 2)), np.ones(2), "forward", "`g`"),
    (np.full((2, 2), np.nan), np.ones(2), "forward", "`g`"),
    (np.ones((2, 3)), np.ones(3), "forward", "`v`"),
    (np.ones((2, 3)), np.ones(2), "backward", "`v`"),
    (np.ones((2, 3)), np.ones(2), "sideways", "`direction`"),
])
def test_bad_inputs_raise(g, v, direction, field):
  with pytest.raises(ValueError, match=field):
    spice.netlist(g, v, Wires(), direction=direction)
  with pytest.raises(ValueError, match=field):
    spice.simulate(g, v, Wires(), direction=direction)


def test_missing_ngspice_raises(monkeypatch):
  monkeypatch.setenv("PATH", "")
  with pytest.raises(RuntimeError, match="apt-get install -y ngspice"):
    spice.simulate(np.ones((2, 2)), np.ones(2), Wires())


def _fake_ngspice(tmp_path, monkeypatch, body):
  script = tmp_path / "ngspice"
  script.write_text("#!/bin/sh\n" + body + "\n")
  script.chmod(0o755)
  monkeypatch.setenv("PATH", str(tmp_path))


def test_failing_ngspice_reports_stderr(tmp_path, monkeypatch):
  _fake_ngspice(tmp_path, monkeypatch,
                "echo 'Error: singular matrix at a_0_0' >&2\nexit 1")
  with pytest.raises(RuntimeError, match="singular matrix at a_0_0"):
    spice.simulate(np.ones((2, 2)), np.ones(2), Wires(r_sense=1.0))


def test_ngspice_timeout_raises(tmp_path, monkeypatch):
  sleep = shutil.which("sleep")
  if sleep is None:
    pytest.skip("no sleep executable")
  _fake_ngspice(tmp_path, monkeypatch, f"exec {sleep} 10")
  with pytest.raises(RuntimeError, match="did not finish within"):
    spice.simulate(np.ones((2, 2)), np.ones(2), Wires(), timeout=0.5)
