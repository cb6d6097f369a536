"""Exact circuit model of a resistive crossbar tile (RxNN section V, the FCM).

This module owns the linear network of DESIGN.md section 2: devices `g[i, j]`
between row nodes `a[i, j]` and column nodes `b[i, j]`, row wire segments
`r_row`, column wire segments `r_col`, a source resistance `r_source` in front
of every driven line and a sense resistance `r_sense` in front of every virtual
ground. It computes

* `effective_conductance`: the matrix `G_eff` with `i_out = v @ G_eff`
  (forward read) or `i_rows = G_eff_bwd @ v_cols` (backward read), exactly;
* `node_voltages`: every node voltage and the output currents for given
  inputs (IR-drop maps, cross-checks);
* `series_model` and `aam_conductance`: cheap approximations of `G_eff`, the
  MNSIM-style per-cell series model (a baseline) and TxSim's approximate
  analytical model (AAM, section IV-D; O(M N) scans, accurate only when the
  devices are far more resistive than the wires).

It does not own device physics (variation, updates: `device.py`), converters
(`periphery.py`) or the mapping of weights to conductances (`mapping.py`).

RxNN section V-B derives the same exact `G_eff` from Kirchhoff's laws and row
reduction of the column systems. The algorithm here uses the structure of the
nodal matrix: it eliminates every row chain in closed form (a tridiagonal
chain's inverse from positive prefix and suffix shunts), then sweeps once over the rows carrying the Norton equivalent of
the part of the array above the present row as seen from the N column wires:
an admittance matrix in Laplacian form (shunts `s >= 0`, couplings `w >= 0`)
and the current `j` that each unit input volt injects. Two operations
alternate:

* parallel: add row i (its admittance seen from its column nodes, again in
  Laplacian form, and its injected currents);
* series: move the ports down through one column wire segment `r`:
  `Y' = (I + r Y)^-1 Y`, `j' = j (I + r Y)^-1`.

Everything is written in resistance form, so `r = 0` is an ordinary value and
no step subtracts two wire-sized numbers: `I + r Y` is an M-matrix whose
diagonal is rebuilt from positive terms, its inverse `P` is entrywise
non-negative, and the new couplings are `offdiag(P) / r`. This keeps float32
within ~1e-5 of float64 where a conductance-form sweep loses three digits.
Cost per tile: `M` inverses of `N x N` plus the `M x N` right-hand side,
about `2.3 M N^3 + 2 M^2 N^2` flops; the shorter dimension is used as block
size through reciprocity.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Direction = Literal["forward", "backward"]
_DIRECTIONS = ("forward", "backward")


def _is_concrete(x) -> bool:
  return not isinstance(x, jax.core.Tracer)


@dataclasses.dataclass(frozen=True)
class Wires:
  """Parasitic resistances of a crossbar tile, in ohms.

  Attributes:
    r_row: one row wire segment, between `a[i, j]` and `a[i, j + 1]`.
    r_col: one column wire segment, between `b[i, j]` and `b[i + 1, j]`.
    r_source: output resistance of the row drivers (forward read).
    r_sense: input resistance of the column sense amplifiers (forward read).
    r_source_backward: output resistance of the column drivers in the
      backward (transposed) read; `None` means `r_source`.
    r_sense_backward: input resistance of the row sense amplifiers in the
      backward read; `None` means `r_sense`.

  Every value must be finite and >= 0; 0 is legal and means an ideal wire or
  terminal. `Wires` is hashable (usable as a static argument) and is also a
  pytree whose leaves are the resistances, so `jax.grad` can differentiate
  with respect to them.
  """

  r_row: float = 0.0
  r_col: float = 0.0
  r_source: float = 0.0
  r_sense: float = 0.0
  r_source_backward: float | None = None
  r_sense_backward: float | None = None

  def __post_init__(self):
    for field in dataclasses.fields(self):
      value = getattr(self, field.name)
      if value is None and field.name.endswith("_backward"):
        continue
      if not _is_concrete(value):
        continue  # Traced (e.g. under jax.grad): validated by the caller.
      if isinstance(value, (bool, str, bytes)):  # float(True) is 1.0.
        raise ValueError(
            f"`{field.name}` must be a resistance in ohm (a finite number >= 0),"
            f" got {value!r}")
      try:
        as_float = float(np.asarray(value))
      except (TypeError, ValueError):
        raise ValueError(
            f"`{field.name}` must be a resistance in ohm (a finite number >= 0),"
            f" got {value!r}") from None
      if not math.isfinite(as_float) or as_float < 0:
        raise ValueError(
            f"`{field.name}` must be a finite resistance >= 0 ohm, got {value!r}")

  @classmethod
  def ideal(cls) -> "Wires":
    """All resistances zero: `effective_conductance(g, Wires.ideal()) == g`."""
    return cls()

  @property
  def reciprocal(self) -> bool:
    """True when every line has the same terminal resistance in both reads
    (the rows' `r_source` is the backward row sense resistance and the
    columns' `r_sense` the backward column driver's).

    The crossbar is then one linear resistive network read through the same
    ports both ways, so by reciprocity the backward `G_eff` equals the
    forward one (`effective_conductance` returns identical arrays; tested).
    False when a resistance is traced.
    """
    _, _, src, sense = self.terminals("backward")
    values = (self.r_source, self.r_sense, src, sense)
    if not all(_is_concrete(v) for v in values):
      return False
    return float(src) == float(self.r_sense) and float(
        sense) == float(self.r_source)

  def terminals(self, direction: Direction) -> tuple:
    """(r_along_driven_lines, r_along_sensed_lines, r_source, r_sense)."""
    _check_direction(direction)
    if direction == "forward":
      return self.r_row, self.r_col, self.r_source, self.r_sense
    r_source = (self.r_source if self.r_source_backward is None
                else self.r_source_backward)
    r_sense = (self.r_sense if self.r_sense_backward is None
               else self.r_sense_backward)
    return self.r_col, self.r_row, r_source, r_sense


def _wires_flatten(w):
  names = [f.name for f in dataclasses.fields(w)]
  return tuple(getattr(w, n) for n in names), None


def _wires_unflatten(_, children):
  w = object.__new__(Wires)
  for field, value in zip(dataclasses.fields(Wires), children):
    object.__setattr__(w, field.name, value)
  return w


jax.tree_util.register_pytree_node(Wires, _wires_flatten, _wires_unflatten)


def _check_direction(direction):
  if direction not in _DIRECTIONS:
    raise ValueError(
        f"`direction` must be one of {_DIRECTIONS}, got {direction!r}")


def _check_g(g) -> jax.Array:
  g = jnp.asarray(g)
  if g.ndim < 2:
    raise ValueError(
        f"`g` must have shape [..., M, N] (rank >= 2), got shape {g.shape}")
  if g.shape[-1] < 1 or g.shape[-2] < 1:
    raise ValueError(f"`g` must have M, N >= 1, got shape {g.shape}")
  if not jnp.issubdtype(g.dtype, jnp.floating):
    raise TypeError(
        f"`g` must be a floating-point array (siemens), got dtype {g.dtype}")
  if jnp.finfo(g.dtype).bits < 32:
    # float16's smallest normal number is 6.1e-5: a 1 MOhm device (1e-6 S)
    # is subnormal there and loses ~2% (bfloat16 keeps 3 digits).
    raise TypeError(f"`g` must be float32 or float64 (siemens), got dtype "
                    f"{g.dtype}, which cannot hold device conductances "
                    "(~1e-6 S) to the solve's accuracy")
  if _is_concrete(g):
    a = np.asarray(g)
    if not np.isfinite(a).all():
      raise ValueError(f"`g` must be finite conductances (siemens), got "
                       f"{int((~np.isfinite(a)).sum())} NaN / inf values")
    if (a < 0).any():
      first = tuple(int(i) for i in np.argwhere(a < 0)[0])
      raise ValueError(f"`g` must be conductances >= 0 S, got "
                       f"{int((a < 0).sum())} negative values (first "
                       f"{a[first]!r} at index {first})")
  return g


def _check_wires(wires) -> None:
  if not isinstance(wires, Wires):
    raise TypeError(f"`wires` must be a rxjax.Wires, got {wires!r}")


def _flip(x):
  """Reciprocity map of a tile: [.., M, N] -> [.., N, M], reversed."""
  return jnp.swapaxes(x[..., ::-1, ::-1], -1, -2)


# ---------------------------------------------------------------------------
# Row chains in closed form.


class _Rows(NamedTuple):
  """Closed-form description of every row chain (columns grounded).

  sigma: [M, N] current into column node b[i, j] per volt at input i
    (also the shunt of row i's port admittance towards the source).
  z: [M, N] diagonal of the row chain's impedance matrix T_i^-1 (ohm).
  log_t: [M, N] cumulative log voltage transfer along the row; the
    impedance T_i^-1[j, k] = z[min] * exp(log_t[max] - log_t[min]).
  """

  sigma: jax.Array
  z: jax.Array
  log_t: jax.Array


def _rows(g, r_row, r_source) -> _Rows:
  """Closed forms of all row chains of g: [M, N] at once (scans over N)."""
  gt = g.T  # [N, M]: scan over columns, vector ops over rows.

  # q[j]: admittance seen from a[., j] looking right (open far end).
  def right(q_next, g_next):
    y = g_next + q_next
    q = y / (1 + r_row * y)
    return q, q

  zeros = jnp.zeros_like(gt[0])
  _, q = jax.lax.scan(right, zeros, gt[1:], reverse=True)
  q = jnp.concatenate([q, zeros[None]], axis=0)  # [N, M]

  # rho[j]: resistance seen from a[., j] looking left, towards the source.
  def left(rho, g_j):
    rho_next = r_row + rho / (1 + rho * g_j)
    return rho_next, rho

  rho0 = jnp.broadcast_to(jnp.asarray(r_source, g.dtype), zeros.shape)
  _, rho = jax.lax.scan(left, rho0, gt)  # [N, M]

  load = gt + q
  z = rho / (1 + rho * load)
  r_first = jnp.concatenate(
      [jnp.broadcast_to(jnp.asarray(r_source, g.dtype), (1,) + zeros.shape),
       jnp.broadcast_to(jnp.asarray(r_row, g.dtype), gt[1:].shape)], axis=0)
  log_t = jnp.cumsum(-jnp.log1p(r_first * load), axis=0)
  sigma = gt * jnp.exp(log_t)
  return _Rows(sigma.T, z.T, log_t.T)


def _row_impedance(z, log_t):
  """T^-1 of one row chain, [N, N], from its closed-form description.

  T^-1[j, k] = z[min] * E[min, max] with E[j, k] = exp(log_t[k] - log_t[j])
  <= 1 for j <= k. E is built from O(N * _RUN) exponentials instead of N^2
  (the exponentials were a quarter of the 64 x 64 sweep): the row is cut
  into runs of `_RUN` columns, E is exponentiated directly inside a run,
  and between runs it is the product of three factors that are each <= 1,
  (j to the end of its run) x (that end to the start of k's run) x (that
  start to k), so nothing can overflow, whatever the attenuation.
  """
  n = z.shape[-1]
  run = min(_RUN, n)
  nb = -(-n // run)
  # Padding columns carry no attenuation (transfer 1); they are cut off.
  lt = jnp.pad(log_t, (0, nb * run - n), mode="edge").reshape(nb, run)
  first, last = lt[:, 0], lt[:, -1]
  # log_t never increases along the row, so every exponent below is <= 0
  # where it is used, without an abs() (whose zero derivative at r_row = 0
  # would lose a first-order term); unused entries are masked to -inf.
  to_end = jnp.exp(last[:, None] - lt)  # [nb, run]
  from_start = jnp.exp(lt - first[:, None])
  later = jnp.arange(nb)[:, None] < jnp.arange(nb)[None, :]
  between = jnp.exp(jnp.where(later, first[None, :] - last[:, None], -jnp.inf))
  upper_in_run = jnp.arange(run)[:, None] <= jnp.arange(run)[None, :]
  inside = jnp.exp(jnp.where(upper_in_run, lt[:, None, :] - lt[:, :, None],
                             -jnp.inf))  # [nb, run, run]
  e = (to_end[:, :, None, None] * between[:, None, :, None]
       * from_start[None, None, :, :]
       + jnp.eye(nb, dtype=z.dtype)[:, None, :, None] * inside[:, :, None, :])
  e = e.reshape(nb * run, nb * run)[:n, :n]  # E on and above the diagonal
  upper = z[:, None] * e
  idx = jnp.arange(n)
  return jnp.where(idx[:, None] <= idx[None, :], upper, upper.T)


_RUN = 8  # columns per run in `_row_impedance`


def _row_coupling(g_i, z_i, log_t_i):
  """Couplings w >= 0 of row i's admittance seen from its column nodes."""
  return _offdiag(g_i[:, None] * _row_impedance(z_i, log_t_i) * g_i[None, :])


# ---------------------------------------------------------------------------
# Linear algebra shared by both methods.



def _offdiag(w):
  return w * (1 - jnp.eye(w.shape[-1], dtype=w.dtype))


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _mmatrix_inv(a, leaf=None):
  """Inverse of a symmetric, diagonally dominant M-matrix `a: [..., k, k]`.

  Pure XLA. Up to `leaf` (default `_leaf(k)`): Gauss-Jordan without
  pivoting (safe for such matrices), vectorized over the batch (a
  fori_loop: unrolling it runs little faster and compiles much longer,
  more so under autodiff). Larger: 2 x 2 block inversion through the
  Schur complement, recursively (the Schur complement of an M-matrix is an
  M-matrix, so no pivoting is needed at any level).
  Symmetry saves a third of the block products: only the upper off-diagonal
  block is read, and the lower one of the result is the upper one
  transposed. Every caller passes a nodal (Laplacian-form) matrix of a
  reciprocal network, symmetric up to rounding.

  Not LAPACK: jaxlib's batched LAPACK kernels split their batch over XLA's
  intra-op thread pool and wait for it, and two of them running at once (a
  forward and a backward solve, two layers in one jit) can take every
  worker of a small pool and wait for each other forever (both workers
  blocked in `jax::ParallelBatchMap` / `BlockingCounter::Wait`).
  """
  k = a.shape[-1]
  leaf = _leaf(k) if leaf is None else leaf
  if k > leaf:
    h = k // 2
    a11, a12, a22 = a[..., :h, :h], a[..., :h, h:], a[..., h:, h:]
    i11 = _mmatrix_inv(a11, leaf)
    x = i11 @ a12  # <= 0 entrywise
    s = _mmatrix_inv(a22 - _t(a12) @ x, leaf)
    y = x @ s
    top = jnp.concatenate([i11 + y @ _t(x), -y], -1)
    bottom = jnp.concatenate([-_t(y), s], -1)
    return jnp.concatenate([top, bottom], -2)

  def pivot(p, x):
    e = (jnp.arange(k) == p).astype(x.dtype)  # one-hot: no dynamic slicing
    row = jnp.einsum("...ij,i->...j", x, e)
    piv = row @ e
    r = (row * (1 - e) + e) / piv[..., None]
    f = (x @ e) * (1 - e)
    x = x * (1 - e) - f[..., :, None] * r[..., None, :]
    return x * (1 - e)[:, None] + e[:, None] * r[..., None, :]

  return jax.lax.fori_loop(0, k, pivot, a)


@_mmatrix_inv.defjvp
def _mmatrix_inv_jvp(leaf, primals, tangents):
  """d(A^-1) = -A^-1 dA A^-1: autodiff never enters the elimination.

  Differentiating through the Gauss-Jordan loops and the block recursion
  would store every pivot step and make the gradient's program large and
  slow to compile. Reverse mode transposes this
  linear rule: dL/dA = -A^-T (dL/dX) A^-T.
  """
  a, = primals
  da, = tangents
  x = _mmatrix_inv(a, leaf)
  return x, -(x @ da @ x)


def _leaf(k):
  """Gauss-Jordan leaf size for a k x k inverse.

  Small leaves put most of the work in matrix products, which run faster
  than the elimination's rank-1 steps. Deep recursion costs compilation
  time and, under autodiff, memory, so only blocks up to 64 wide recurse
  that far.
  """
  return 8 if k <= 64 else 32


# Nested dissection's merges gain little from small leaves but compile
# longer with them.
_NESTED_LEAF = 32


def _t(x):
  return jnp.swapaxes(x, -1, -2)


def solve_mmatrix(a, b) -> jax.Array:
  """`a^-1 b` for diagonally dominant M-matrices `a: [..., k, k]`, `b:
  [..., k]`, without LAPACK (see `_mmatrix_inv` for why)."""
  return (_mmatrix_inv(a) @ b[..., None])[..., 0]


# ---------------------------------------------------------------------------
# The sweep over rows.


def _series(s, w, r, kind):
  """Ports of (s, w) moved through a series resistance r on every line.

  Returns the new Laplacian form (s', w') of Y' = (I + r Y)^-1 Y. With
  P = (I + r Y)^-1 (an M-matrix inverse, entrywise >= 0): s' = P s and
  w' = offdiag(P) / r, so nothing wire-sized is ever subtracted.
  """
  if kind == "zero":
    return s, w
  eye = jnp.eye(s.shape[-1], dtype=s.dtype)
  y = eye * (s + w.sum(-1)) - w
  p = _mmatrix_inv(eye + r * y)
  return p @ s, _couplings_through(p, y, r, kind)


def _through(j, s_new, w_new, r, kind):
  """Injected currents j: [..., N] moved through the same series step.

  j' = j P = j - r j Y'. The increment form matters in float32: in j @ P the
  many tiny off-diagonal terms next to a diagonal of ~1 are rounded away
  (at 128 x 128 ReRAM, 2e-4 relative error against 1e-6 in this form).
  """
  if kind == "zero":
    return j
  return j - r * (j * (s_new + w_new.sum(-1)) - j @ w_new)


def _couplings_through(p, y, r, kind):
  """Couplings offdiag(P) / r of Y' = P Y, P = (I + r Y)^-1, for any r >= 0.

  offdiag(P) / r == -offdiag(P Y) exactly; the left form is subtraction-free
  (used for r > 0), the right one is its value and derivative at r = 0. The
  right one costs a matrix product, so it is only built when r is traced
  (kind "traced"); a static r is known to be positive here.
  """
  if kind == "positive":
    return _offdiag(p) / r
  positive = r > 0
  w_new = _offdiag(p) / jnp.where(positive, r, 1)
  return jnp.where(positive, w_new, -_offdiag(p @ y))


_CHUNK_MIN_ROWS = 48  # from here on `_sweep_geff` runs in two scans


def _sweep_geff(g, r_row, r_col, r_source, r_sense, kind_col, kind_sense):
  """G_eff of one tile g: [M, N], sweeping over its M rows.

  kind_col, kind_sense: static "zero", "positive" or "traced" (`_kind`).
  """
  m, n = g.shape
  rows = _rows(g, r_row, r_source)

  @jax.checkpoint
  def step(carry, xs):
    s, w, j = carry
    i, g_i, sigma_i, z_i, log_t_i = xs
    s, w = _series(s, w, r_col, kind_col)
    j = _through(j, s, w, r_col, kind_col)
    s = s + sigma_i
    w = w + _row_coupling(g_i, z_i, log_t_i)
    j = jax.lax.dynamic_update_index_in_dim(j, sigma_i, i, axis=0)
    return (s, w, j), None

  # Before row i, only the inputs above i have reached the column nodes:
  # j has i live rows. Tall tiles sweep in two scans, the first carrying
  # only the first half of j, which saves a quarter of the j @ w products
  # (64 x 64: 7% of the time; more scans cost more compilation than they
  # saved).
  xs = (jnp.arange(m), g, rows.sigma, rows.z, rows.log_t)
  s, w = jnp.zeros((n,), g.dtype), jnp.zeros((n, n), g.dtype)
  j = jnp.zeros((0, n), g.dtype)
  bounds = [0, m // 2, m] if m >= _CHUNK_MIN_ROWS else [0, m]
  for lo, hi in zip(bounds[:-1], bounds[1:]):
    j = jnp.pad(j, ((0, hi - j.shape[0]), (0, 0)))
    (s, w, j), _ = jax.lax.scan(
        step, (s, w, j), jax.tree.map(lambda x: x[lo:hi], xs))
  s, w = _series(s, w, r_sense, kind_sense)
  return _through(j, s, w, r_sense, kind_sense)


# ---------------------------------------------------------------------------
# Nested dissection: O(n^3) for large tiles.
#
# A block of h x w cells is reduced to the Laplacian couplings `w >= 0`
# between its boundary nodes ("ports"), in the order [T, B, L, R]: top column
# ends b[i0, :], bottom column ends b[i1, :], left row ends a[:, j0], right
# row ends a[:, j1]. Leaves are 2 x 2 cells (all 8 nodes are ports). Two equal
# neighbours merge by moving one side's facing ports through the wire segment
# (resistance form, as in the sweep), identifying them with the other side's
# facing ports and eliminating those interface nodes. Every interface node is
# tied through its own line to retained ports, so the eliminated block is
# strongly diagonally dominant and float32 stays accurate. At the top, the
# open ends (T, R) are eliminated, and the row ends L and column ends B are
# moved through r_source and r_sense: the couplings between the source and
# the virtual-ground terminals are G_eff. All merges of a level are batched.

def _runs(idx):
  """Contiguous runs [start, stop) of a static index list."""
  runs = []
  for i in idx:
    if runs and runs[-1][1] == i:
      runs[-1][1] = i + 1
    else:
      runs.append([i, i + 1])
  return runs


def _take(w, rows, cols=None):
  """w[rows][:, cols] for static index lists, by slices (no gathers)."""
  cols = rows if cols is None else cols
  parts = [w[..., a:b, :] for a, b in _runs(rows)]
  w = parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=-2)
  parts = [w[..., :, a:b] for a, b in _runs(cols)]
  return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=-1)


