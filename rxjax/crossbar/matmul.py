"""`crossbar_matmul` (the read with its backward physics) and `matmul`, the
one-call entry point."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from rxjax import finite
from rxjax.crossbar.calibration import calibrate
from rxjax.crossbar.chip import Chip, check_spec, check_w, program
from rxjax.crossbar.reads import read
from rxjax.crossbar.spec import ChipSpec

# ---------------------------------------------------------------------------
# The layer primitive with its backward physics.


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def crossbar_matmul(x, w, chip: Chip, key, spec: ChipSpec):
  """`~ x @ w` on the chip programmed from `w`, with crossbar gradients.

  Args:
    x: `[..., fan_in]` inputs.
    w: `[fan_in, fan_out]` the weights `chip` was programmed from (used only
      by the gradients).
    chip: the programmed, calibrated layer.
    key: PRNG key for read noise, or None.
    spec: static spec.

  Returns:
    `[..., fan_out]`. Gradients: w.r.t. `w`, the ideal `x.T @ dy`; w.r.t.
    `x`, `dy @ w.T` (`spec.backward == "straight_through"`) or the transposed
    non-ideal read of `dy` ("transposed_read"); none w.r.t. the chip.
  """
  return read(x, chip, spec, key=key)


def _matmul_fwd(x, w, chip, key, spec):
  return read(x, chip, spec, key=key), (x, w, chip, key)


def _matmul_bwd(spec, residuals, dy):
  x, w, chip, key = residuals
  if spec.backward == "straight_through":
    dx = dy @ w.T.astype(dy.dtype)
  else:
    bkey = None if key is None else jax.random.fold_in(key, 1)
    dx = read(dy, chip, spec, key=bkey, direction="backward")
  x2 = x.reshape((-1, x.shape[-1]))
  dw = (x2.T @ dy.reshape((-1, dy.shape[-1]))).astype(w.dtype)
  dchip = jax.tree.map(jnp.zeros_like, chip)
  return dx.astype(x.dtype), dw, dchip, None


crossbar_matmul.defvjp(_matmul_fwd, _matmul_bwd)


def matmul(x, w, spec: ChipSpec | None = None, *, key,
           return_status: bool = False):
  """`x @ w` computed on a simulated crossbar chip: the one-call entry point.

  Programs `w` onto one chip instance drawn from `key`, calibrates the input
  scale and the ADCs on `x` itself, and reads.

  Args:
    x: `[..., fan_in]` inputs.
    w: `[fan_in, fan_out]` weights.
    spec: the chip; None is the papers' default `ChipSpec()`. `ChipSpec.ideal()`
      reproduces `x @ w` to float rounding.
    key: PRNG key: one key is one chip instance.
    return_status: also return a `finite.Status` (for use under jit, where
      a NaN / inf input cannot raise: the output is then all NaN).

  Returns:
    `[..., fan_out]`, differentiable as `crossbar_matmul`; with
    `return_status`, `(y, status)`. An empty batch gives an empty output.

  Raises:
    ValueError: `x` or `w` holds NaN or inf (outside jit), or bad shapes.
    TypeError: `spec` is not a `ChipSpec` or None.

  Example:
    >>> y = rxjax.matmul(x, w, key=jax.random.key(0))
  """
  spec = ChipSpec() if spec is None else spec
  check_spec(spec)
  w = check_w(w)
  x = jnp.asarray(x)
  if x.ndim < 1 or x.shape[-1] != w.shape[0]:
    raise ValueError(f"`x` must have shape [..., {w.shape[0]}] to multiply "
                     f"a {w.shape[0]}x{w.shape[1]} `w`, got {x.shape}")
  ok = finite.all_true(finite.check("x", x, "inputs"),
                       finite.check("w", w, "weights"))
  if x.size == 0:  # Nothing to calibrate on, nothing to read.
    y = jnp.zeros(x.shape[:-1] + (w.shape[1],), jnp.result_type(x, w))
  else:
    chip = program(w, spec, key=jax.random.fold_in(key, 0))
    chip = calibrate(chip, jax.lax.stop_gradient(x), spec)
    y = finite.poison(
        crossbar_matmul(x, w, chip, jax.random.fold_in(key, 1), spec), ok)
  if return_status:
    return y, finite.status((x, w))
  return y
