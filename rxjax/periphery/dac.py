"""The first stage of the read: input streaming over DAC cycles and the DAC
voltage of every row (ideal, RxNN's resistive divider loaded by the row
load, or the divider solved against the tile's exact row-port admittance)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from rxjax import circuit
from rxjax.periphery.specs import DACSpec, float_array

# ---------------------------------------------------------------------------
# Input streaming.


def n_cycles(dac: DACSpec) -> int:
  """Number of DAC cycles per input: `ceil(input_bits / dac_bits)`, else 1."""
  if dac.input_bits is None or dac.dac_bits is None:
    return 1
  return -(-dac.input_bits // dac.dac_bits)


def cycle_weights(dac: DACSpec) -> np.ndarray:
  """Shift-and-add weights of the cycles.

  `sum_c cw[c] * u_c = q / L_in` for the cycle outputs `u_c` of `stream`:
  `cw[c] = L_dac * 2**(c * dac_bits) / L_in` with `L_dac = 2**dac_bits - 1`,
  `L_in = 2**input_bits - 1`; `[1.]` when one of the two is None.

  Returns:
    `[C]` float64 numpy array, `C = n_cycles(dac)`.
  """
  if dac.input_bits is None or dac.dac_bits is None:
    return np.ones((1,), np.float64)
  l_in = 2.0 ** dac.input_bits - 1
  l_dac = 2.0 ** dac.dac_bits - 1
  c = np.arange(n_cycles(dac), dtype=np.float64)
  return l_dac * 2.0 ** (c * dac.dac_bits) / l_in


def stream(x01, dac: DACSpec) -> jax.Array:
  """Per-cycle normalized DAC outputs of non-negative normalized inputs.

  The input is clipped to [0, 1] and quantized, `q = round(x01 * L_in)`
  (round half to even); cycle c applies the digit
  `d_c = (q >> (c * dac_bits)) & (2**dac_bits - 1)` (c = 0 least
  significant) as `u_c = d_c / L_dac`. The digits are computed with exact
  floating-point operations (divisions by powers of two and floors), so the
  decomposition is exact while `q` is representable: `input_bits <= 24` in
  float32, `<= 53` in float64.

  Args:
    x01: `[...]` normalized inputs (ideally in [0, 1]; clipped).
    dac: the DAC spec (static).

  Returns:
    `[C, ...]` array of `u_c` in [0, 1] on the grid `k / L_dac`, in the dtype
    of x01; `C = n_cycles(dac)`. With `input_bits` None: `C = 1` and
    `u = clip(x01, 0, 1)`. With `dac_bits` None: `C = 1`, `u = q / L_in`.
  """
  q = stream_levels(x01, dac)
  return jnp.stack([stream_cycle(q, c, dac) for c in range(n_cycles(dac))])


def stream_levels(x01, dac: DACSpec) -> jax.Array:
  """The quantized inputs that `stream` splits into cycles.

  Returns:
    `q = round(clip(x01, 0, 1) * L_in)`, the shape and dtype of x01
    (`clip(x01, 0, 1)` with `input_bits` None).
  """
  x = jnp.clip(float_array(x01), 0, 1)
  if dac.input_bits is None:
    return x
  return jnp.round(x * (2.0 ** dac.input_bits - 1))


def stream_cycle(q, c, dac: DACSpec) -> jax.Array:
  """Cycle `c`'s normalized DAC output `u_c` of the levels `q`
  (`stream_levels`): `stream(x01, dac)[c]`, one cycle at a time, so that a
  read need not hold every cycle's inputs at once. `c` may be traced."""
  if dac.input_bits is None:
    return q
  if dac.dac_bits is None:
    return q / (2.0 ** dac.input_bits - 1)
  base = 2.0 ** dac.dac_bits
  if n_cycles(dac) == 1:  # q < base: the one digit is q itself.
    return q / (base - 1)
  # Exact powers of two from a table (a traced `base ** c` need not be).
  shift = jnp.asarray([base ** k for k in range(n_cycles(dac))], q.dtype)[c]
  high = jnp.floor(q / shift)  # q >> (c * dac_bits), exactly.
  return (high - base * jnp.floor(high / base)) / (base - 1)