def _ports_through(w, s, o, r, kind):
  """Ports `s` of couplings w moved through series r: couplings over [o, s']."""
  if kind == "zero":
    return _take(w, o + s)
  every = list(range(w.shape[-1]))
  w_ss, w_oo, w_os = _take(w, s), _take(w, o), _take(w, o, s)
  eye = jnp.eye(len(s), dtype=w.dtype)
  y_ss = eye * _take(w, s, every).sum(-1) - w_ss
  p = _mmatrix_inv(eye + r * y_ss, _NESTED_LEAF)
  w_os = w_os @ p
  w_oo = _offdiag(w_oo + r * (w_os @ _take(w, s, o)))
  w_ss = _couplings_through(p, y_ss, r, kind)
  return jnp.concatenate([jnp.concatenate([w_oo, w_os], -1),
                          jnp.concatenate([w_os.T, w_ss], -1)], -2)


def _eliminate(w, keep, drop):
  """Kron reduction of couplings w onto the nodes `keep`."""
  every = list(range(w.shape[-1]))
  w_kd = _take(w, keep, drop)
  y = (jnp.eye(len(drop), dtype=w.dtype) * _take(w, drop, every).sum(-1)
       - _take(w, drop))
  z = _mmatrix_inv(y, _NESTED_LEAF) @ w_kd.T
  return _offdiag(_take(w, keep) + w_kd @ z)


