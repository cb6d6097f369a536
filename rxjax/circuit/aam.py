"""TxSim's approximate analytical model of `G_eff` (AAM, section IV-D): O(M N)
scans, accurate only when the devices are far more resistive than the
wires."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rxjax.circuit.wires import (Direction, Wires, check_direction, check_g,
                                 check_wires, oriented, resistance_kind)

# Derivation. With row i driven by 1 V (every other input at 0 V), the
# current reaching the sense of column j is a sum over current paths (walks
# of the node equations' Neumann series) from the source of row i to the
# sense of column j. Group them by the devices they cross from one line to
# another: through 1, 3, 5, ... devices. An excursion that leaves a line and
# comes back through the same device only loads that line, and is folded
# into the line itself:
#
# * A line whose crossing lines are taken as ideal grounds is a chain:
#   series segments, a shunt per node, a terminal at one end, open at the
#   other. Prefix and suffix recurrences give, for every node at once, the
#   impedance seen from the node with its own device removed (`z`, a cavity
#   impedance) and the fraction of a current injected there that reaches the
#   terminal (`t`; by reciprocity also the node's voltage per volt behind
#   the terminal). Level 0 uses the shunts g; level 1 dresses each shunt
#   with the crossing line's level-0 impedance, h = g / (1 + g z0) (the
#   device in series with the other line).
# * Direct paths (one device): row i's chain (shunts h_r, device (i, j)
#   removed) is a Thevenin source t_r behind z_r at a[i, j]; column j's chain
#   (shunts h_c, device (i, j) removed) takes the current through z_c and
#   passes the fraction t_c to the sense:
#       G_direct = g t_r t_c / (1 + g (z_r + z_c)).
#   To first order in the wire resistances this is the exact first-order IR
#   drop g (1 - (g R_row)[i, j] - (R_col g)[i, j]) (R_row, R_col: the
#   common-path resistance kernels of the lines, r_source + r_row min(l, m)
#   and its column analogue). It is exact when a single device conducts,
#   when only the rows or only the columns carry resistance (each line is a
#   chain on its own), and for 1 x N and M x 1 tiles.
# * Sneak paths through 2b + 1 devices (b = 1, 2, ...): row i -> device
#   (i, m1) -> column m1 -> device (k1, m1) -> row k1 -> device (k1, m2) ->
#   ... -> row k_b -> device (k_b, j) -> column j. Each hop along a line is
#   that line's transfer impedance (the level-1 chain, solved by two scans),
#   backtracking (the same line twice in a row) excluded. The 2b - 1 inner
#   devices are replaced by the rank-1 mean field g[k, m] ~ u[k] v[m] / w,
#   u[k] the mean of row k without column j, v[m] the mean of column m
#   without row i (the path's exit and entry devices) and w the mean of the
#   tile without row i and column j, and each hop by the kernel of the line
#   the path ends on (column j for hops along columns, row i for hops along
#   rows). The sum over the 2b inner line indices then factors into a
#   column-wise field times a row-wise field, term_b = L_b R_b / w^(2b-1),
#       L_b = K_c (U^2 K_c)^(b-1) (u exit),
#       R_b = K_r (V^2 K_r)^(b-1) (v entry),
#   built by alternate chain solves and products: O(M N) per b. `entry` is
#   the current through device (i, m) with row i driven; `exit` the current
#   through device (k, j) with column j driven from its sense end.
#
# With the first-order kernels and the exact inner devices, b = 1 is the
# part of the second-order Neumann term that no single line carries,
# sum over k != i, m != j of g[i,m] R_col[i,k] g[k,m] R_row[m,j] g[k,j];
# the mean field is exact when g is an outer product (e.g. all cells at one
# state), and for such g the b = 1 term matches that sum to first order
# (checked numerically). Everything is symmetric in rows and columns, so the
# backward read obeys the reciprocity of the exact model.


class _Chain(NamedTuple):
  """Chains of one kind of line: node axis first, the terminal last.

  y: shunt conductance at each node (S).
  rho: [L] resistance below each node: the segment to the next node, and the
    terminal resistance at the last node (ohm).
  y_up: admittance seen from each node towards the open end (S).
  r_down: resistance seen from each node towards the terminal, the node's
    own shunt excluded (ohm).
  passed: fraction of the current leaving node k downwards that reaches
    the terminal (the nodes below k shunt the rest away).
  """

  y: jax.Array
  rho: jax.Array
  y_up: jax.Array
  r_down: jax.Array
  passed: jax.Array


def _chain(y, r, r_terminal) -> _Chain:
  """Prefix and suffix recurrences of chains with shunts y: [L, ...].

  Resistance form throughout (no division by a wire resistance), so any
  resistance may be 0. Two scans; no transcendental functions (XLA's CPU
  log / exp and cumsum would cost more than the scans).
  """
  n = y.shape[0]
  rho = jnp.where(jnp.arange(n) < n - 1, r, r_terminal).astype(y.dtype)

  def up(y_up, xs):  # through the segment below node k: a series step
    y_k, rho_k = xs
    s = y_k + y_up
    return s / (1 + rho_k * s), y_up

  def down(carry, xs):  # what node k + 1 and below look like from node k
    x, passed = carry
    y_k, rho_k = xs
    r_k = rho_k + x
    split = 1 + y_k * r_k  # node k's own shunt takes y r / (1 + y r)
    return (r_k / split, passed / split), (r_k, passed)

  zeros = jnp.zeros_like(y[0])
  _, y_up = jax.lax.scan(up, zeros, (y, rho))
  _, (r_down, passed) = jax.lax.scan(down, (zeros, jnp.ones_like(y[0])),
                                     (y, rho), reverse=True)
  return _Chain(y, rho, y_up, r_down, passed)


def _cavity(c: _Chain):
  """Per node, its own shunt removed: impedance to ground `z` (ohm) and the
  fraction `t` of a current injected there that reaches the terminal."""
  split = 1 + c.y_up * c.r_down  # the part towards the open end takes the rest
  return c.r_down / split, c.passed / split


def _chain_solve(c: _Chain, w):
  """Node voltages of the chains for currents w: [L, ...] injected at nodes."""
  s = c.y + c.y_up

  def up(i_up, xs):  # Norton current from the nodes above, moved down
    w_k, s_k, rho_k = xs
    return (w_k + i_up) / (1 + rho_k * s_k), i_up

  def down(v_below, xs):
    w_k, i_k, s_k, rho_k = xs
    v = (rho_k * (w_k + i_k) + v_below) / (1 + rho_k * s_k)
    return v, v

  zeros = jnp.zeros_like(w[0])
  _, i_up = jax.lax.scan(up, zeros, (w, s, c.rho))
  _, v = jax.lax.scan(down, zeros, (w, i_up, s, c.rho), reverse=True)
  return v


def _aam_impl(g, resistances, paths):
  """AAM of g: [..., M, N] in forward orientation (see the comment above).

  Work happens in two layouts with the chain axis leading (scans slice it),
  the terminal last and the tiles innermost: column chains `[M, N, B]` ("C")
  and row chains `[N, M, B]` with the columns reversed ("R"). Moving fields
  between them swaps the two outer axes only, in contiguous blocks of B;
  swapping the outermost and innermost axes instead costs more than all the
  scans.
  """
  r_row, r_col, r_source, r_sense = (jnp.asarray(r, g.dtype)
                                     for r in resistances)
  m, n = g.shape[-2:]
  batch = g.shape[:-2]

  def c_to_r(x):
    return jnp.swapaxes(x, 0, 1)[::-1]

  def r_to_c(x):
    return jnp.swapaxes(x[::-1], 0, 1)

  g_c = jnp.transpose(g.reshape((-1, m, n)), (1, 2, 0))
  g_r = c_to_r(g_c)
  # Level 0: crossing lines ideal. Level 1: devices in series with them.
  z_c0, _ = _cavity(_chain(g_c, r_col, r_sense))
  z_r0, _ = _cavity(_chain(g_r, r_row, r_source))
  h_r = g_r / (1 + g_r * c_to_r(z_c0))  # device (i, m) as a load on row i
  h_c = g_c / (1 + g_c * r_to_c(z_r0))  # device (k, j) as a load on column j
  cols, rows = _chain(h_c, r_col, r_sense), _chain(h_r, r_row, r_source)
  z_c, t_c = _cavity(cols)
  z_r, t_r = _cavity(rows)
  # Direct paths.
  g_eff = g_c * r_to_c(t_r) * t_c / (1 + g_c * (r_to_c(z_r) + z_c))

  if paths > 1:
    # entry[i, m]: current through (i, m) with row i driven; exit[k, j]:
    # through (k, j) with column j driven (the reciprocal roles).
    entry = h_r * t_r / (1 + h_r * z_r)
    exit_ = h_c * t_c / (1 + h_c * z_c)
    diag_c = z_c / (1 + h_c * z_c)  # a node's own entry in its chain's kernel
    diag_r = z_r / (1 + h_r * z_r)

    def hop_c(x):  # along each column, backtracking excluded
      return _chain_solve(cols, x) - diag_c * x

    def hop_r(x):
      return _chain_solve(rows, x) - diag_r * x

    # Rank-1 mean field of the inner devices of the paths from row i to
    # column j: g[k, m] ~ row_k * col_m / rest, with row_k the mean of row k
    # without column j, col_m that of column m without row i and rest the
    # mean of the tile without row i and column j. Leaving out the path's
    # exit and entry devices (which its factors already carry) removes a
    # ~1/N bias of the sneak current; dividing by `rest` keeps the
    # mean field exact for every outer-product g. In units of the tile mean:
    # u = row_k / mean, v = col_m / mean, kappa = mean / rest. The barrier
    # keeps XLA from fusing the sums into their elementwise consumers, which
    # would recompute them per element.
    row_sum, col_sum, total = jax.lax.optimization_barrier(
        (jnp.sum(g_c, axis=1, keepdims=True),
         jnp.sum(g_r, axis=1, keepdims=True),
         jnp.sum(g_c, axis=(0, 1), keepdims=True)))
    g_mean = total / (m * n)
    safe = jnp.where(g_mean > 0, g_mean, 1)
    u = (row_sum - g_c) / (max(n - 1, 1) * safe)
    v = (col_sum - g_r) / (max(m - 1, 1) * safe)
    rest = (total - r_to_c(col_sum) - row_sum + g_c) / max((m - 1) * (n - 1),
                                                           1)
    kappa = jnp.where(rest > 0, g_mean / jnp.where(rest > 0, rest, 1), 1)
    left = hop_c(g_mean * u * exit_)
    right = hop_r(v * entry)
    for b in range(1, paths):
      g_eff = g_eff + left * r_to_c(right) * kappa**(2 * b - 1)
      if b + 1 < paths:
        left = hop_c(g_mean * u * u * left)
        right = hop_r(g_mean * v * v * right)
  return jnp.transpose(g_eff, (2, 0, 1)).reshape(batch + (m, n))


AAM_GROUP_ELEMENTS = 2**14  # tiles per group x M x N: 4 tiles of 64 x 64


def _aam_grouped(g, resistances, paths):
  """`_aam_impl` over cache-sized groups of tiles (the transposes between
  the two layouts stay in cache; one pass over thousands of tiles streamed
  every field through memory several times)."""
  m, n = g.shape[-2:]
  batch = g.shape[:-2]
  flat = g.reshape((-1, m, n))
  count = flat.shape[0]
  group = max(1, AAM_GROUP_ELEMENTS // (m * n))
  if count <= group:
    return _aam_impl(flat, resistances, paths).reshape(batch + (m, n))
  pad = -count % group
  flat = jnp.concatenate([flat, jnp.zeros((pad, m, n), g.dtype)])
  out = jax.lax.map(lambda t: _aam_impl(t, resistances, paths),
                    flat.reshape((-1, group, m, n)))
  return out.reshape((-1, m, n))[:count].reshape(batch + (m, n))


_aam_jit = jax.jit(_aam_grouped, static_argnums=(2,))


def aam_conductance(g, wires: Wires, *, paths: int = 3,
                    direction: Direction = "forward") -> jax.Array:
  """Approximate analytical model (AAM) of G_eff, TxSim section IV-D.

  TxSim views the current at a column as a sum of terms, one per path
  through the crossbar, and keeps the shorter paths from each row to each
  column, each with its r_source, r_sense, r_row and r_col. Here a path is
  counted by the devices it crosses from line to line: `paths=1` keeps the
  direct paths (source of row i, row i, device (i, j), column j, sense),
  `paths=p` adds the sneak paths through 3, 5, ..., 2p - 1 devices. Every
  device that a path does not cross still loads the wires: each line is
  solved as a loaded chain in closed form (prefix / suffix scans), so the
  IR drop of the direct path is exact to first order in the wire
  resistances and stays bounded for any resistances. The inner devices of
  the sneak paths enter through a rank-1 mean field (row means times column
  means over the tile mean, each without the path's own row and column),
  exact when all cells share one state. The derivation is in the comment
  above this function.

  Cost: O(M N) per tile and no linear algebra: 8 scans over the lines for
  the direct paths and 4 more per added path family; its speed against
  `effective_conductance` is in docs/performance.md
  (`benchmarks/aam_error.py`).

  Accuracy, from `benchmarks/aam_error.py` (docs/figures/aam_error.csv): 64 x
  64, r_row = 1 ohm, r_col = 4.6 ohm (TxSim V), r_source = r_sense = 100
  ohm, paths=3. Max relative error over 16 random states (cells uniform in
  [g_min, g_max]) of the G_eff entries / of the column currents for 33
  inputs, then of G_eff with every cell at g_max; last, the size of the
  IR-drop effect, max |g - G_eff| / G_eff over the random states:

      R_min - R_max         random G   random I   all g_max   IR drop
      1 MOhm - 10 MOhm       1.2e-6     8.0e-8     6.8e-8      0.016
      100 kOhm - 1 MOhm      3.6e-4     4.1e-5     5.3e-5      0.15
      10 kOhm - 100 kOhm     6.5e-2     1.3e-2     2.9e-2      1.8
      1 kOhm - 10 kOhm       0.69       0.44       0.80        27

  Per decade of device resistance the error falls 100-300x. In the first
  three ranges more paths never increased the error of G_eff (that of the
  column currents once by 1.4% at its floor); it levels off at a floor set by
  the mean field (random states) and by the loops that the chain dressing
  leaves out (uniform states), so for a fixed tile the model does not
  converge to the exact G_eff: it converges as the devices outgrow the
  wires. paths=2 holds nearly all of the gain in the top two ranges.

  Where not to use it: when the wires are not small against the devices.
  Measure it by the first-order IR drop of the tile with every cell at
  g_max, eps = g_max (r_source N + r_row N^2 / 2 + r_sense M + r_col M^2 / 2):
  0.024, 0.24, 2.4 and 24 for the four ranges above. Up to eps ~ 0.3 the
  errors stay below 5e-4 (G_eff) and 5e-5 (column currents); at eps ~ 2
  they reach several percent, and at eps ~ 20 (spintronic devices of
  kilo-ohms) the model is useless, with errors of 40-100% that more paths
  do not fix (paths=6 is worse than paths=4 on random states there). TxSim
  reaches the same verdict for its low-resistance case (c). Use
  `effective_conductance` there, or interpolated FCM.

  With all resistances 0 it returns g exactly. It is differentiable (scans
  and elementwise operations) and jit / vmap compatible.

  Args:
    g: `[..., M, N]` device conductances in siemens (>= 0), float32 or
      float64. Leading axes are batch axes.
    wires: the tile's parasitic resistances (ohm).
    paths: number of path families kept, a Python int >= 1 (static): 1 for
      the direct paths, p for sneak paths through up to 2p - 1 devices.
      Each added family costs O(M N); where the model is meant to be used
      (see above) more paths did not increase the error.
    direction: "forward" or "backward" (DESIGN.md section 2).

  Returns:
    `[..., M, N]` array in the dtype of `g`, in the orientation and with the
    meaning of `effective_conductance` (forward `i_out = v @ G_eff`,
    backward `i_rows = G_eff_bwd @ v_cols`). With the same terminal on each
    physical line in both reads, the backward matrix equals the forward one
    (reciprocity), as for the exact model.

  Raises:
    ValueError / TypeError: bad rank, empty axes, non-float dtype, unknown
      direction or `paths` not an integer >= 1 (at trace time).
  """
  check_direction(direction)
  if (isinstance(paths, bool) or not isinstance(paths, (int, np.integer))
      or paths < 1):
    raise ValueError(f"`paths` must be an integer >= 1, got {paths!r}")
  g = check_g(g)
  check_wires(wires)
  g, resistances, back = oriented(g, wires, direction)
  if all(resistance_kind(r) == "zero" for r in resistances):
    return back(g)  # No parasitics: the devices themselves.
  resistances = tuple(r if resistance_kind(r) == "traced"
                      else float(np.asarray(r))
                      for r in resistances)
  return back(_aam_jit(g, resistances, int(paths)))
