"""Layer shapes: kernels as crossbar matrices, convolution geometry and the
patches a convolution reads (with their hand-written adjoint)."""

from __future__ import annotations

import functools
import itertools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

# ---------------------------------------------------------------------------
# Layer shapes: kernels as crossbar matrices, padding.


def _tuple(value, n: int, name: str) -> tuple[int, ...]:
  if value is None:
    return (1,) * n
  if isinstance(value, int):
    return (value,) * n
  value = tuple(value)
  if len(value) != n:
    raise ValueError(f"`{name}` must have {n} entries, got {value}")
  return value


# Flax's padding modes that pad the input itself (then convolve 'VALID').
_INPUT_PADDING = ("CIRCULAR", "REFLECT", "CAUSAL")


def _padding(padding, n: int):
  if isinstance(padding, str):
    if padding in _INPUT_PADDING:
      return padding
    if padding.upper() in ("SAME", "SAME_LOWER", "VALID"):
      return padding.upper()
    raise ValueError(
        f"`padding` must be 'SAME', 'SAME_LOWER', 'VALID', one of "
        f"{_INPUT_PADDING} (as Flax spells them), an int or {n} ints or "
        f"(low, high) pairs; got {padding!r}")
  # Sizes: Flax's own rules and error; a tuple, hashable like the rest.
  return tuple(map(tuple, nn.linear.canonicalize_padding(padding, n)))