def _block_ports(h, w):
  t, b = list(range(w)), list(range(w, 2 * w))
  return t, b, list(range(2 * w, 2 * w + h)), list(range(2 * w + h, 2 * w + 2 * h))


def _merge_plan(h, w, horizontal):
  """Static index plan to merge two h x w blocks side by side or stacked."""
  t, b, l, r = _block_ports(h, w)
  if horizontal:  # X left of Y: X.R -- r_row -- Y.L
    s_x, o_x, f_y, o_y = r, t + b + l, l, t + b + r
    k = len(o_x)
    order = (list(range(w)) + [k + i for i in range(w)]            # T
             + list(range(w, 2 * w)) + [k + w + i for i in range(w)]  # B
             + list(range(2 * w, 2 * w + h))                       # L
             + [k + 2 * w + i for i in range(h)])                  # R
  else:  # X above Y: X.B -- r_col -- Y.T
    s_x, o_x, f_y, o_y = b, t + l + r, t, b + l + r
    k = len(o_x)
    order = (list(range(w)) + [k + i for i in range(w)]            # T, B
             + list(range(w, w + h)) + [k + w + i for i in range(h)]  # L
             + list(range(w + h, w + 2 * h))
             + [k + w + h + i for i in range(h)])                  # R
  return s_x, o_x, f_y, o_y, order