# ---------------------------------------------------------------------------
# DAC voltages.


def _nominal(dac: DACSpec, nominal_load):
  if dac.nominal_load is not None:
    return dac.nominal_load
  if nominal_load is None:
    raise ValueError(
        f"dac.model={dac.model!r} needs the row load at which the divider is "
        "exact: set `DACSpec.nominal_load` (siemens) or pass "
        "`nominal_load=` to this function")
  return nominal_load


def _g_dac(t, dac: DACSpec, g_nom):
  """Conductance 1/R_DAC of the code whose output is `t` at load `g_nom`.

  From `v_ref * G_dac / (G_dac + G_pd + G_nom) = t`.
  """
  a = t / dac.v_ref
  return a * (1 / dac.r_pd + g_nom) / (1 - a)


def dac_voltage(u, dac: DACSpec, g_load=None, *, nominal_load=None
                ) -> jax.Array:
  """Row voltages of the DAC (RxNN fig. 2a / 4) for normalized codes u.

  "ideal": `v = u * v_read`.

  "divider": the code sets a conductance `G_dac` from the output node
  towards `v_ref` against `G_pd = 1 / r_pd` to ground; the row loads the
  output node with `g_load`. `G_dac` is chosen so that the output is the
  target `t = u * v_read` exactly at the nominal load `G_nom`:
  `G_dac = (t / v_ref) (G_pd + G_nom) / (1 - t / v_ref)`. The actual output
  is `v = v_ref G_dac / (G_dac + G_pd + g_load)`, evaluated in the
  equivalent form `t / (1 + (1 - t / v_ref) (g_load - G_nom) / (G_pd +
  G_nom))`, which returns `t` bit-exactly at `g_load == G_nom` and 0 V at
  `u = 0`. A heavier load (`g_load > G_nom`) lowers the voltage, a lighter
  one raises it. Cost O(M) per input vector.

  Args:
    u: `[...]` normalized DAC outputs in [0, 1] (from `stream`), e.g.
      `[..., M]` per row.
    dac: the DAC spec (static). Model "divider_exact" is served by
      `dac_voltage_exact`.
    g_load: row load in siemens, broadcastable against u (e.g. `[..., M]`,
      `row_load(g_eff)`); required by "divider", ignored by "ideal".
    nominal_load: row load (siemens, scalar or broadcastable) at which the
      divider is exact; used only when `dac.nominal_load` is None.

  Returns:
    Voltages (volt), the broadcast shape of u and g_load (the shape of u
    when g_load broadcasts to it), in the dtype of u.

  Raises:
    ValueError: model "divider" without g_load or without a nominal load;
      model "divider_exact" (use `dac_voltage_exact`).
  """
  u = float_array(u)
  t = u * dac.v_read
  if dac.model == "ideal":
    return t
  if dac.model == "divider_exact":
    raise ValueError(
        "dac.model='divider_exact' is solved against the tile's row-port "
        "admittance: use `dac_voltage_exact(u, dac, y_port)`")
  if g_load is None:
    raise ValueError("dac.model='divider' needs `g_load`, the row load in "
                     "siemens (e.g. `row_load(g_eff)`)")
  g_nom = jnp.asarray(_nominal(dac, nominal_load), u.dtype)
  g_load = jnp.asarray(g_load, u.dtype)
  a = t / dac.v_ref
  return t / (1 + (1 - a) * (g_load - g_nom) / (1 / dac.r_pd + g_nom))


