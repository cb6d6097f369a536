"""NaN and inf at the public entry points: an error outside jit, a
diagnostic inside.

Left alone, one non-finite value spreads silently: a NaN input row sets the
calibrated input scale to NaN, and every other row of the batch then reads
exactly 0; a NaN weight maps to 0 and the layer's scale falls back to 1.
So the entry points (`crossbar.matmul`, `crossbar.program`,
`crossbar.calibrate`, `nn.program`, the experiment's data and weights) call
`check` on what they are given:

* outside jit (concrete arrays) a non-finite value raises a `ValueError`
  that names the argument, counts the bad values and gives the first index;
* inside jit (traced arrays) nothing can raise on a value, so, as lineax's
  `Solution.result` does, the call returns a diagnostic the caller can
  check: every floating-point output is poisoned to NaN (`poison`: never a
  plausible wrong number), and `status(outputs)` says whether an output is
  finite (`Status.ok`) and how many values are not.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Status(NamedTuple):
  """Diagnostic of a call under jit (lineax-style).

  Attributes:
    ok: bool scalar, True when every checked value is finite.
    nonfinite: int scalar, how many values are NaN or inf.
  """
  ok: jax.Array
  nonfinite: jax.Array


def _floating(tree):
  return [x for x in jax.tree.leaves(tree)
          if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact)]


def _traced(x) -> bool:
  return isinstance(x, jax.core.Tracer)


def status(tree) -> Status:
  """`Status` of every floating-point leaf of `tree` (jit-compatible).

  Example:
    >>> y, st = jax.jit(lambda x: rxjax.matmul(x, w, spec, key=k,
    ...                                         return_status=True))(x)
    >>> if not st.ok: ...  # A NaN / inf went in: y is all NaN.
  """
  leaves = _floating(tree)
  if not leaves:
    return Status(jnp.asarray(True), jnp.asarray(0, jnp.int32))
  bad = sum(jnp.sum(~jnp.isfinite(x)).astype(jnp.int32) for x in leaves)
  return Status(bad == 0, bad)


def check(name: str, tree, what: str = "",
          remedy: str = "remove or replace them before calling"
          ) -> jax.Array | bool:
  """Raises on non-finite concrete values; returns a flag for traced ones.

  Args:
    name: the argument, as the caller typed it (`x`, `w`, `variables`).
    tree: an array or a pytree of arrays.
    what: optional words on what the argument is, for the message.
    remedy: what to do, for the message.

  Returns:
    True when every leaf is concrete (and finite: otherwise it raised);
    else a traced bool scalar, True when every value is finite, to pass to
    `poison`.

  Raises:
    ValueError: a concrete leaf holds NaN or inf; the message names `name`,
      the leaf, the count and the first bad index.
  """
  flags = []
  for path, x in jax.tree_util.tree_leaves_with_path(tree):
    if not hasattr(x, "dtype") or not jnp.issubdtype(x.dtype, jnp.inexact):
      continue
    if _traced(x):
      flags.append(jnp.all(jnp.isfinite(x)))
      continue
    a = np.asarray(x)
    finite = np.isfinite(a)
    if not finite.all():
      bad = np.argwhere(~finite)
      first = tuple(int(i) for i in bad[0])
      leaf = jax.tree_util.keystr(path)
      kinds = []
      if np.isnan(a).any():
        kinds.append(f"{int(np.isnan(a).sum())} NaN")
      if np.isinf(a).any():
        kinds.append(f"{int(np.isinf(a).sum())} inf")
      raise ValueError(
          f"`{name}{leaf}`{' (' + what + ')' if what else ''} must be "
          f"finite, got {' and '.join(kinds)} of {a.size} values (first at "
          f"index {first}); {remedy}")
  return all_true(*flags)


def poison(tree, ok):
  """`tree` with every floating-point leaf set to NaN unless `ok`.

  `ok` True (a Python bool: concrete inputs, already checked) returns the
  tree unchanged.
  """
  if ok is True:
    return tree

  def one(x):
    if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.inexact):
      return jnp.where(ok, x, jnp.asarray(jnp.nan, x.dtype))
    return x

  return jax.tree.map(one, tree)


def all_true(*flags):
  """The conjunction of `check` flags (Python True when all are)."""
  traced = [f for f in flags if f is not True]
  if not traced:
    return True
  ok = traced[0]
  for f in traced[1:]:
    ok = ok & f
  return ok
