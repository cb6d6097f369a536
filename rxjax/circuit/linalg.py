"""Linear algebra shared by the exact solvers: inverses of M-matrices in
pure XLA, with a linear-rule derivative."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp


def offdiag(w):
  """`w` with its diagonal (last two axes) set to zero."""
  return w * (1 - jnp.eye(w.shape[-1], dtype=w.dtype))


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def mmatrix_inv(a, leaf=None):
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
    i11 = mmatrix_inv(a11, leaf)
    x = i11 @ a12  # <= 0 entrywise
    s = mmatrix_inv(a22 - _t(a12) @ x, leaf)
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


@mmatrix_inv.defjvp
def _mmatrix_inv_jvp(leaf, primals, tangents):
  """d(A^-1) = -A^-1 dA A^-1: autodiff never enters the elimination.

  Differentiating through the Gauss-Jordan loops and the block recursion
  would store every pivot step and make the gradient's program large and
  slow to compile. Reverse mode transposes this
  linear rule: dL/dA = -A^-T (dL/dX) A^-T.
  """
  a, = primals
  da, = tangents
  x = mmatrix_inv(a, leaf)
  return x, -(x @ da @ x)


def _leaf(k):
  """Gauss-Jordan leaf size for a k x k inverse.

  Small leaves put most of the work in matrix products, which run faster
  than the elimination's rank-1 steps. Deep recursion costs compilation
  time and, under autodiff, memory, so only blocks up to 64 wide recurse
  that far.
  """
  return 8 if k <= 64 else 32


def _t(x):
  return jnp.swapaxes(x, -1, -2)


def solve_mmatrix(a, b) -> jax.Array:
  """`a^-1 b` for diagonally dominant M-matrices `a: [..., k, k]`, `b:
  [..., k]`, without LAPACK (see `mmatrix_inv` for why)."""
  return (mmatrix_inv(a) @ b[..., None])[..., 0]
