"""Flax Linen layers on simulated crossbars (RxNN VI).

This module owns how Linen layers run on a chip:

* `CrossbarDense`, `CrossbarConv`: drop-in `nn.Dense` / `nn.Conv` (same
  parameters, same names) with a `spec` field: None runs them digitally.
* `on_crossbars(spec)`: runs any existing Linen model built from `nn.Dense`
  and `nn.Conv` on crossbars without rewriting it (a Flax method
  interceptor). Everything else (activations, pooling, normalization)
  stays digital; layers with a kernel that are neither (`nn.DenseGeneral`,
  `nn.Einsum`, `nn.ConvTranspose`, `nn.ConvLocal`) warn that they do.
* `mode_spec`: the three modes from the same parameters: "digital"
  (floating point), "ideal" (converter and device precision only: RxNN's
  Cross-ideal, `Spec.cross_ideal`), "nonideal" (everything on).
* `program`, `apply`: program every layer's chip once (exact `G_eff`, all
  layers' tiles in one batched solve, calibration on a calibration batch),
  then read; `apply(refresh=True)` reprograms new weights with the stored
  distortion, `apply(program_key=k)` programs exactly during the forward
  pass itself (TxSim's exact FCM step). With `Spec.gain_correction =
  "column"` programming also fits each layer's per-column digital output
  gain (`crossbar.column_gain`, on the calibration batch as it flows
  through the layers already on chips); a refresh keeps the fitted gains,
  like the rest of the calibration. The programmed chips live in the Flax
  variable collection "chips" and are reused across batches; `jax.vmap`
  over keys programs many chip instances at once.

A convolution is its patches times the crossbar: the kernel `[*k, c_in / G,
F]` becomes G matrices `[c_in / G * prod(k), F / G]` (rows in the order of
`lax.conv_general_dilated_patches`: channel, then kernel position), each
programmed on its own tiles. When the read is linear (`Spec.linear`: full
precision converters, no read noise) a layer's chip folds into one
effective weight matrix and the layer runs as a native matmul or
convolution of the clipped input with it, bit-for-bit the chip's read up to
float rounding; otherwise the patches go through `crossbar.crossbar_matmul`.

Gradients: w.r.t. the weights, the ideal ones (`x.T @ dy`); w.r.t. the
inputs, `spec.backward` ("straight_through": floating point, RxNN
re-training; "transposed_read": through the chip, TxSim).

It does not own the read (`crossbar.py`) or what to do with the layers
(`experiment.py`).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import itertools
import math
import warnings
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rxjax import crossbar
from rxjax import finite

Spec = crossbar.Spec
MODES = ("digital", "ideal", "nonideal")
COLLECTION = "chips"  # Flax variable collection of the programmed chips.
RNG = "chip"  # Flax RNG stream whose presence (re)programs chips exactly.


def mode_spec(mode: str, spec: Spec | None = None) -> Spec | None:
  """The spec a mode runs with: None (digital), cross-ideal or the chip.

  Args:
    mode: "digital", "ideal" (RxNN's Cross-ideal: precision only) or
      "nonideal".
    spec: the chip; None is the papers' default `Spec()`.
  """
  if mode not in MODES:
    raise ValueError(f"`mode` must be one of {MODES}, got {mode!r}")
  if mode == "digital":
    return None
  spec = Spec() if spec is None else spec
  return spec.cross_ideal() if mode == "ideal" else spec


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


class _Conv:
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
    p = _patches(x, self)
    out_spatial = p.shape[1:-1]
    p = p.reshape(-1, self.groups, p.shape[-1] // self.groups)
    return jnp.moveaxis(p, 1, 0), out_spatial


def _explicit_pads(conv: _Conv, size):
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


def _taps(conv: _Conv, out, padded):
  """Per kernel position: its index and, per spatial dim, (start, stop)."""
  for pos in itertools.product(*(range(k) for k in conv.k)):
    yield pos, [(i * d, i * d + (n_out - 1) * s + 1) for i, n_out, s, d in
                zip(pos, out, conv.strides, conv.rhs_dilation)]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _patches(x, conv: _Conv):
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
  return _patches(x, conv), x.shape


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


_patches.defvjp(_patches_fwd, _patches_bwd)


# ---------------------------------------------------------------------------
# Chips of one layer: program, refresh or read from the "chips" collection.


def _per_group(fn, *args):
  """`fn` over the leading group axis; no vmap for one group."""
  if jax.tree.leaves(args)[0].shape[0] == 1:
    out = fn(*jax.tree.map(lambda a: a[0], args))
    return jax.tree.map(lambda a: a[None], out)
  return jax.vmap(fn)(*args)


def _group_keys(key, groups):
  return jnp.stack([jax.random.fold_in(key, g) for g in range(groups)])


class _Solves:
  """Programming a network with one batched circuit solve, in two passes.

  The first pass records every crossbar layer's mapped conductances (in
  call order) and runs the layers digitally (their outputs only carry the
  pass to the next layer). `solve` then solves all tiles together
  (`crossbar.solve_tiles`, grouped by spec), and the second pass hands each
  layer its own `G_eff`: one batch of all the network's tiles is faster
  than a solve per layer.
  """

  def __init__(self):
    self.mapped = []  # (spec, g [G, S, P, Tr, Tc, M, N]), in call order.
    self.solved = None
    self.taken = 0

  def layer(self, module: nn.Module, w, keys, spec: Spec):
    """This layer's `(g_eff, g_eff_bwd)` per group; None in the first
    pass (after recording the layer's conductances)."""
    if self.solved is None:
      g = _per_group(lambda w_g, k: crossbar.map_tiles(w_g, spec, key=k), w,
                     keys)
      self.mapped.append((spec, g))
      return None
    if self.taken >= len(self.solved):
      raise RuntimeError(
          f"layer {'/'.join(module.path)} was not seen in the first "
          "programming pass: the model's calls must not depend on the chips")
    self.taken += 1
    return self.solved[self.taken - 1]

  def solve(self):
    groups = {}
    for i, (spec, _) in enumerate(self.mapped):
      groups.setdefault(spec, []).append(i)
    self.solved = [None] * len(self.mapped)
    for spec, idx in groups.items():
      gs = [self.mapped[i][1] for i in idx]
      for i, solved in zip(idx, crossbar.solve_tiles(gs, spec)):
        self.solved[i] = solved


_SOLVES = contextvars.ContextVar("rxjax_nn_solves", default=None)


def _apply_programming(model, variables, x, spec: Spec, key, rngs, mutable,
                       apply_kwargs):
  """`model.apply` that programs every crossbar layer exactly on its way
  (one batched solve for the whole network, see `_Solves`)."""
  solves = _Solves()
  token = _SOLVES.set(solves)
  rngs = {**rngs, RNG: key}
  mutable = list(mutable) + [COLLECTION]
  try:
    with on_crossbars(spec):
      model.apply(variables, x, rngs=rngs, mutable=mutable, **apply_kwargs)
      solves.solve()
      return model.apply(variables, x, rngs=rngs, mutable=mutable,
                         **apply_kwargs)
  finally:
    _SOLVES.reset(token)


def _layer_chips(module: nn.Module, w, x_fn, spec: Spec):
  """The layer's chips `[G, ...]`, programmed, refreshed or stored.

  With the "chips" collection mutable and a "chip" RNG: programs `w` (`[G,
  K, F]`) exactly on a new chip instance and calibrates it on `x_fn()` (`[G,
  R, K]`, this layer's inputs); in the first pass of `_Solves` it only
  records the mapping and returns `(None, None, None)`: the caller then
  runs the layer digitally. Mutable without the RNG: `reprogram`s the
  current weights with the stored distortion (cheap; calibration kept).
  Otherwise: the stored chips.
  """
  mutable = module.is_mutable_collection(COLLECTION)
  stored = module.has_variable(COLLECTION, "chip")
  w = jax.lax.stop_gradient(w)
  if mutable and module.has_rng(RNG):
    keys = _group_keys(module.make_rng(RNG), w.shape[0])
    solved = None  # Solved here, per layer.
    solves = _SOLVES.get()
    if solves is not None:
      solved = solves.layer(module, w, keys, spec)
      if solved is None:
        return None, None, None

    def one(w_g, x_g, key, solved_g):
      chip = crossbar.program(w_g, spec, key=key, solved=solved_g)
      chip = crossbar.calibrate(chip, x_g, spec)
      return chip, _fit_gain(chip, w_g, x_g, spec, key)

    chips, gain = _per_group(one, w, jax.lax.stop_gradient(x_fn()), keys,
                             solved)
  elif mutable and stored:
    keys = module.get_variable(COLLECTION, "key")
    old = module.get_variable(COLLECTION, "chip")
    gain = module.get_variable(COLLECTION, "gain")  # Kept, as calibration.
    chips = _per_group(
        lambda c, w_g, k: crossbar.reprogram(c, w_g, spec, key=k), old, w,
        keys)
  elif stored:
    return (module.get_variable(COLLECTION, "chip"),
            module.get_variable(COLLECTION, "w_eff"),
            module.get_variable(COLLECTION, "w_eff_bwd"))
  else:
    raise ValueError(
        f"layer {'/'.join(module.path) or module.name} has no programmed "
        "chip: program the model first (rxjax.nn.program)")
  w_eff = w_bwd = None
  if spec.linear:
    w_eff = _per_group(lambda c: crossbar.fold(c, spec), chips)
    if spec.backward == "transposed_read":
      w_bwd = _per_group(lambda c: crossbar.fold(c, spec, "backward"), chips)
  module.put_variable(COLLECTION, "chip", chips)
  module.put_variable(COLLECTION, "key", keys)
  module.put_variable(COLLECTION, "w_eff", w_eff)
  module.put_variable(COLLECTION, "w_eff_bwd", w_bwd)
  module.put_variable(COLLECTION, "gain", gain)
  return chips, w_eff, w_bwd


def _fit_gain(chip, w, x, spec: Spec, key):
  """`[F]` per-column output gain (`spec.gain_correction`), or None: the
  least-squares fit of the calibrated chip's readings of the calibration
  inputs `x` (`[R, K]`) onto `x @ w` (`crossbar.column_gain`)."""
  if spec.gain_correction == "none":
    return None
  read_key = (jax.random.fold_in(key, 2) if spec.device.read_noise > 0
              else None)
  y = crossbar.read(x, chip, spec, key=read_key)
  return crossbar.column_gain(y, x @ w.astype(x.dtype))


def _gained(module: nn.Module, y, groups: int = 1):
  """The layer's output `[..., F]` times its stored gain (if any)."""
  if not module.has_variable(COLLECTION, "gain"):
    return y
  gain = module.get_variable(COLLECTION, "gain")
  if gain is None:
    return y
  return y * jax.lax.stop_gradient(gain).reshape(-1).astype(y.dtype)


def _read_key(module: nn.Module, spec: Spec):
  return module.make_rng("read") if spec.device.read_noise > 0 else None


def _clipped(op):
  """`(x, w, lo, hi) -> op(clip(x, lo, hi), w)`: a folded layer's read."""
  return lambda x, w, lo, hi: op(jnp.clip(x, lo, hi), w)


def _chipwise(op):
  """`(x, w, lo, hi) -> op(clip(x, lo, hi), w)` (a convolution) whose
  `jax.vmap` over chip instances runs native convolutions.

  Under `jax.vmap` over chips, the clip range and the kernel carry the chip
  axis, so the clipped input does too, and a convolution whose input and
  kernel are both batched becomes one grouped convolution, which XLA's CPU
  backend runs several times slower than the same convolutions one by one.
  Here that case runs as a `lax.map` over the
  chip axis, each step clipping the (shared or own) input and running one
  native convolution. Not differentiable by itself: `_folded` differentiates
  the plain convolution.
  """

  plain = _clipped(op)
  f = jax.custom_batching.custom_vmap(plain)

  @f.def_vmap
  def rule(axis_size, in_batched, x, w, lo, hi):
    if not any(in_batched[1:]):
      # Inputs alone are batched: they fold into the convolution's batch.
      return jax.vmap(plain, in_axes=(0, None, None, None))(x, w, lo, hi), True
    chip = lambda a, b: a if b else jnp.broadcast_to(a, (axis_size,) + a.shape)
    rest = tuple(chip(a, b) for a, b in zip((w, lo, hi), in_batched[1:]))
    if in_batched[0]:
      return jax.lax.map(lambda a: f(*a), (x,) + rest), True
    return jax.lax.map(lambda a: f(x, *a), rest), True

  return f


def _folded(op, x, w, w_eff, w_bwd, lo, hi, read=None):
  """`op(clip(x, lo, hi), w_eff)` with the crossbar's gradients.

  `op(x, w)` is bilinear (a matmul or a convolution). Gradients: w.r.t. w
  the ideal ones at `(x, w)`; w.r.t. x straight-through with `w`, or with
  the folded transposed read `w_bwd` when given. `read(x, w_eff, lo, hi)`
  (default `_clipped(op)`) computes the forward value: the same product with
  its own vmap rule (`_chipwise`).
  """
  read = _clipped(op) if read is None else read

  @jax.custom_vjp
  def f(x, w):
    return read(x, w_eff, lo, hi)

  def fwd(x, w):
    return f(x, w), (x, w)

  def bwd(res, dy):
    x, w = res
    _, vjp = jax.vjp(op, x, w)
    dx, dw = vjp(dy)
    if w_bwd is not None:
      dx = jax.vjp(lambda x: op(x, w_bwd), x)[1](dy)[0]
    return dx, dw

  f.defvjp(fwd, bwd)
  return f(x, w)


def _clip_range(chips, spec: Spec, channels: int):
  """Per-channel input range `[channels]` (each group its own scale)."""
  hi = jnp.repeat(chips.x_scale, channels // chips.x_scale.shape[0])
  lo = jnp.zeros_like(hi) if spec.inputs == "non_negative" else -hi
  return lo, hi


# ---------------------------------------------------------------------------
# The two layer computations, shared by the modules and the interceptor.


def dense_on_chip(module: nn.Module, x, kernel, spec: Spec | None):
  """`x @ kernel` (no bias) of a Dense layer, on its chip when spec is set."""
  x = jnp.asarray(x)
  if spec is None:
    return x @ kernel.astype(x.dtype)
  batch = x.shape[:-1]
  x2 = x.reshape(-1, x.shape[-1])
  chips, w_eff, w_bwd = _layer_chips(module, kernel[None], lambda: x2[None],
                                     spec)
  if chips is None:  # First pass of `_Solves`.
    y = x2 @ kernel.astype(x.dtype)
  elif spec.linear:
    lo, hi = _clip_range(chips, spec, 1)
    bwd = None if w_bwd is None else w_bwd[0].T
    y = _folded(jnp.matmul, x2, kernel.astype(x.dtype),
                w_eff[0].astype(x.dtype), bwd, lo, hi)
  else:
    chip = jax.tree.map(lambda a: a[0], chips)
    y = crossbar.crossbar_matmul(x2, kernel, chip, _read_key(module, spec),
                                 spec).astype(x.dtype)
  if chips is not None:
    y = _gained(module, y)
  return y.reshape(batch + (y.shape[-1],))


def conv_on_chip(module: nn.Module, x, kernel, conv: _Conv,
                 spec: Spec | None):
  """The convolution (no bias) of a Conv layer, on its chips when set.

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
  if spec is None:
    y = conv(x, kernel)
  else:
    w = kernel_to_matrix(kernel, conv.groups)
    cached = {}

    def patches():
      if "p" not in cached:
        cached["p"] = conv.patches(x)
      return cached["p"][0]

    chips, w_eff, w_bwd = _layer_chips(module, w, patches, spec)
    if chips is None:  # First pass of `_Solves`.
      y = conv(x, kernel)
    elif spec.linear:
      lo, hi = _clip_range(chips, spec, x.shape[-1])
      k_eff = matrix_to_kernel(w_eff, conv.k).astype(x.dtype)
      k_bwd = None
      if w_bwd is not None:
        k_bwd = matrix_to_kernel(jnp.swapaxes(w_bwd, 1, 2),
                                 conv.k).astype(x.dtype)
      y = _folded(conv, x, kernel.astype(x.dtype), k_eff, k_bwd, lo, hi,
                  read=_chipwise(conv))
    else:
      p, out_spatial = conv.patches(x)
      key = _read_key(module, spec)
      keys = None if key is None else _group_keys(key, conv.groups)
      read = lambda p_g, w_g, c, k: crossbar.crossbar_matmul(
          p_g, w_g, c, k, spec)
      if keys is None:
        y = _per_group(lambda p_g, w_g, c: read(p_g, w_g, c, None), p, w,
                       chips)
      else:
        y = _per_group(read, p, w, chips, keys)
      y = jnp.moveaxis(y, 0, 1).reshape(
          (x.shape[0],) + out_spatial + (kernel.shape[-1],)).astype(x.dtype)
    if chips is not None:
      y = _gained(module, y)
  return y.reshape(batch + y.shape[1:])


# ---------------------------------------------------------------------------
# Modules.


class CrossbarDense(nn.Dense):
  """`nn.Dense` on a crossbar chip (`spec`; None: digital).

  Same parameters as `nn.Dense` ("kernel" `[fan_in, features]`, "bias"), so
  checkpoints move between the two.
  """

  spec: Spec | None = None

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

  spec: Spec | None = None

  @nn.compact
  def __call__(self, inputs):
    conv = _geometry(self)
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
    kernel = _masked(self, kernel)
    y = conv_on_chip(self, inputs, kernel, conv, self.spec)
    if self.use_bias:
      bias = self.param("bias", self.bias_init, (self.features,),
                        self.param_dtype)
      y = y + bias.astype(y.dtype)
    return y


def _masked(module: nn.Conv, kernel):
  """The kernel times `module.mask`, as `nn.Conv` applies it."""
  if module.mask is None:
    return kernel
  if module.mask.shape != kernel.shape:
    raise ValueError(f"`mask` must have the kernel's shape {kernel.shape}, "
                     f"got {module.mask.shape}")
  return kernel * module.mask


def _geometry(module: nn.Conv) -> _Conv:
  k = module.kernel_size
  k = (k,) if isinstance(k, int) else tuple(k)
  return _Conv(k, module.strides, module.padding, module.input_dilation,
               module.kernel_dilation, module.feature_group_count)


# ---------------------------------------------------------------------------
# Any Linen model on crossbars.


_WARNED_DIGITAL = set()  # Layer classes already reported as digital.


def _warn_digital(module: nn.Module):
  """Warns once per class that a layer with weights stays digital."""
  name = type(module).__name__
  if name not in _WARNED_DIGITAL:
    _WARNED_DIGITAL.add(name)
    warnings.warn(
        f"{name} layers (first: {'/'.join(module.path) or name}) have a "
        "kernel but run digitally: on_crossbars maps nn.Dense and nn.Conv "
        "(and their subclasses) onto crossbars", stacklevel=4)


def _interceptor(spec: Spec | None):
  def intercept(next_fun, args, kwargs, context):
    module = context.module
    if (context.method_name != "__call__"
        or isinstance(module, (CrossbarDense, CrossbarConv))
        or not module.has_variable("params", "kernel")):
      return next_fun(*args, **kwargs)  # Init, or a layer without weights.
    if not isinstance(module, (nn.Dense, nn.Conv)):
      _warn_digital(module)
      return next_fun(*args, **kwargs)
    (x,) = args
    kernel = module.get_variable("params", "kernel")
    if isinstance(module, nn.Dense):
      y = dense_on_chip(module, x, kernel, spec)
    else:
      y = conv_on_chip(module, x, _masked(module, kernel), _geometry(module),
                       spec)
    if module.use_bias:
      y = y + module.get_variable("params", "bias").astype(y.dtype)
    return y

  return intercept


@contextlib.contextmanager
def on_crossbars(spec: Spec | None):
  """Runs every `nn.Dense` and `nn.Conv` called inside on crossbars.

  `CrossbarDense` / `CrossbarConv` keep their own `spec`. With spec None the
  layers run digitally (the context is then a no-op).

  Example:
    >>> with rxjax.nn.on_crossbars(spec):
    ...   logits = model.apply(variables, x)
  """
  if spec is None:
    yield
    return
  with nn.intercept_methods(_interceptor(spec)):
    yield


def program(model: nn.Module, variables, x, spec: Spec | None, *, key,
            **apply_kwargs) -> dict[str, Any]:
  """Programs every crossbar layer of `model` on one chip instance.

  Each layer's weights are mapped, varied (one key = one chip) and solved
  for their exact `G_eff` (all layers' tiles in one batched solve); its
  input scale and ADC range are calibrated on the activations that reach it
  when `x` flows through the network already on crossbars. jit- and
  vmap-compatible (vmap over `key` for many chips). Its first pass (see
  `_Solves`) only maps the weights and runs the layers digitally.

  Args:
    model: a Linen model (plain `nn.Dense` / `nn.Conv` layers are run via
      `on_crossbars`).
    variables: its variables ("params", "batch_stats", ...), without chips.
    x: calibration batch, the model's input.
    spec: the chip (None: digital; returns an empty collection).
    key: PRNG key of the chip instance.
    **apply_kwargs: passed to `model.apply` (e.g. `train=False`).

  Returns:
    The "chips" collection, to pass to `apply`. Under jit, a non-finite
    weight or calibration input makes every array of every chip NaN (so
    every read is NaN; `rxjax.finite.status(chips)` tells).

  Raises:
    ValueError: a weight or a calibration input is NaN or inf (outside
      jit); the message names the variable.
  """
  if spec is None:
    return {}
  variables = {k: v for k, v in variables.items() if k != COLLECTION}
  ok = finite.all_true(finite.check("variables", variables),
                       finite.check("x", x, "calibration batch"))
  _, state = _apply_programming(model, variables, x, spec, key, {}, [],
                                apply_kwargs)
  return finite.poison(state[COLLECTION], ok)


def apply(model: nn.Module, variables, chips, x, spec: Spec | None, *,
          key=None, refresh: bool = False, program_key=None, mutable=False,
          **apply_kwargs):
  """`model.apply` with its crossbar layers read from programmed chips.

  Args:
    model, variables: as for `model.apply`.
    chips: the collection returned by `program` (ignored when spec is None
      or with `program_key`).
    x: the model's input.
    spec: the spec the chips were programmed with; None runs digitally.
    key: PRNG key for read noise (`spec.device.read_noise > 0`).
    refresh: reprogram the current `variables["params"]` onto the chips with
      their stored distortion first (`crossbar.reprogram`; re-training
      between exact programmings). Returns `(output, state)` then.
    program_key: program the current weights exactly during this call
      instead (chip instance `program_key`, as `program` does, calibrated on
      `x` as it flows): one pass instead of `program` and then `apply`.
      Returns `(output, state)` then.
    mutable: other collections to update (e.g. ["batch_stats"]).
    **apply_kwargs: passed to `model.apply`.

  Returns:
    The model's output; with `refresh`, `program_key` or `mutable`,
    `(output, state)` with the updated collections (the new chips under
    "chips").
  """
  variables = {k: v for k, v in variables.items() if k != COLLECTION}
  rngs = {} if key is None else {"read": key}
  mutable = list(mutable) if mutable else []
  if spec is not None and program_key is not None:
    return _apply_programming(model, variables, x, spec, program_key, rngs,
                              mutable, apply_kwargs)
  if spec is not None:
    variables[COLLECTION] = chips
  if refresh and spec is not None:
    mutable.append(COLLECTION)
  with on_crossbars(spec):
    return model.apply(variables, x, rngs=rngs, mutable=mutable or False,
                       **apply_kwargs)
