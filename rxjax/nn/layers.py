"""The two layer computations on chips (`dense_on_chip`, `conv_on_chip`),
shared by the modules and the interceptor, and the drop-in modules
`CrossbarDense`, `CrossbarConv`."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from rxjax import circuit_grad
from rxjax import crossbar
from rxjax.nn.conv import (ConvGeometry, conv_geometry, kernel_to_matrix,
                           matrix_to_kernel)
from rxjax.nn.modes import ChipSpec
from rxjax.nn.stages import (chipwise, clip_range, folded, gained, group_keys,
                             layer_chips, layer_read_key, per_group)

# ---------------------------------------------------------------------------
# The two layer computations, shared by the modules and the interceptor.


def dense_on_chip(module: nn.Module, x, kernel, spec: ChipSpec | None,
                  stage: str = "read"):
  """`x @ kernel` (no bias) of a Dense layer, on its chip when spec is set
  (`stage`: what the layer does with its chip, see `STAGES`)."""
  x = jnp.asarray(x)
  if spec is None or module.is_initializing():
    return x @ kernel.astype(x.dtype)
  batch = x.shape[:-1]
  x2 = x.reshape(-1, x.shape[-1])
  layer = layer_chips(module, kernel[None], lambda: x2[None], spec, stage)
  if layer is None:  # Written, not solved yet: digital.
    return x @ kernel.astype(x.dtype)
  chips, w_eff, w_bwd = layer
  if stage in circuit_grad.STAGES.values():
    lo, hi = clip_range(chips, spec, 1)
    chip = jax.lax.stop_gradient(jax.tree.map(lambda a: a[0], chips))
    y = circuit_grad.straight_through(
        jnp.clip(x2, lo, hi) @ w_eff[0].astype(x.dtype),
        lambda: crossbar.read(jax.lax.stop_gradient(x2), chip, spec,
                              key=layer_read_key(module, spec)), spec)
  elif spec.linear:
    lo, hi = clip_range(chips, spec, 1)
    bwd = None if w_bwd is None else w_bwd[0].T
    y = folded(jnp.matmul, x2, kernel.astype(x.dtype),
                w_eff[0].astype(x.dtype), bwd, lo, hi)
  else:
    chip = jax.tree.map(lambda a: a[0], chips)
    y = crossbar.crossbar_matmul(x2, kernel, chip, layer_read_key(module, spec),
                                 spec).astype(x.dtype)
  if chips is not None:
    y = gained(module, y)
  return y.reshape(batch + (y.shape[-1],))


def conv_on_chip(module: nn.Module, x, kernel, conv: ConvGeometry,
                 spec: ChipSpec | None, stage: str = "read"):
  """The convolution (no bias) of a Conv layer, on its chips when set
  (`stage`: what the layer does with its chips, see `STAGES`).

  `x`: `[*batch, *spatial, C]` with any number of batch dims (none
  included), as Flax's `nn.Conv` takes it.
  """
  x = jnp.asarray(x)
  if x.ndim < conv.nd + 1:
    raise ValueError(
        f"a {conv.nd}-D convolution needs inputs [*batch, *spatial, "
        f"channels] of at least {conv.nd + 1} dims, got shape {x.shape}")
  batch = x.shape[:x.ndim - conv.nd - 1]
  x = conv.pad_input(x.reshape((-1,) + x.shape[len(batch):]))
  layer = None
  if spec is not None and not module.is_initializing():
    w = kernel_to_matrix(kernel, conv.groups)
    cached = {}

    def patches():
      if "p" not in cached:
        cached["p"] = conv.patches(x)
      return cached["p"][0]

    layer = layer_chips(module, w, patches, spec, stage)
  if layer is None:  # Digital, or written and not solved yet.
    y = conv(x, kernel)
  else:
    chips, w_eff, w_bwd = layer
    y_lin = None
    if stage in circuit_grad.STAGES.values():
      lo, hi = clip_range(chips, spec, x.shape[-1])
      y_lin = conv(jnp.clip(x, lo, hi),
                   matrix_to_kernel(w_eff, conv.k).astype(x.dtype))
      chips = jax.lax.stop_gradient(chips)
    if y_lin is not None and spec.linear:
      y = y_lin
    elif spec.linear:
      lo, hi = clip_range(chips, spec, x.shape[-1])
      k_eff = matrix_to_kernel(w_eff, conv.k).astype(x.dtype)
      k_bwd = None
      if w_bwd is not None:
        k_bwd = matrix_to_kernel(jnp.swapaxes(w_bwd, 1, 2),
                                 conv.k).astype(x.dtype)
      y = folded(conv, x, kernel.astype(x.dtype), k_eff, k_bwd, lo, hi,
                  read=chipwise(conv))
    else:
      p, out_spatial = conv.patches(x)
      key = layer_read_key(module, spec)
      keys = None if key is None else group_keys(key, conv.groups)
      read = lambda p_g, w_g, c, k: crossbar.crossbar_matmul(
          p_g, w_g, c, k, spec)
      if keys is None:
        y = per_group(lambda p_g, w_g, c: read(p_g, w_g, c, None), p, w,
                       chips)
      else:
        y = per_group(read, p, w, chips, keys)
      y = jnp.moveaxis(y, 0, 1).reshape(
          (x.shape[0],) + out_spatial + (kernel.shape[-1],)).astype(x.dtype)
      if y_lin is not None:
        y = circuit_grad.straight_through(y_lin, lambda: y, spec)
    if chips is not None:
      y = gained(module, y)
  return y.reshape(batch + y.shape[1:])


# ---------------------------------------------------------------------------
# Modules.


class CrossbarDense(nn.Dense):
  """`nn.Dense` on a crossbar chip (`spec`; None: digital).

  Same parameters as `nn.Dense` ("kernel" `[fan_in, features]`, "bias"), so
  checkpoints move between the two.
  """

  spec: ChipSpec | None = None

  @nn.compact
  def __call__(self, inputs):
    kernel = self.param("kernel", self.kernel_init,
                        (jnp.shape(inputs)[-1], self.features),
                        self.param_dtype)
    y = dense_on_chip(self, inputs, kernel, self.spec)
    if self.use_bias:
      bias = self.param("bias", self.bias_init, (self.features,),
                        self.param_dtype)
      y = y + bias.astype(y.dtype)
    return y


class CrossbarConv(nn.Conv):
  """`nn.Conv` on crossbar chips (`spec`; None: digital), channels last.

  Any number of spatial dims, kernel size, strides, padding ('SAME',
  'VALID', explicit, and Flax's input paddings 'CIRCULAR', 'REFLECT',
  'CAUSAL'), input and kernel dilation, feature groups (each group its own
  matrix and tiles) and weight masks (masked weights are programmed as
  zeros). Same parameters as `nn.Conv`.
  """

  spec: ChipSpec | None = None

  @nn.compact
  def __call__(self, inputs):
    conv = conv_geometry(self)
    c_in = jnp.shape(inputs)[-1]
    if c_in % self.feature_group_count or (
        self.features % self.feature_group_count):
      raise ValueError(
          f"`feature_group_count` = {self.feature_group_count} must divide "
          f"the input channels ({c_in}) and `features` ({self.features})")
    kernel = self.param(
        "kernel", self.kernel_init,
        conv.k + (c_in // self.feature_group_count, self.features),
        self.param_dtype)
    kernel = masked(self, kernel)
    y = conv_on_chip(self, inputs, kernel, conv, self.spec)
    if self.use_bias:
      bias = self.param("bias", self.bias_init, (self.features,),
                        self.param_dtype)
      y = y + bias.astype(y.dtype)
    return y


def masked(module: nn.Conv, kernel):
  """The kernel times `module.mask`, as `nn.Conv` applies it."""
  if module.mask is None:
    return kernel
  if module.mask.shape != kernel.shape:
    raise ValueError(f"`mask` must have the kernel's shape {kernel.shape}, "
                     f"got {module.mask.shape}")
  return kernel * module.mask
