"""Per-input node voltages of a tile (IR-drop maps, cross-checks)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rxjax.circuit.sweep import (currents_through, row_chains, row_coupling,
                                 row_impedance, series_step)
from rxjax.circuit.wires import (Direction, Wires, check_direction, check_g,
                                 check_wires, flip, oriented)

class NodeVoltages(NamedTuple):
  """Solution of the tile network for given inputs.

  v_row: `[..., M, N]` voltages of the row nodes a[i, j] (volts).
  v_col: `[..., M, N]` voltages of the column nodes b[i, j] (volts).
  i_out: output currents (amperes): `[..., N]` into the column virtual
    grounds (forward) or `[..., M]` into the row virtual grounds (backward).
  """

  v_row: jax.Array
  v_col: jax.Array
  i_out: jax.Array


def _sweep_nodes(g, v, r_row, r_col, r_source, r_sense):
  """Node voltages of one tile g: [M, N] for one input v: [M]."""
  m, n = g.shape
  rows = row_chains(g, r_row, r_source)

  def down(carry, xs):
    s, w, j = carry
    g_i, sigma_i, z_i, log_t_i, v_i = xs
    s, w = series_step(s, w, r_col, "traced")
    j = currents_through(j, s, w, r_col, "traced")
    saved = (s, w, j)
    s = s + sigma_i
    w = w + row_coupling(g_i, z_i, log_t_i)
    j = j + v_i * sigma_i
    return (s, w, j), saved

  init = (jnp.zeros((n,), g.dtype), jnp.zeros((n, n), g.dtype),
          jnp.zeros((n,), g.dtype))
  (s, w, j), (s_up, w_up, j_up) = jax.lax.scan(
      down, init, (g, rows.sigma, rows.z, rows.log_t, v))
  s, w = series_step(s, w, r_sense, "traced")
  i_out = currents_through(j, s, w, r_sense, "traced")
  u_last = r_sense * i_out

  def up(u, xs):
    s_i, w_i, j_i = xs
    # Current arriving at b[i] from above through the wire segment.
    y_u = (s_i + w_i.sum(-1)) * u - w_i @ u
    u_above = u + r_col * (j_i - y_u)
    return u_above, u

  _, v_col = jax.lax.scan(up, u_last, (s_up, w_up, j_up), reverse=True)

  def row_voltages(g_i, z_i, log_t_i, u_i, v_i):
    return (row_impedance(z_i, log_t_i) @ (g_i * u_i)
            + jnp.exp(log_t_i) * v_i)

  v_row = jax.vmap(row_voltages)(g, rows.z, rows.log_t, v_col, v)
  return v_row, v_col, i_out


@jax.jit
def _nodes_impl(g, v, resistances):
  r_row, r_col, r_source, r_sense = (jnp.asarray(r, g.dtype)
                                     for r in resistances)
  fn = lambda t, x: _sweep_nodes(t, x, r_row, r_col, r_source, r_sense)
  return jax.vmap(fn)(g, v)


def node_voltages(g, v, wires: Wires, *,
                  direction: Direction = "forward") -> NodeVoltages:
  """Exact per-input solve of the tile network.

  Args:
    g: `[..., M, N]` device conductances in siemens.
    v: input voltages (volts): `[..., M]` on the rows (forward) or `[..., N]`
      on the columns (backward). Leading axes broadcast against those of g.
    wires: the tile's parasitic resistances.
    direction: "forward" or "backward" (DESIGN.md section 2).

  Returns:
    NodeVoltages with every row and column node voltage and the output
    currents, in the dtype of g.
  """
  check_direction(direction)
  g = check_g(g)
  check_wires(wires)
  m, n = g.shape[-2:]
  v = jnp.asarray(v, g.dtype)
  want = m if direction == "forward" else n
  if v.ndim < 1 or v.shape[-1] != want:
    raise ValueError(
        f"`v` must have shape [..., {want}] for a {direction} read of a "
        f"{m}x{n} tile, got {v.shape}")
  batch = jnp.broadcast_shapes(g.shape[:-2], v.shape[:-1])
  g_b = jnp.broadcast_to(g, batch + (m, n)).reshape((-1, m, n))
  v_b = jnp.broadcast_to(v, batch + (want,)).reshape((-1, want))
  g_o, resistances, _ = oriented(g_b, wires, direction)
  if direction == "backward":
    # Driven lines are the columns, bottom first.
    v_b = v_b[:, ::-1]
  v_row, v_col, i_out = _nodes_impl(g_o, v_b, resistances)
  if direction == "backward":
    # In the flipped tile the driven "rows" are our columns.
    v_row, v_col = flip(v_col), flip(v_row)
    i_out = i_out[:, ::-1]
  k = i_out.shape[-1]
  return NodeVoltages(v_row.reshape(batch + (m, n)),
                      v_col.reshape(batch + (m, n)),
                      i_out.reshape(batch + (k,)))