def _merge(wx, wy, plan, r):
  """Two blocks joined through wire segments r (static r > 0, see _nested_geff)."""
  s_x, o_x, f_y, o_y, order = plan
  kx, k, ky = len(o_x), len(s_x), len(o_y)
  w = (jnp.pad(_ports_through(wx, s_x, o_x, r, "positive"), ((0, ky), (0, ky)))
       + jnp.pad(_take(wy, f_y + o_y), ((kx, 0), (kx, 0))))
  keep = list(range(kx)) + list(range(kx + k, kx + k + ky))
  return _take(_eliminate(w, keep, list(range(kx, kx + k))), order)


def _leaves(g, r_row, r_col):
  """2 x 2 leaf blocks of g: [M, N] -> couplings [M/2, N/2, 8, 8]."""
  m, n = g.shape
  q = g.reshape(m // 2, 2, n // 2, 2).transpose(0, 2, 1, 3)
  # Port order [T, B, L, R] = b00 b01 b10 b11 | a00 a10 | a01 a11.
  b_of = {(0, 0): 0, (0, 1): 1, (1, 0): 2, (1, 1): 3}
  a_of = {(0, 0): 4, (1, 0): 5, (0, 1): 6, (1, 1): 7}
  w = jnp.zeros(q.shape[:2] + (8, 8), g.dtype)

  def link(w, x, y, value):
    return w.at[..., x, y].set(value).at[..., y, x].set(value)

  for cell, ib in b_of.items():
    w = link(w, a_of[cell], ib, q[..., cell[0], cell[1]])
  for d in range(2):
    w = link(w, a_of[(d, 0)], a_of[(d, 1)], 1 / r_row)
    w = link(w, b_of[(0, d)], b_of[(1, d)], 1 / r_col)
  return w


def _nested_geff(g, r_row, r_col, r_source, r_sense, kind_source, kind_sense):
  """G_eff of one tile g: [M, N], M and N powers of two >= 2; r_row, r_col > 0."""
  m, n = g.shape
  w = _leaves(g, r_row, r_col)
  h, wd = 2, 2
  while w.shape[0] > 1 or w.shape[1] > 1:
    horizontal = w.shape[0] == 1 or (wd <= h and w.shape[1] > 1)
    plan = _merge_plan(h, wd, horizontal)
    r = r_row if horizontal else r_col
    merge = jax.vmap(jax.vmap(lambda x, y, plan=plan, r=r: _merge(x, y, plan, r)))
    if horizontal:
      w, wd = merge(w[:, 0::2], w[:, 1::2]), 2 * wd
    else:
      w, h = merge(w[0::2], w[1::2]), 2 * h
  t, b, l, r = _block_ports(m, n)
  w = _eliminate(w[0, 0], b + l, t + r)  # open far ends; ports [B, L]
  w = _ports_through(w, list(range(n, n + m)), list(range(n)), r_source,
                     kind_source)
  w = _ports_through(w, list(range(n)), list(range(n, n + m)), r_sense,
                     kind_sense)
  return w[:m, m:]  # couplings source i -> virtual ground j


def _pow2(k):
  return max(2, 1 << (k - 1).bit_length())


def _nested_padded(g, r_row, r_col, r_source, r_sense, kind_source,
                   kind_sense):
  """Nested dissection of any tile: zero devices pad the open sides.

  Rows added above row 0 and columns right of column N-1 hang off the open
  ends of the lines and carry no device, so no current flows in them: the
  padding is exact.
  """
  m, n = g.shape
  mp, np_ = _pow2(m), _pow2(n)
  padded = jnp.pad(g, ((mp - m, 0), (0, np_ - n)))
  return _nested_geff(padded, r_row, r_col, r_source, r_sense, kind_source,
                      kind_sense)[mp - m:, :n]


def _sweep_flops(m, n):
  lo, hi = min(m, n), max(m, n)
  return hi * (2.7 * lo ** 3 + 2 * hi * lo ** 2)


def _nested_flops(m, n):
  mp, np_ = _pow2(m), _pow2(n)
  # A cost model fitted to timings against `_sweep_flops`: at 64 x 64 the
  # sweep is as fast for one tile, faster in batches and compiles faster;
  # nested dissection wins from 128 x 128 on.
  return 200.0 * mp * np_ * (mp + np_)


def _oriented(g, wires, direction):
  """Tile and terminals in forward orientation, and the map back."""
  r_along, r_across, r_source, r_sense = wires.terminals(direction)
  if direction == "backward":
    # Columns are driven from b[M-1, j], rows sensed at a[i, 0]: the same
    # network as a forward read of the flipped-transposed tile.
    return _flip(g), (r_along, r_across, r_source, r_sense), _flip
  return g, (r_along, r_across, r_source, r_sense), lambda x: x


def _kind(r) -> str:
  """What is known of a resistance at trace time: "zero", "positive", "traced".

  A zero series element is skipped; a positive one needs no r = 0 branch.
  """
  if not _is_concrete(r):
    return "traced"
  return "zero" if float(np.asarray(r)) == 0.0 else "positive"


def _geff_impl(g, resistances, kinds, method):
  """G_eff of g: [..., M, N] in forward orientation.

  kinds[k]: `_kind` of resistance k of (r_row, r_col, r_source, r_sense).
  """
  r_row, r_col, r_source, r_sense = (jnp.asarray(r, g.dtype)
                                     for r in resistances)
  m, n = g.shape[-2:]
  batch = g.shape[:-2]
  if method == "nested":
    fn = lambda t: _nested_padded(t, r_row, r_col, r_source, r_sense,
                                  kinds[2], kinds[3])
  elif n > m:
    # Reciprocity: block size min(M, N). Sources and senses swap roles.
    fn = lambda t: _flip(_sweep_geff(_flip(t), r_col, r_row, r_sense,
                                     r_source, kinds[0], kinds[2]))
  else:
    fn = lambda t: _sweep_geff(t, r_row, r_col, r_source, r_sense, kinds[1],
                               kinds[3])
  flat = g.reshape((-1, m, n))
  # Tiles are solved in cache-sized groups: one vmap over thousands of tiles
  # streams every intermediate through memory and runs several times slower.
  group = max(1, _GROUP_ELEMENTS // (m * n))
  if flat.shape[0] <= group:
    out = jax.vmap(fn)(flat)
  else:
    out = jax.lax.map(fn, flat, batch_size=group)
  return out.reshape(batch + (m, n))


_GROUP_ELEMENTS = 2**17  # tiles per group x M x N; 32 tiles of 64 x 64
_geff_jit = jax.jit(_geff_impl, static_argnums=(2, 3))
_METHODS = ("auto", "sweep", "nested")


def effective_conductance(g, wires: Wires, *,
                          direction: Direction = "forward",
                          method: str = "auto") -> jax.Array:
  """Exact effective conductance matrix of crossbar tiles.

  Args:
    g: `[..., M, N]` device conductances in siemens (>= 0), float32 or
      float64. Leading axes are batch axes (tiles, chips).
    wires: the tile's parasitic resistances.
    direction: "forward" (rows driven, columns sensed) or "backward" (columns
      driven from the bottom, rows sensed at the left; DESIGN.md section 2).
    method: "sweep" (row sweep, any resistances, 2.7 M N^3 + 2 M^2 N^2 flops
      with N <= M), "nested" (nested dissection, O((M + N)^3); needs static
      r_row, r_col > 0) or "auto" (the cheaper of the two that applies). Both
      are exact; they agree to rounding.

  Placement: the shardings of `g` decide, eager or under jit. To share a
  large batch of tiles among devices, shard its tile axis inside jit:
  `crossbar.solve(..., mesh=)` does (`jax.shard_map`, each device its own
  tiles).

  Returns:
    `[..., M, N]` array in the dtype of `g`. Forward: `i_out = v @ G_eff`
    (`v: [M]` volts, `i_out: [N]` amperes). Backward:
    `i_rows = G_eff_bwd @ v_cols`. With all resistances 0 it equals `g`.

  Raises:
    ValueError / TypeError: bad rank, empty axes, non-float dtype or unknown
      direction (at trace time).
  """
  _check_direction(direction)
  if method not in _METHODS:
    raise ValueError(f"`method` must be one of {_METHODS}, got {method!r}")
  g = _check_g(g)
  _check_wires(wires)
  g, resistances, back = _oriented(g, wires, direction)
  kinds = tuple(_kind(r) for r in resistances)
  wires_positive = kinds[0] == kinds[1] == "positive"
  if method == "nested" and not wires_positive:
    raise ValueError(
        "method='nested' needs static wire resistances r_row, r_col > 0 (its "
        f"leaves are wire conductances); got {resistances[:2]}: use 'sweep'")
  if all(k == "zero" for k in kinds):
    return back(g)  # No parasitics: the devices themselves.
  if method == "auto":
    m, n = g.shape[-2:]
    cheaper = _nested_flops(m, n) < _sweep_flops(m, n)
    method = "nested" if wires_positive and cheaper else "sweep"
  # Concrete values are passed as floats: one compilation serves every value.
  resistances = tuple(r if k == "traced" else float(np.asarray(r))
                      for r, k in zip(resistances, kinds))
  return back(_geff_jit(g, resistances, kinds, method))


# ---------------------------------------------------------------------------
# Per-input node voltages.


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
  rows = _rows(g, r_row, r_source)

  def down(carry, xs):
    s, w, j = carry
    g_i, sigma_i, z_i, log_t_i, v_i = xs
    s, w = _series(s, w, r_col, "traced")
    j = _through(j, s, w, r_col, "traced")
    saved = (s, w, j)
    s = s + sigma_i
    w = w + _row_coupling(g_i, z_i, log_t_i)
    j = j + v_i * sigma_i
    return (s, w, j), saved

  init = (jnp.zeros((n,), g.dtype), jnp.zeros((n, n), g.dtype),
          jnp.zeros((n,), g.dtype))
  (s, w, j), (s_up, w_up, j_up) = jax.lax.scan(
      down, init, (g, rows.sigma, rows.z, rows.log_t, v))
  s, w = _series(s, w, r_sense, "traced")
  i_out = _through(j, s, w, r_sense, "traced")
  u_last = r_sense * i_out

  def up(u, xs):
    s_i, w_i, j_i = xs
    # Current arriving at b[i] from above through the wire segment.
    y_u = (s_i + w_i.sum(-1)) * u - w_i @ u
    u_above = u + r_col * (j_i - y_u)
    return u_above, u

  _, v_col = jax.lax.scan(up, u_last, (s_up, w_up, j_up), reverse=True)

  def row_voltages(g_i, z_i, log_t_i, u_i, v_i):
    return (_row_impedance(z_i, log_t_i) @ (g_i * u_i)
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
  _check_direction(direction)
  g = _check_g(g)
  _check_wires(wires)
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
  g_o, resistances, _ = _oriented(g_b, wires, direction)
  if direction == "backward":
    # Driven lines are the columns, bottom first.
    v_b = v_b[:, ::-1]
  v_row, v_col, i_out = _nodes_impl(g_o, v_b, resistances)
  if direction == "backward":
    # In the flipped tile the driven "rows" are our columns.
    v_row, v_col = _flip(v_col), _flip(v_row)
    i_out = i_out[:, ::-1]
  k = i_out.shape[-1]
  return NodeVoltages(v_row.reshape(batch + (m, n)),
                      v_col.reshape(batch + (m, n)),
                      i_out.reshape(batch + (k,)))


# ---------------------------------------------------------------------------
# Baseline: a per-cell series-resistance model (MNSIM / NeuroSim style).


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
  _check_direction(direction)
  g = _check_g(g)
  _check_wires(wires)
  g_o, resistances, back = _oriented(g, wires, direction)
  r_along, r_across, r_source, r_sense = (jnp.asarray(r, g.dtype)
                                          for r in resistances)
  m, n = g_o.shape[-2:]
  # Segments between the driver node a[i, 0] and a[i, j]: j; between b[i, j]
  # and the sensed end b[M - 1, j]: M - 1 - i (forward orientation).
  along = jnp.arange(n, dtype=g.dtype)[None, :]
  across = (m - 1 - jnp.arange(m, dtype=g.dtype))[:, None]
  r_wire = r_source + along * r_along + across * r_across + r_sense
  return back(g_o / (1 + g_o * r_wire))


# ---------------------------------------------------------------------------
# Approximate analytical model (TxSim section IV-D).
#
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
  _check_direction(direction)
  if (isinstance(paths, bool) or not isinstance(paths, (int, np.integer))
      or paths < 1):
    raise ValueError(f"`paths` must be an integer >= 1, got {paths!r}")
  g = _check_g(g)
  _check_wires(wires)
  g, resistances, back = _oriented(g, wires, direction)
  if all(_kind(r) == "zero" for r in resistances):
    return back(g)  # No parasitics: the devices themselves.
  resistances = tuple(r if _kind(r) == "traced" else float(np.asarray(r))
                      for r in resistances)
  return back(_aam_jit(g, resistances, int(paths)))
