"""Training on crossbars: requested weight updates become device updates.

This module owns the weight-update step of TxSim (section IV-C, DESIGN.md
section 5): an Optax `GradientTransformation`, `apply_device_response`, that
takes the weight updates an optimizer requests and returns the updates a
crossbar's devices deliver. It goes last in a chain:

```python
tx = optax.chain(optax.sgd(lr, momentum=0.9),
                 apply_device_response(UpdateSpec(nu=0.01, gamma=5.0),
                                       key=jax.random.key(0)))
```

Per layer (every leaf with `ndim >= 2`: dense matrices `[fan_in, fan_out]`
and conv kernels alike; the response is per cell, so the shape does not
matter) the transformation keeps the conductances of a differential pair of
analog devices per weight in its state, and each step

1. maps the requested weight change `dw` to ideal conductance changes with
   the layer's scale (TxSim's `Scale_Layer-k`): `w_scale` (the `w_max` of the
   layer) corresponds to the full range `g_max - g_min` of the pair, so
   `dg = (g_max - g_min) * dw / w_scale` for the pair, split `+dg / 2` on the
   positive device and `-dg / 2` on the negative one;
2. applies the device response (`device.update`: TxSim eq. 1, write noise,
   clipping) to both devices;
3. reads the realized weights back, `w = w_scale * (g_pos - g_neg) /
   (g_max - g_min)`, and returns `w - params`.

Leaves with `ndim < 2` (biases, norm scales, scalars) are not on a crossbar:
their updates pass through unchanged (digital update).

It does not own the device physics (`device.py`), the mapping of the
realized weights onto bit-sliced, tiled crossbars for the forward and
backward reads (`mapping.py`, `rxjax.crossbar`), nor the layers (`rxjax.nn`).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from rxjax import device as device_lib
from rxjax.device import DeviceSpec, UpdateSpec


class DeviceUpdateState(NamedTuple):
  """State of `apply_device_response`.

  count: [] int32, the number of steps taken; step `t` draws its noise from
    `fold_in(key, t)`.
  key: the PRNG key given to `apply_device_response` (fixed).
  g: a pytree like the params: for every crossbar leaf `[2, *leaf.shape]`,
    the conductances (siemens) of its positive (index 0) and negative
    (index 1) devices, dtype of the leaf; None for the digital leaves.
  w_scale: a pytree like the params: for every crossbar leaf the `[]` weight
    `w_max` that the full range `g_max - g_min` of a pair represents, fixed
    at `init`; None for the digital leaves.
  """

  count: jax.Array
  key: jax.Array
  g: Any
  w_scale: Any


def on_crossbar(leaf) -> bool:
  """Whether a parameter leaf is trained on devices (`ndim >= 2`)."""
  return jnp.ndim(leaf) >= 2


def pair_conductances(w, w_scale, device: DeviceSpec) -> jax.Array:
  """Weights -> conductances of a differential pair around mid-range.

  `g_pos = g_c + R/2 * w / w_scale` and `g_neg = g_c - R/2 * w / w_scale`
  with `g_c = (g_min + g_max) / 2` and `R = g_max - g_min`, clipped to
  `[g_min, g_max]`: both devices start in the middle of their range, so
  either can move both ways, and `|w| <= w_scale` is represented exactly.

  Args:
    w: [...] weights, floating point.
    w_scale: [] the weight that the full range of a pair represents, > 0.
    device: the device (`g_min`, `g_max`).

  Returns:
    [2, ...] conductances (siemens), positive device first, dtype of `w`.
  """
  w = jnp.asarray(w)
  half = (device.g_max - device.g_min) / 2
  centre = (device.g_min + device.g_max) / 2
  delta = half * (w / w_scale)
  g = jnp.stack([centre + delta, centre - delta])
  return jnp.clip(g, device.g_min, device.g_max).astype(w.dtype)


def pair_weights(g, w_scale, device: DeviceSpec) -> jax.Array:
  """Conductances of differential pairs -> the weights they represent.

  `w = w_scale * (g[0] - g[1]) / (g_max - g_min)`: the differential formula
  of `mapping.unmap` for one analog slice.

  Args:
    g: [2, ...] conductances (siemens), positive device first.
    w_scale: [] the weight that the full range of a pair represents.
    device: the device (`g_min`, `g_max`).

  Returns:
    [...] weights, dtype of `g`.
  """
  g = jnp.asarray(g)
  scale = jnp.asarray(w_scale, g.dtype) / jnp.asarray(
      device.g_max - device.g_min, g.dtype)
  return scale * (g[0] - g[1])


def update_pair(g, dw, w_scale, device: DeviceSpec, spec: UpdateSpec, *,
                key) -> jax.Array:
  """Applies a requested weight change to differential pairs.

  The pair's conductance difference must change by
  `dg = (g_max - g_min) * dw / w_scale`; the positive device is asked for
  `+dg / 2`, the negative one for `-dg / 2`, so that every update
  potentiates one device and depresses the other, and `device.update`
  (TxSim eq. 1, write noise, clipping) gives what each delivers. The two
  devices draw independent noise, so the realized weight has noise
  `gamma * |dw| / sqrt(2)`.

  Args:
    g: [2, ...] present conductances (siemens), positive device first.
    dw: [...] requested weight changes.
    w_scale: [] the weight that the full range of a pair represents.
    device: the device (`g_min`, `g_max`).
    spec: the update response (`nu`, `gamma`).
    key: PRNG key of this step.

  Returns:
    [2, ...] new conductances (siemens) in `[g_min, g_max]`, dtype of `g`.
  """
  g = jnp.asarray(g)
  half = jnp.asarray((device.g_max - device.g_min) / 2, g.dtype)
  dg = half * (jnp.asarray(dw, g.dtype) / jnp.asarray(w_scale, g.dtype))
  return device_lib.update(g, jnp.stack([dg, -dg]), device, spec, key=key)


def apply_device_response(
    spec: UpdateSpec,
    device: DeviceSpec | None = None,
    *,
    key,
    w_max=None,
    headroom: float = 2.0,
) -> optax.GradientTransformation:
  """Turns requested weight updates into the updates devices deliver.

  Goes last in `optax.chain`; it needs `params`. See the module docstring
  for the steps. Policies:

  * Differential pairs: one analog device per polarity and weight (TxSim
    trains on full-precision conductances per device pair). Both start at
    mid-range; every update moves them by half the requested change in
    opposite directions, so both branches of TxSim eq. 1 act on every
    step.
  * Bit slices: none during training. The state holds the pair's analog
    conductances; the realized weights, returned as params, are what the
    forward and backward reads map onto the chip's bit slices and tiles
    (TxSim IV-A: a copy of the ideal conductances is kept and mapped anew
    after every update).
  * Layer scale (TxSim IV-C, `Scale_Layer-k` from `W_max` and `dW_max`):
    `w_scale` maps onto the full range of a pair. The weight statistic
    fixes it: `w_max` if given (e.g. `max |w|` reached in native digital
    training), else `headroom * max |w|` of the layer at `init` (1 if the
    layer is all zeros). The gradient statistic does not enter: the
    requested update already carries the learning rate, and a separate
    gradient scale would only rescale it, so that an ideal device could
    no longer reproduce SGD.
  * Learning rate: TxSim applies eq. 1 and the noise to the gradient's
    `dG_ideal` and multiplies the result by the learning rate; here the
    response acts on the requested update, which already carries the
    learning rate (and momentum), i.e. on the change the device is asked
    to make. The noise is the same either way (it is linear in `dG`); the
    non-linear step differs at second order in `nu * dg / (g_max - g_min)`.
  * Consistency: with `nu == 0` and `gamma == 0`, the realized update is the
    requested one to float rounding as long as `|w| <= w_scale`, i.e.
    training is plain digital SGD on the pair's conductances. The state's
    conductances are the truth: the returned update re-anchors the params
    to them every step, so rounding does not accumulate.

  Args:
    spec: the device's update response (`nu`, `gamma`); static.
    device: the device (`g_min`, `g_max`); `DeviceSpec()` if None. Its
      variation, programming and read noise and stuck cells belong to the
      reads (`rxjax.crossbar`) and are not applied here.
    key: PRNG key; step `t` uses `fold_in(key, t)` and leaf `i` (in
      `jax.tree_util` order) `fold_in(fold_in(key, t), i)`. Same key, same
      numbers.
    w_max: None, a number > 0 for every crossbar leaf, or a pytree like
      the params with a number per crossbar leaf (entries of the digital
      leaves are ignored and may be None).
    headroom: factor >= 1 on `max |w|` when `w_max` is None, so that weights
      may grow beyond their initial maximum before the devices saturate.

  Returns:
    An `optax.GradientTransformation` with state `DeviceUpdateState`; its
    `update` is jit-compatible and returns `realized - params`.

  Raises:
    ValueError: on an invalid `spec`, `device`, `w_max` or `headroom`
      (at construction), or when `update` is called without `params`.
  """
  if not isinstance(spec, UpdateSpec):
    raise ValueError(f"`spec` must be an UpdateSpec, got {spec!r}")
  if device is None:
    device = DeviceSpec()
  if not isinstance(device, DeviceSpec):
    raise ValueError(f"`device` must be a DeviceSpec or None, got {device!r}")
  if (isinstance(headroom, bool) or not isinstance(headroom, (int, float))
      or not math.isfinite(headroom) or headroom < 1):
    raise ValueError(f"`headroom` must be a finite number >= 1, got "
                     f"{headroom!r}")
  scalar_w_max = isinstance(w_max, (int, float)) and not isinstance(
      w_max, bool)
  if scalar_w_max and not (math.isfinite(w_max) and w_max > 0):
    raise ValueError(f"`w_max` must be None, a finite number > 0 or a pytree "
                     f"of them, got {w_max!r}")

  def layer_scale(w, given):
    dtype = w.dtype
    if given is not None:
      return jnp.asarray(given, dtype)
    top = jnp.max(jnp.abs(w))
    return jnp.where(top > 0, headroom * top, 1).astype(dtype)

  def init_fn(params):
    leaves, treedef = jax.tree_util.tree_flatten(params)
    if w_max is None or scalar_w_max:
      given = [w_max] * len(leaves)
    else:
      given = treedef.flatten_up_to(w_max)
    gs, scales = [], []
    for w, w_given in zip(leaves, given):
      if on_crossbar(w):
        w = jnp.asarray(w)
        scale = layer_scale(w, w_given)
        gs.append(pair_conductances(w, scale, device))
        scales.append(scale)
      else:
        gs.append(None)
        scales.append(None)
    return DeviceUpdateState(
        count=jnp.zeros([], jnp.int32), key=key,
        g=treedef.unflatten(gs), w_scale=treedef.unflatten(scales))

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError(
          "apply_device_response needs `params` (it returns realized "
          "weights - params): call `update(updates, state, params)`")
    leaves, treedef = jax.tree_util.tree_flatten(updates)
    ws = treedef.flatten_up_to(params)
    gs = treedef.flatten_up_to(state.g)
    scales = treedef.flatten_up_to(state.w_scale)
    step_key = jax.random.fold_in(state.key, state.count)
    out, new_gs = [], []
    for i, (dw, w, g, scale) in enumerate(zip(leaves, ws, gs, scales)):
      if g is None:  # Digital leaf: the requested update is applied as is.
        out.append(dw)
        new_gs.append(None)
        continue
      g = update_pair(g, dw, scale, device, spec,
                      key=jax.random.fold_in(step_key, i))
      realized = pair_weights(g, scale, device)
      out.append((realized - jnp.asarray(w, realized.dtype)).astype(dw.dtype))
      new_gs.append(g)
    new_state = DeviceUpdateState(
        count=optax.safe_int32_increment(state.count), key=state.key,
        g=treedef.unflatten(new_gs), w_scale=state.w_scale)
    return treedef.unflatten(out), new_state

  return optax.GradientTransformation(init_fn, update_fn)