def kernel_to_matrix(kernel, groups: int = 1) -> jax.Array:
  """`[*k, c_in / G, F]` conv kernel -> `[G, c_in / G * prod(k), F / G]`."""
  *k, c_g, f = kernel.shape
  nd = len(k)
  w = kernel.reshape(*k, c_g, groups, f // groups)
  w = jnp.transpose(w, (nd + 1, nd) + tuple(range(nd)) + (nd + 2,))
  return w.reshape(groups, c_g * math.prod(k), f // groups)


def matrix_to_kernel(w, kernel_size) -> jax.Array:
  """Inverse of `kernel_to_matrix`: `[G, c_g * prod(k), F / G]` -> kernel."""
  groups, rows, f_g = w.shape
  nd = len(kernel_size)
  c_g = rows // math.prod(kernel_size)
  w = w.reshape(groups, c_g, *kernel_size, f_g)
  w = jnp.transpose(w, tuple(range(2, 2 + nd)) + (1, 0, nd + 2))
  return w.reshape(*kernel_size, c_g, groups * f_g)


class ConvGeometry:
  """The static geometry of one convolution (channels last)."""

  def __init__(self, kernel_size, strides, padding, input_dilation,
               kernel_dilation, groups):
    self.k = tuple(kernel_size)
    nd = len(self.k)
    self.nd = nd
    self.strides = _tuple(strides, nd, "strides")
    self.padding = _padding(padding, nd)
    self.lhs_dilation = _tuple(input_dilation, nd, "input_dilation")
    self.rhs_dilation = _tuple(kernel_dilation, nd, "kernel_dilation")
    self.groups = groups
    self.input_padding = None
    if self.padding in _INPUT_PADDING:
      if self.padding == "CAUSAL" and nd != 1:
        raise ValueError("'CAUSAL' padding is only implemented for 1-D "
                         f"convolutions (as in Flax); got {nd} spatial dims")
      self.input_padding, self.padding = self.padding, "VALID"

  def pad_input(self, x):
    """`[B, *s, C]` padded as Flax's 'CIRCULAR' (wrap), 'REFLECT' or
    'CAUSAL' (zeros on the left) padding does; others: unchanged."""
    if self.input_padding is None:
      return x
    if self.input_padding == "CAUSAL":
      pads = [(self.rhs_dilation[0] * (self.k[0] - 1), 0)]
    else:
      window = [(k - 1) * d + 1 for k, d in zip(self.k, self.rhs_dilation)]
      pads = [((w - 1) // 2, w // 2) for w in window]
    mode = {"CIRCULAR": "wrap", "REFLECT": "reflect", "CAUSAL": "constant"}
    return jnp.pad(x, [(0, 0)] + pads + [(0, 0)],
                   mode=mode[self.input_padding])

  def dims(self):
    """Channels last, any number of spatial dims (as Flax's `nn.Conv`)."""
    nd = self.nd
    lhs = (0, nd + 1) + tuple(range(1, nd + 1))
    rhs = (nd + 1, nd) + tuple(range(nd))
    return jax.lax.ConvDimensionNumbers(lhs, rhs, lhs)

  def __call__(self, x, kernel):
    """The digital convolution `[B, *s, C] x [*k, C / G, F]`."""
    return jax.lax.conv_general_dilated(
        x, kernel.astype(x.dtype), self.strides, self.padding,
        lhs_dilation=self.lhs_dilation, rhs_dilation=self.rhs_dilation,
        dimension_numbers=self.dims(), feature_group_count=self.groups)

  def patches(self, x):
    """`[B, *s, C]` -> `[G, B * prod(s'), C / G * prod(k)]` and `s'`."""
    p = patches(x, self)
    out_spatial = p.shape[1:-1]
    p = p.reshape(-1, self.groups, p.shape[-1] // self.groups)
    return jnp.moveaxis(p, 1, 0), out_spatial


def _explicit_pads(conv: ConvGeometry, size):
  """Explicit pads, the padded (dilated) input extent and the output extent,
  per spatial dim, as `lax.conv_general_dilated` resolves them."""
  dilated = [(n - 1) * d + 1 for n, d in zip(size, conv.lhs_dilation)]
  window = [(k - 1) * d + 1 for k, d in zip(conv.k, conv.rhs_dilation)]
  pads = conv.padding
  if isinstance(pads, str):
    pads = jax.lax.padtype_to_pads(dilated, window, conv.strides, pads)
  padded = [n + lo + hi for n, (lo, hi) in zip(dilated, pads)]
  out = [(n - w) // s + 1 for n, w, s in zip(padded, window, conv.strides)]
  return pads, padded, out


def _taps(conv: ConvGeometry, out, padded):
  """Per kernel position: its index and, per spatial dim, (start, stop)."""
  for pos in itertools.product(*(range(k) for k in conv.k)):
    yield pos, [(i * d, i * d + (n_out - 1) * s + 1) for i, n_out, s, d in
                zip(pos, out, conv.strides, conv.rhs_dilation)]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def patches(x, conv: ConvGeometry):
  """Patches of `[B, *s, C]`: `[B, *s', C * prod(k)]`, features ordered
  channel first, then kernel position (as `lax.conv_general_dilated_patches`
  orders them).

  Gathered as `prod(k)` strided slices of the padded input, channels last
  throughout. XLA's CPU backend runs `conv_general_dilated_patches` as a
  dense convolution with a one-hot filter, which costs as many flops as a
  convolution with `c * prod(k)` output channels, and its channels-first
  layout would cost two more transposes of the patches.
  """
  b, *size, c = x.shape
  pads, padded, out = _explicit_pads(conv, size)
  # Dilate and pad (negative pads crop) in one lax.pad.
  config = [(0, 0, 0)] + [(lo, hi, d - 1) for (lo, hi), d in
                          zip(pads, conv.lhs_dilation)] + [(0, 0, 0)]
  xp = jax.lax.pad(x, jnp.zeros((), x.dtype), config)
  taps = [jax.lax.slice(xp, (0,) + tuple(a for a, _ in span) + (0,),
                        (b,) + tuple(z for _, z in span) + (c,),
                        (1,) + tuple(conv.strides) + (1,))
          for _, span in _taps(conv, out, padded)]
  return jnp.stack(taps, axis=-1).reshape(b, *out, c * len(taps))


def _patches_fwd(x, conv):
  return patches(x, conv), x.shape


def _patches_bwd(conv, shape, dp):
  """The adjoint of patch extraction: every kernel position's slice of the
  patch gradient added back where it was taken from.

  Autodiff would transpose a `conv_general_dilated_patches` as a grouped
  convolution with a one-hot filter, which XLA's CPU backend runs as a dense
  one, many times the cost of the digital convolution's whole gradient.
  Here it is `prod(k)` strided pads and adds, O(prod(k) * |x|).
  """
  b, *size, c = shape
  pads, padded, out = _explicit_pads(conv, size)
  dp = dp.reshape(b, *out, c, math.prod(conv.k))
  total = jnp.zeros((b, *padded, c), dp.dtype)
  for t, (_, span) in enumerate(_taps(conv, out, padded)):
    config = [(0, 0, 0)] + [
        (start, n_pad - stop, s - 1)
        for (start, stop), n_pad, s in zip(span, padded, conv.strides)
    ] + [(0, 0, 0)]
    total = total + jax.lax.pad(dp[..., t], jnp.zeros((), dp.dtype), config)
  # Undo the padding (crop; negative padding extends) and the dilation.
  crop = [(0, 0, 0)] + [(-lo, -hi, 0) for lo, hi in pads] + [(0, 0, 0)]
  dx = jax.lax.pad(total, jnp.zeros((), dp.dtype), crop)
  dx = dx[(slice(None),) + tuple(
      slice(None, None, d) for d in conv.lhs_dilation)]
  return (dx,)


patches.defvjp(_patches_fwd, _patches_bwd)


def conv_geometry(module: nn.Conv) -> ConvGeometry:
  """The geometry of an `nn.Conv` module's convolution."""
  k = module.kernel_size
  k = (k,) if isinstance(k, int) else tuple(k)
  return ConvGeometry(k, module.strides, module.padding, module.input_dilation,
               module.kernel_dilation, module.feature_group_count)
