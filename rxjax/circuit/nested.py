"""Nested dissection: `G_eff` in O((M + N)^3) for large tiles with static
wire resistances r_row, r_col > 0."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rxjax.circuit.linalg import mmatrix_inv, offdiag
from rxjax.circuit.sweep import couplings_through

# Nested dissection's merges gain little from small leaves but compile
# longer with them.
_NESTED_LEAF = 32

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
  p = mmatrix_inv(eye + r * y_ss, _NESTED_LEAF)
  w_os = w_os @ p
  w_oo = offdiag(w_oo + r * (w_os @ _take(w, s, o)))
  w_ss = couplings_through(p, y_ss, r, kind)
  return jnp.concatenate([jnp.concatenate([w_oo, w_os], -1),
                          jnp.concatenate([w_os.T, w_ss], -1)], -2)


def _eliminate(w, keep, drop):
  """Kron reduction of couplings w onto the nodes `keep`."""
  every = list(range(w.shape[-1]))
  w_kd = _take(w, keep, drop)
  y = (jnp.eye(len(drop), dtype=w.dtype) * _take(w, drop, every).sum(-1)
       - _take(w, drop))
  z = mmatrix_inv(y, _NESTED_LEAF) @ w_kd.T
  return offdiag(_take(w, keep) + w_kd @ z)


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


def pow2(k):
  """The power of two >= k (at least 2): nested dissection's tile side."""
  return max(2, 1 << (k - 1).bit_length())


def nested_padded(g, r_row, r_col, r_source, r_sense, kind_source,
                   kind_sense):
  """Nested dissection of any tile: zero devices pad the open sides.

  Rows added above row 0 and columns right of column N-1 hang off the open
  ends of the lines and carry no device, so no current flows in them: the
  padding is exact.
  """
  m, n = g.shape
  mp, np_ = pow2(m), pow2(n)
  padded = jnp.pad(g, ((mp - m, 0), (0, np_ - n)))
  return _nested_geff(padded, r_row, r_col, r_source, r_sense, kind_source,
                      kind_sense)[mp - m:, :n]
