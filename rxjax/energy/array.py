"""The array term from the physics: the energy one programmed chip's devices
and wires dissipate for the actual input voltages of every read
(`estimate`)."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from rxjax import _checks
from rxjax import crossbar
from rxjax import nn as rnn
from rxjax import periphery
from rxjax.energy.network import (Call, batch_images, check_specs, layers,
                                  recorder)
from rxjax.energy.report import EnergyReport, build_report
from rxjax.energy.spec import EnergySpec



def _input_padding(module: nn.Conv, x):
  """Flax's input paddings ('CIRCULAR', 'REFLECT', 'CAUSAL') applied to x;
  returns (x, the padding for the patches)."""
  pad = module.padding
  k = module.kernel_size
  k = (k,) if isinstance(k, int) else tuple(k)
  nd = len(k)
  if not isinstance(pad, str) or pad.upper() in ("SAME", "VALID",
                                                 "SAME_LOWER"):
    if isinstance(pad, str):
      return x, pad.upper()
    return x, tuple(map(tuple, nn.linear.canonicalize_padding(pad, nd)))
  dil = module.kernel_dilation
  dil = (1,) * nd if dil is None else ((dil,) * nd if isinstance(dil, int)
                                       else tuple(dil))
  if pad == "CAUSAL":
    pads = [(dil[0] * (k[0] - 1), 0)]
  else:
    window = [(kk - 1) * d + 1 for kk, d in zip(k, dil)]
    pads = [((w - 1) // 2, w // 2) for w in window]
  mode = {"CIRCULAR": "wrap", "REFLECT": "reflect", "CAUSAL": "constant"}
  return jnp.pad(x, [(0, 0)] + pads + [(0, 0)], mode=mode[pad]), "VALID"


def _tuple(v, nd):
  if v is None:
    return (1,) * nd
  return (v,) * nd if isinstance(v, int) else tuple(v)


def _rows_of(call: Call):
  """The layer's crossbar input vectors `[G, R, K]` (R: every read's row
  vector, images x positions), in the rows' order (`nn.kernel_to_matrix`)."""
  x = jnp.asarray(call.x)
  g = call.geometry.groups
  if isinstance(call.module, nn.Dense):
    return x.reshape(1, -1, x.shape[-1])
  module = call.module
  k = module.kernel_size
  k = (k,) if isinstance(k, int) else tuple(k)
  nd = len(k)
  x = x.reshape((-1,) + x.shape[x.ndim - nd - 1:])
  x, padding = _input_padding(module, x)
  spatial = {1: "W", 2: "HW", 3: "DHW"}[nd]
  dims = ("N" + spatial + "C", spatial + "IO", "N" + spatial + "C")
  p = jax.lax.conv_general_dilated_patches(
      x, k, _tuple(module.strides, nd), padding,
      lhs_dilation=_tuple(module.input_dilation, nd),
      rhs_dilation=_tuple(module.kernel_dilation, nd),
      dimension_numbers=dims)
  p = p.reshape(-1, g, p.shape[-1] // g)
  return jnp.moveaxis(p, 1, 0)


def _moment(rows, x_scale, spec: crossbar.ChipSpec, exact: bool) -> np.ndarray:
  """Sum over every read of the DAC digits' `u^2` (`[G, Q, C, K]`) or, when
  exact, of `u u^T` (`[G, Q, C, K, K]`), float64; `u` in [0, 1] is volts /
  v_read.

  The digits are the chip's: its input scale `[G]`, passes and the
  streaming of `periphery.stream` (`q = round(clip(x01) L_in)`, digit c =
  `(q >> c dac_bits) & (2**dac_bits - 1)` over its full scale). In NumPy,
  one cycle at a time: it runs once per chip, and eager jax.numpy would
  compile every operation for every layer's shape.

  Args:
    rows: `[G, R, K]` the layer's input vectors (every read).
    x_scale: `[G]` input scales.
  """
  x01 = rows / np.asarray(x_scale, rows.dtype).reshape(-1, 1, 1)
  passes = [np.maximum(x01, 0)]
  if spec.periphery.inputs.n_passes == 2:  # Signed inputs.
    passes.append(np.maximum(-x01, 0))
  x01 = np.clip(np.stack(passes, axis=1), 0, 1)  # [G, Q, R, K]
  d = spec.dac

  def reduce(u, scale):  # Sum over reads (axis 2), then / scale^2.
    if exact:
      out = np.einsum("gqrk,gqrl->gqkl", u, u, dtype=np.float64)
    else:
      out = np.einsum("gqrk,gqrk->gqk", u, u, dtype=np.float64)
    return out / scale**2

  if d.input_bits is None:
    return reduce(x01, 1.0)[:, :, None]
  levels = 2**d.input_bits - 1
  q = np.round(x01 * levels)  # Half to even, as jnp.round.
  if d.dac_bits is None:
    return reduce(q, levels)[:, :, None]
  q = q.astype(np.int32 if d.input_bits < 31 else np.int64)
  mask = 2**d.dac_bits - 1
  dtype = np.float32 if mask < 2**12 else np.float64  # Exact products.
  return np.stack([
      reduce(((q >> (c * d.dac_bits)) & mask).astype(dtype), mask)
      for c in range(periphery.n_cycles(d))], axis=2)


def _chip_arrays(chips, path):
  """(g, g_eff, x_scale) of the layer at `path` in a "chips" collection:
  `[G, S, P, Tr, Tc, M, N]` conductances and the `[G]` input scales."""
  node = chips
  for name in path:
    node = node[name]
  chip = node["chip"]
  return chip.g, chip.g_eff, chip.x_scale


_INPUTS = ("chip", "digital")
_OWN = object()  # Marks a layer that runs on the spec of the call.


def _rows_fn(*key):
  """`_build_rows_fn`, compiled once per setting when the model is hashable
  (a module holding a list, as `nn.Sequential`, is not)."""
  try:
    hash(key)
  except TypeError:
    return _build_rows_fn(*key)
  return _cached_rows_fn(*key)


def _build_rows_fn(model, spec, images, kwargs):
  """`(variables, chips, x) -> [per crossbar layer: its input vectors [G, R,
  K]]`: through the chip `spec`, or (spec None) the floating-point forward
  pass, which does not depend on the chip (one compile serves every chip of
  a run)."""
  apply_kwargs = dict(kwargs)

  def run(v, c, x):
    calls = []
    with nn.intercept_methods(recorder(calls, _OWN if spec is None else spec,
                                        images)):
      if spec is None:
        model.apply(v, x, **apply_kwargs)
      else:
        rnn.apply(model, v, c, x, spec, **apply_kwargs)
    return [_rows_of(call) for call in calls]

  return jax.jit(run)


_cached_rows_fn = functools.lru_cache(maxsize=8)(_build_rows_fn)


@functools.lru_cache(maxsize=8)
def _port_admittance_fn(wires):
  return jax.jit(lambda g: periphery.port_admittance(g, wires))


def _array_j(moment, g, g_eff, spec: crossbar.ChipSpec, espec: EnergySpec):
  """The layer's array energy over the batch's reads (J), from its input
  moments and its chip's conductances (NumPy, float64)."""
  gsz, s, p, tr, tc, m, n = g_eff.shape
  moment = np.asarray(moment, np.float64)
  k = moment.shape[3]
  if espec.array_model == "exact":
    y = np.asarray(_port_admittance_fn(spec.wires)(g), np.float64)
    y = y.sum((1, 2, 4))  # [G, Tr, M, M]: every crossbar of a tile row.
    pad = tr * m - k
    moment = np.pad(moment, [(0, 0)] * 3 + [(0, pad), (0, pad)])
    moment = moment.sum((1, 2)).reshape(gsz, tr, m, tr, m)
    per_volt2 = np.einsum("gtitj,gtij->", moment, y)
  else:
    rows = np.asarray(g_eff, np.float64).sum((1, 2, 4, 6))  # [G, Tr, M]
    rows = rows.reshape(gsz, tr * m)[:, :k]
    per_volt2 = np.einsum("gqck,gk->", moment, rows)
  return per_volt2 * spec.dac.v_read**2 * espec.read_pulse_s


def estimate(model: nn.Module, variables, x, spec: crossbar.ChipSpec, *, key,
             energy_spec: EnergySpec | None = None, chips=None,
             inputs: str = "chip", **apply_kwargs) -> EnergyReport:
  """Energy, latency and area per image of `model` on the chip `spec`.

  Programs one chip instance (`rxjax.nn.program(model, variables, x, spec,
  key=key)`, calibrated on `x`) unless `chips` are given, runs `x` through
  the network to get every crossbar layer's inputs, and counts (the rules
  of `rxjax.energy`'s docstring). The array term is the energy the programmed tiles dissipate
  for those inputs: per crossbar read, `read_pulse_s * v_read^2 * u^T Y u`
  for the DAC digits `u` of the read (the chip's input scale, passes and
  cycles; `EnergySpec.array_model` says how `Y` is found).

  Args:
    model: a Linen model (its nn.Dense / nn.Conv layers go on crossbars).
    variables: its variables, without chips.
    x: an example batch `[B, ...]`: its shape gives the counts, its values
      the array term; every number is per image (divided by B).
    spec: the chip.
    key: PRNG key of the chip instance (used only when `chips` is None).
    energy_spec: technology parameters; None is `EnergySpec()` (ISAAC).
    chips: an already programmed "chips" collection of this model and spec
      (`rxjax.nn.program`), to skip programming.
    inputs: which layer inputs drive the array term: "chip" (default: `x`
      run through the programmed chip, `rxjax.nn.apply`) or "digital" (the
      floating-point forward pass of `x`, cheaper to compile; the two differ
      by the chip's own error in each layer's input).
    **apply_kwargs: passed to `model.apply` (e.g. `train=False`).

  Returns:
    The `EnergyReport`.
  """
  espec = check_specs(spec, energy_spec)
  _checks.check_choice("inputs", inputs, _INPUTS)
  images = batch_images(x)
  variables = {k: v for k, v in variables.items() if k != rnn.COLLECTION}
  if chips is None:
    chips = jax.jit(lambda v, x, k: rnn.program(
        model, v, x, spec, key=k, **apply_kwargs))(variables, x, key)
  kwargs = tuple(sorted(apply_kwargs.items()))
  found = layers(model, variables, x, spec, **apply_kwargs)
  paths = [tuple(name.split("/")) if name else () for name, _, _ in found]
  arrays = [_chip_arrays(chips, path) for path in paths]
  fn = _rows_fn(model, spec if inputs == "chip" else None, images, kwargs)
  layer_rows = fn(variables, chips if inputs == "chip" else None, x)
  exact = espec.array_model == "exact"
  moments = [_moment(np.asarray(r), a[2], layer_spec, exact)
             for r, a, (_, _, layer_spec) in zip(layer_rows, arrays, found)]
  rows = []
  for (name, geometry, layer_spec), moment, (g, g_eff, _) in zip(
      found, moments, arrays):
    rows.append((name, geometry, layer_spec,
                 _array_j(moment, g, g_eff, layer_spec, espec) / images))
  return build_report(rows, espec, espec.array_model, images)
