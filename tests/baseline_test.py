"""rxjax.circuit.series_model (the MNSIM-style baseline) against closed forms.

The series model puts each device in series with the wire on its own current
path only. The checks: it agrees with the exact network where the network
really is one series chain (a 1x1 tile, a tile with a single conducting
device), it reduces to `g` without parasitics, it matches the path-counting
formula written out cell by cell (DESIGN.md section 2), and on a full ReRAM
tile it misses most of the IR drop the exact model (`effective_conductance`)
sees. Runs in float64 (tests/conftest.py) unless a test casts.
"""

import jax.numpy as jnp
import numpy as np
import pytest

from rxjax import circuit

# ReRAM 100 kOhm-1 MOhm, the wires and terminals of RxNN-like tiles.
G_MIN, G_MAX = 1e-6, 1e-5
RERAM = circuit.Wires(r_row=1.0, r_col=4.6, r_source=100.0, r_sense=100.0)
ASYMMETRIC = circuit.Wires(r_row=2.0, r_col=3.0, r_source=50.0, r_sense=70.0,
                           r_source_backward=20.0, r_sense_backward=30.0)


def _path_resistance(m, n, i, j, wires, direction):
  """Wire resistance on cell (i, j)'s own path, counted segment by segment."""
  if direction == "forward":
    # v[i] -> r_source -> a[i, 0] -> j row segments -> a[i, j]; device;
    # b[i, j] -> M-1-i column segments -> b[M-1, j] -> r_sense.
    return (wires.r_source + j * wires.r_row + (m - 1 - i) * wires.r_col
            + wires.r_sense)
  r_source = (wires.r_source if wires.r_source_backward is None
              else wires.r_source_backward)
  r_sense = (wires.r_sense if wires.r_sense_backward is None
             else wires.r_sense_backward)
  # v[j] -> r_source_bwd -> b[M-1, j] -> M-1-i column segments -> b[i, j];
  # device; a[i, j] -> j row segments -> a[i, 0] -> r_sense_bwd.
  return r_source + (m - 1 - i) * wires.r_col + j * wires.r_row + r_sense


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_one_by_one_tile_is_exact(direction):
  g = jnp.array([[3e-6]])
  wires = circuit.Wires(r_row=7.0, r_col=11.0, r_source=100.0, r_sense=40.0)
  closed = 1 / (100.0 + 1 / 3e-6 + 40.0)
  np.testing.assert_allclose(
      circuit.series_model(g, wires, direction=direction), [[closed]],
      rtol=1e-14)
  np.testing.assert_allclose(
      circuit.effective_conductance(g, wires, direction=direction), [[closed]],
      rtol=1e-12)


@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_zero_resistances_give_g(direction, dtype):
  rng = np.random.default_rng(0)
  g = jnp.asarray(rng.uniform(G_MIN, G_MAX, (2, 5, 7)), dtype)
  out = circuit.series_model(g, circuit.Wires.ideal(), direction=direction)
  assert out.dtype == dtype and out.shape == g.shape
  np.testing.assert_array_equal(out, g)


@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize("shape", [(6, 4), (3, 8), (5, 5)])
def test_matches_path_counting(direction, shape):
  m, n = shape
  rng = np.random.default_rng(1)
  g = rng.uniform(G_MIN, G_MAX, (3, m, n))
  g[0, 1, 2] = 0.0  # an open device stays open
  want = np.zeros_like(g)
  for i in range(m):
    for j in range(n):
      r = _path_resistance(m, n, i, j, ASYMMETRIC, direction)
      with np.errstate(divide="ignore"):
        want[:, i, j] = np.where(g[:, i, j] > 0, 1 / (r + 1 / g[:, i, j]), 0)
  got = circuit.series_model(jnp.asarray(g), ASYMMETRIC, direction=direction)
  np.testing.assert_allclose(got, want, rtol=1e-13, atol=0)
  assert got[0, 1, 2] == 0.0


@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize("cell", [(0, 0), (0, 5), (4, 0), (4, 5), (2, 3)])
def test_single_conducting_cell_is_exact(direction, cell):
  # With every other device open, the network is one series chain: the
  # driver, the segments on the cell's path, the device and the sense; the
  # open wire stubs beyond carry no current. So the series model is exact.
  m, n = 5, 6
  g = np.zeros((m, n))
  g[cell] = G_MAX
  g = jnp.asarray(g)
  exact = circuit.effective_conductance(g, ASYMMETRIC, direction=direction,
                                        method="sweep")
  series = circuit.series_model(g, ASYMMETRIC, direction=direction)
  np.testing.assert_allclose(series, exact, rtol=1e-12, atol=1e-22)
  r = _path_resistance(m, n, *cell, ASYMMETRIC, direction)
  np.testing.assert_allclose(series[cell], 1 / (r + 1 / G_MAX), rtol=1e-14)


def test_misses_shared_wire_drop_on_full_reram_tile():
  # All 64x64 devices at g_max, all inputs at one read voltage: every column
  # carries 64 cells' current through r_sense and every row 64 cells' current
  # through r_source. The series model charges each cell only its own
  # current's drop, so its column error is a small fraction of the exact one.
  m = n = 64
  g = jnp.full((m, n), G_MAX)
  v = jnp.full((m,), 0.25)
  ideal = v @ g
  err_exact = (ideal - v @ circuit.effective_conductance(g, RERAM)) / ideal
  err_series = (ideal - v @ circuit.series_model(g, RERAM)) / ideal
  assert np.all(np.asarray(err_series) > 0)
  assert np.all(np.asarray(err_exact) > 0)
  assert float(err_series.mean()) < 0.2 * float(err_exact.mean())
