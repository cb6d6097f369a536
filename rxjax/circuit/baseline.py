"""Baseline: a per-cell series-resistance model (MNSIM / NeuroSim style)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rxjax.circuit.wires import (Direction, Wires, check_direction, check_g,
                                 check_wires, oriented)

def series_model(g, wires: Wires, *,
                 direction: Direction = "forward") -> jax.Array:
  """Simple error model: each cell in series with the wire on its own path.

  This is the position-dependent parasitic model of MNSIM and NeuroSim (RxNN
  section VIII-A, fig. 10, "MNSIM"), kept beside the exact model to show what
  it misses. Every device sees, in series, only the resistances on its own
  current path and nothing else. Forward read of cell (i, j) (DESIGN.md
  section 2): the driver `r_source` into `a[i, 0]`, `j` row segments to
  `a[i, j]`, the device, `M - 1 - i` column segments from `b[i, j]` down to
  `b[M - 1, j]` and `r_sense`:

      R_ij = r_source + j r_row + 1 / g_ij + (M - 1 - i) r_col + r_sense,
      G_ij = 1 / R_ij = g_ij / (1 + g_ij (R_ij - 1 / g_ij)),

  so `g == 0` gives 0. Backward read: the column driver into `b[M - 1, j]`,
  the same `M - 1 - i` column and `j` row segments, the row sense at
  `a[i, 0]`, with the backward terminal resistances.

  What it misses: the other cells' currents, which share the same wires and
  terminals. In a real tile the voltage drop along a row or column is set by
  the sum of all currents through it, so the error grows with the number of
  conducting cells and depends on the whole crossbar state (and, once the
  DAC loading is included, on the inputs); sneak paths through other devices
  are absent too. The series model is exact only when a single device
  conducts (every other g is 0) and otherwise underestimates the IR drop.
  Use `effective_conductance` for the exact answer.

  Args:
    g: `[..., M, N]` device conductances in siemens (>= 0), floating point.
      Leading axes are batch axes.
    wires: the tile's parasitic resistances (ohm).
    direction: "forward" or "backward" (DESIGN.md section 2).

  Returns:
    `[..., M, N]` array in the dtype of `g`, in the same orientation and with
    the same meaning as `effective_conductance` (forward
    `i_out = v @ G`, backward `i_rows = G @ v_cols`). With all resistances
    0 it equals `g`.

  Raises:
    ValueError / TypeError: bad rank, empty axes, non-float dtype or unknown
      direction.
  """
  check_direction(direction)
  g = check_g(g)
  check_wires(wires)
  g_o, resistances, back = oriented(g, wires, direction)
  r_along, r_across, r_source, r_sense = (jnp.asarray(r, g.dtype)
                                          for r in resistances)
  m, n = g_o.shape[-2:]
  # Segments between the driver node a[i, 0] and a[i, j]: j; between b[i, j]
  # and the sensed end b[M - 1, j]: M - 1 - i (forward orientation).
  along = jnp.arange(n, dtype=g.dtype)[None, :]
  across = (m - 1 - jnp.arange(m, dtype=g.dtype))[:, None]
  r_wire = r_source + along * r_along + across * r_across + r_sense
  return back(g_o / (1 + g_o * r_wire))