def dac_voltage_exact(u, dac: DACSpec, y_port, nominal_load=None
                      ) -> jax.Array:
  """Divider DAC voltages solved against the exact row-port admittance.

  Each row's divider is a Thevenin source, `G_th = G_dac + G_pd` and
  `V_th = v_ref G_dac / G_th` (`G_dac` as in `dac_voltage`, exact at the
  nominal load), driving the tile's row ports (the driver terminals, before
  `r_source`) whose input admittance is `y_port` (`i_in = y_port @ v`). The
  voltages solve `(diag(G_th) + y_port) v = G_th V_th = v_ref G_dac`, one
  dense solve per input vector because `G_th` depends on the codes.

  Cost: O(M^3) per input vector per tile (an M x M LU), against O(M) for
  model "divider". Model "ideal" returns `u * v_read` (an ideal source holds
  its voltage whatever the load); "divider" and "divider_exact" solve.

  Args:
    u: `[..., M]` normalized DAC outputs in [0, 1] of the M rows.
    dac: the DAC spec (static).
    y_port: `[..., M, M]` row-port admittance (siemens) from
      `port_admittance`; its leading axes broadcast against those of u.
    nominal_load: row load (siemens) at which the divider is exact; used
      only when `dac.nominal_load` is None.

  Returns:
    `[..., M]` voltages (volt) at the row ports, the broadcast batch shape,
    in the dtype of u.

  Raises:
    ValueError: shapes that do not match, or no nominal load.
  """
  u = float_array(u)
  y_port = jnp.asarray(y_port, u.dtype)
  if u.ndim < 1 or y_port.ndim < 2 or y_port.shape[-2:] != (
      u.shape[-1], u.shape[-1]):
    raise ValueError(
        f"`u` must be [..., M] and `y_port` [..., M, M], got shapes "
        f"{u.shape} and {y_port.shape}")
  t = u * dac.v_read
  if dac.model == "ideal":
    return t
  g_nom = jnp.asarray(_nominal(dac, nominal_load), u.dtype)
  return _divider_solve(t, g_nom, y_port, dac)


@functools.partial(jax.jit, static_argnums=3)
def _divider_solve(t, g_nom, y_port, dac: DACSpec):
  """(diag(G_th) + y_port) v = v_ref G_dac for targets t: [..., M]."""
  g_dac = _g_dac(t, dac, g_nom)
  m = t.shape[-1]
  batch = jnp.broadcast_shapes(t.shape[:-1], y_port.shape[:-2])
  g_th = jnp.broadcast_to(g_dac + 1 / dac.r_pd, batch + (m,))
  rhs = jnp.broadcast_to(dac.v_ref * g_dac, batch + (m,))
  a = jnp.broadcast_to(y_port, batch + (m, m)) + (
      g_th[..., :, None] * jnp.eye(m, dtype=t.dtype))
  # An M-matrix (port admittance plus a positive diagonal): no LAPACK.
  return circuit.solve_mmatrix(a, rhs)


def port_admittance(g, wires: circuit.Wires) -> jax.Array:
  """Row-port input admittance of tiles, columns at their virtual grounds.

  The port of row i is the terminal of its driver, in front of `r_source`
  (DESIGN.md section 2), so the wires, the driver and sense resistances are
  all inside. Found by M exact per-input solves
  (`circuit.node_voltages`): input vector a drives row a at 1 V and the other
  rows at 0 V; the current entering row i is the sum of its device currents
  (a row's only exits are its devices, so this holds for any resistance,
  zero included): `i_in[a, i] = sum_j g[i, j] (v_row[a, i, j] -
  v_col[a, i, j])`, and `y_port[i, a] = i_in[a, i]`.

  Args:
    g: `[..., M, N]` device conductances (siemens).
    wires: the tile's parasitic resistances.

  Returns:
    `[..., M, M]` admittance (siemens) in the dtype of g: `i_in = y_port @ v`
    for row-port voltages `v: [..., M]`. It is symmetric (reciprocity); with
    all resistances zero it is `diag(g.sum(-1))`; its column sums are the
    row sums of `G_eff`.
  """
  g = jnp.asarray(g)
  m = g.shape[-2]
  eye = jnp.broadcast_to(jnp.eye(m, dtype=g.dtype), g.shape[:-2] + (m, m))
  nodes = circuit.node_voltages(g[..., None, :, :], eye, wires)
  i_in = jnp.einsum("...ij,...aij->...ai", g, nodes.v_row - nodes.v_col)
  return jnp.swapaxes(i_in, -1, -2)


def row_load(g_eff) -> jax.Array:
  """RxNN's row load `G_Load`: row sums of the non-ideal conductance matrix.

  Args:
    g_eff: `[..., M, N]` effective conductances (siemens).

  Returns:
    `[..., M]` loads (siemens): the total output current per volt on row i
    with the other rows at 0 V.
  """
  return jnp.asarray(g_eff).sum(-1)
