"""Circuit-aware re-training: gradients through the wires (issue 21, part 2).

RxNN's re-training (RxNN VII) reads the chip in the forward pass and
back-propagates as if the chip were `x @ w` ("straight_through"). The exact
circuit kernel is differentiable (`circuit.effective_conductance`, its
M-matrix inverses with an exact JVP), so the backward pass can instead see
what the wires do to each weight. This module owns that gradient, for the
layers of `rxjax.nn` (which call it in their "circuit" stages):

* `program`: a layer's chips for its CURRENT weights, differentiable in the
  weights: the mapping (`mapping.program`), the chip instance's device
  variation (`device.vary`, the same draw as `crossbar.write`) and `G_eff`,
  either solved exactly for these conductances (`crossbar.solve`: the Fast
  Crossbar Model, "circuit") or the stored distortion `G_eff / g` of the last
  exact solve applied to them (TxSim's interpolated FCM, `crossbar.reprogram`,
  "circuit_interpolated"). The calibration (input scale, ADC range and
  per-column errors, the fitted output gain) is the stored chips' and is not
  differentiated, as in straight-through re-training.
* `fold`: the chips' effective weight matrices `W_eff` (`crossbar.fold` of
  the chip with its converters taken out), differentiable.
* `straight_through`: the chip's read as the forward value with the
  gradient of the linear read `clip(x) @ W_eff`.

What is differentiated, exactly. The loss of the chip's forward read (the
DAC's input quantization and bit-serial cycles, `v @ G_eff` per tile, the
ADCs, shift-and-add, pair subtraction, digital gain and bias) is
differentiated as if the read were its linear part,

    y = clip(x, -x_scale, x_scale) @ W_eff(w),
    W_eff(w) = fold(G_eff(vary(map(w)))),

i.e. the converters are straight-through: their quantization, the ADCs'
clipping, offsets and non-linearity pass the gradient unchanged (the ADCs'
per-column gain errors are linear and are differentiated; so is the input
clip at the calibrated scale). Everything else is differentiated exactly:
`G_eff` w.r.t. every conductance (the exact solve: every cell's IR drop
depends on every other cell of its tile), the variation (multiplicative per
device; a stuck cell has no gradient), the mapping's scale `w_max = max |w|`
and the sign split of differential pairs. The one other non-differentiable
step is the weights' quantization onto `S` slices of `device_bits`-bit cells;
its derivative is taken as the minimum-norm change of the slices' normalized
conductances `c_k` that changes the represented weight `sum_k s_k c_k` (`s_k`:
`mapping.slice_weights`) by one unit: `dc_k / dm = s_k / sum_j s_j**2` (for
one slice, the continuous mapping's own derivative). With full-precision
weights, devices and converters the gradient is the exact derivative of the
chip's loss (tests/circuit_grad_test.py compares it with central finite
differences of re-programmed chips).

The input gradient is the chip's own, `dy @ W_eff.T` (clip mask applied),
whatever `ChipSpec.backward` says; the weight gradient is `W_eff`'s VJP of
`clip(x).T @ dy` back through the solve and the mapping.

It does not own the layers (`rxjax.nn`), the read (`rxjax.crossbar`) or the solve
(`rxjax.circuit`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from rxjax import crossbar
from rxjax import device as device_lib
from rxjax import mapping as mapping_lib

# `config.retrain.backward`: the weight and input gradients of re-training.
BACKWARDS = ("straight_through", "circuit", "circuit_interpolated")
# The `rxjax.nn` stage each circuit-aware backward runs its layers in.
STAGES = {"circuit": "circuit", "circuit_interpolated": "circuit_interpolated"}


def linear_spec(spec: crossbar.ChipSpec) -> crossbar.ChipSpec:
  """`spec` with its converters straight-through: the read's linear part.

  Full-precision inputs through an ideal DAC, ADCs without quantization,
  offset or non-linearity (their per-column gain errors kept: they are
  linear), no read noise. Everything the circuit does is kept.
  """
  return spec.replace(
      dac=dataclasses.replace(spec.dac, input_bits=None, model="ideal"),
      adc=dataclasses.replace(spec.adc, bits=None, nonlinearity=0.0,
                              offset_sigma=0.0),
      device=dataclasses.replace(spec.device, read_noise=0.0))


def mapped(w, spec: crossbar.ChipSpec):
  """`(g, w_scale)` of `mapping.program(w)`, with a derivative.

  The values are `mapping.program`'s, bit for bit. The derivative is the
  continuous mapping's (weight and device bits off: `g = g_min + m (g_max -
  g_min)`, `m = |w| / w_max` on the polarity of w's sign, or the offset
  scheme's `(w / w_max + 1) / 2`) spread over the slices as the
  minimum-norm change of their normalized conductances: `s_k / sum_j s_j**2`
  of it to slice `k` (module docstring).
  """
  out = mapping_lib.program(jax.lax.stop_gradient(w), spec.mapping,
                            spec.device)
  cont = mapping_lib.program(
      w, dataclasses.replace(spec.mapping, weight_bits=None),
      dataclasses.replace(spec.device, device_bits=None))
  s = jnp.asarray(mapping_lib.slice_weights(spec.mapping, spec.device),
                  cont.g.dtype)
  share = (s / jnp.sum(s * s)).reshape((-1,) + (1,) * (cont.g.ndim - 1))
  g_lin = (cont.g - spec.device.g_min) * share  # [S, P, ...]
  # Values of `out.g` exactly (x - x == 0), derivative of `g_lin`.
  g = jax.lax.stop_gradient(out.g) + (g_lin - jax.lax.stop_gradient(g_lin))
  w_scale = jax.lax.stop_gradient(out.w_scale) + (
      cont.w_scale - jax.lax.stop_gradient(cont.w_scale))
  return g, w_scale


def _written(w, stored: crossbar.Chip, key, spec: crossbar.ChipSpec):
  """`stored` holding `w` (`mapped`, then the instance's variation draw),
  `G_eff` not yet computed."""
  g, w_scale = mapped(w, spec)
  g = device_lib.vary(g, spec.device, key=crossbar.variation_key(key))
  return stored.replace(g=g, w_scale=w_scale.astype(g.dtype), g_eff=None,
                        g_eff_bwd=None)


def _redistorted(chip: crossbar.Chip, stored: crossbar.Chip):
  """`chip` with the stored distortion `G_eff / g` applied to its `g` (as
  `crossbar.reprogram`), the distortion not differentiated."""
  stored = jax.lax.stop_gradient(stored)
  ratio = jnp.where(stored.g > 0,
                    stored.g_eff / jnp.where(stored.g > 0, stored.g, 1), 1)
  return chip.replace(g_eff=chip.g * ratio)


def program(w, stored: crossbar.Chip, keys, spec: crossbar.ChipSpec, *,
            exact: bool) -> crossbar.Chip:
  """A layer's chips holding its current weights, differentiable in them.

  Args:
    w: `[G, K, F]` the layer's weights as crossbar matrices (one per conv
      group), not stopped: the result's `g`, `g_eff` and `w_scale` carry
      their gradient.
    stored: `[G, ...]` the layer's chips as programmed and calibrated
      (`rxjax.nn.program`): their calibration is kept, their distortion is
      reused when not `exact`.
    keys: `[G]` the chip instances' keys (the same variation draws).
    spec: the layer's chip (`spec.backward` is not used: the circuit-aware
      gradient has its own input gradient).
    exact: solve `G_eff` of the current conductances exactly
      (`crossbar.solve`, all groups' tiles in one batch; "circuit") or apply
      the stored distortion `G_eff / g` ("circuit_interpolated").

  Returns:
    `[G, ...]` chips: `g` and `w_scale` equal `crossbar.write(w)`'s and,
    when `exact`, `g_eff` equals `crossbar.solve`'s (what `nn.program`
    would give before calibrating); otherwise `crossbar.reprogram`'s.
  """
  spec = spec.replace(backward="straight_through")  # No backward G_eff.
  written = jax.vmap(lambda w_g, c, k: _written(w_g, c, k, spec))(
      w, stored, keys)
  if exact:  # Every group's tiles in one solve.
    return crossbar.solve([written], spec)[0]
  return _redistorted(written, stored)


def fold(chips: crossbar.Chip, spec: crossbar.ChipSpec) -> jax.Array:
  """`[G, K, F]` effective weight matrices of `[G, ...]` chips, their
  converters straight-through (`linear_spec`), differentiable."""
  linear = linear_spec(spec)
  return jax.vmap(lambda c: crossbar.fold(c, linear))(chips)


def straight_through(y_lin, read, spec: crossbar.ChipSpec):
  """`read()`'s value with `y_lin`'s gradient (`y_lin` when the read is
  linear: then they are equal to float rounding, `crossbar.fold`).

  Args:
    y_lin: the linear read `clip(x) @ W_eff`, differentiable.
    read: `() -> y` the chip's read with everything stopped.
    spec: the chip.
  """
  if spec.linear:
    return y_lin
  y = jax.lax.stop_gradient(read()).astype(y_lin.dtype)
  return y + (y_lin - jax.lax.stop_gradient(y_lin))
