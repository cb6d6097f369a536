"""The row sweep: every row chain in closed form, then one pass over the rows
carrying the Norton equivalent of the part of the tile above (the algorithm
of `rxjax.circuit`'s docstring). Exact for any resistances."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rxjax.circuit.linalg import mmatrix_inv, offdiag


# ---------------------------------------------------------------------------
# Row chains in closed form.


class RowChains(NamedTuple):
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


def row_chains(g, r_row, r_source) -> RowChains:
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
  return RowChains(sigma.T, z.T, log_t.T)


def row_impedance(z, log_t):
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


_RUN = 8  # columns per run in `row_impedance`


def row_coupling(g_i, z_i, log_t_i):
  """Couplings w >= 0 of row i's admittance seen from its column nodes."""
  return offdiag(g_i[:, None] * row_impedance(z_i, log_t_i) * g_i[None, :])


# ---------------------------------------------------------------------------
# The sweep over rows.


def series_step(s, w, r, kind):
  """Ports of (s, w) moved through a series resistance r on every line.

  Returns the new Laplacian form (s', w') of Y' = (I + r Y)^-1 Y. With
  P = (I + r Y)^-1 (an M-matrix inverse, entrywise >= 0): s' = P s and
  w' = offdiag(P) / r, so nothing wire-sized is ever subtracted.
  """
  if kind == "zero":
    return s, w
  eye = jnp.eye(s.shape[-1], dtype=s.dtype)
  y = eye * (s + w.sum(-1)) - w
  p = mmatrix_inv(eye + r * y)
  return p @ s, couplings_through(p, y, r, kind)


def currents_through(j, s_new, w_new, r, kind):
  """Injected currents j: [..., N] moved through the same series step.

  j' = j P = j - r j Y'. The increment form matters in float32: in j @ P the
  many tiny off-diagonal terms next to a diagonal of ~1 are rounded away
  (at 128 x 128 ReRAM, 2e-4 relative error against 1e-6 in this form).
  """
  if kind == "zero":
    return j
  return j - r * (j * (s_new + w_new.sum(-1)) - j @ w_new)


def couplings_through(p, y, r, kind):
  """Couplings offdiag(P) / r of Y' = P Y, P = (I + r Y)^-1, for any r >= 0.

  offdiag(P) / r == -offdiag(P Y) exactly; the left form is subtraction-free
  (used for r > 0), the right one is its value and derivative at r = 0. The
  right one costs a matrix product, so it is only built when r is traced
  (kind "traced"); a static r is known to be positive here.
  """
  if kind == "positive":
    return offdiag(p) / r
  positive = r > 0
  w_new = offdiag(p) / jnp.where(positive, r, 1)
  return jnp.where(positive, w_new, -offdiag(p @ y))


_CHUNK_MIN_ROWS = 48  # from here on `sweep_geff` runs in two scans


def sweep_geff(g, r_row, r_col, r_source, r_sense, kind_col, kind_sense):
  """G_eff of one tile g: [M, N], sweeping over its M rows.

  kind_col, kind_sense: static "zero", "positive" or "traced" (`resistance_kind`).
  """
  m, n = g.shape
  rows = row_chains(g, r_row, r_source)

  @jax.checkpoint
  def step(carry, xs):
    s, w, j = carry
    i, g_i, sigma_i, z_i, log_t_i = xs
    s, w = series_step(s, w, r_col, kind_col)
    j = currents_through(j, s, w, r_col, kind_col)
    s = s + sigma_i
    w = w + row_coupling(g_i, z_i, log_t_i)
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
  s, w = series_step(s, w, r_sense, kind_sense)
  return currents_through(j, s, w, r_sense, kind_sense)
