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
  Cross-ideal, `ChipSpec.cross_ideal`), "nonideal" (everything on).
* `program`: programs every layer's chip once, on one pure path: params ->
  every layer's mapped and varied conductances (`crossbar.write`, in one
  pass of the model) -> all tiles of all layers solved in one batch
  (`crossbar.solve`, its tile axis sharded over a mesh when given one) ->
  per-layer `Chip` pytrees -> one calibration pass -> the chips, in the Flax
  variable collection "chips". `jax.vmap` over keys programs many chip
  instances at once.
* `apply`: reads them (reused across batches); `apply(refresh=True)`
  reprograms new weights with the stored distortion, `apply(program_key=k)`
  runs `program`'s path with the calibration pass as the forward pass
  itself (TxSim's exact FCM step).
  With `ChipSpec.gain_correction = "column"` the calibration pass also fits
  each layer's per-column digital output gain (`crossbar.column_gain`, on
  the calibration batch as it flows through the layers already on chips);
  a refresh keeps the fitted gains, like the rest of the calibration.
  With `ChipSpec.adc_range = "fitted"` it first picks each layer's ADC full
  scale by the error of its readings against the ideal products.

A convolution is its patches times the crossbar: the kernel `[*k, c_in / G,
F]` becomes G matrices `[c_in / G * prod(k), F / G]` (rows in the order of
`lax.conv_general_dilated_patches`: channel, then kernel position), each
programmed on its own tiles. When the read is linear (`ChipSpec.linear`: full
precision converters, no read noise) a layer's chip folds into one
effective weight matrix and the layer runs as a native matmul or
convolution of the clipped input with it, bit-for-bit the chip's read up to
float rounding; otherwise the patches go through `crossbar.crossbar_matmul`.

Gradients: w.r.t. the weights, the ideal ones (`x.T @ dy`); w.r.t. the
inputs, `spec.backward` ("straight_through": floating point, RxNN
re-training; "transposed_read": through the chip, TxSim). `apply(backward=
"circuit")` instead differentiates through the exact `G_eff` of the current
weights and the mapping, converters straight-through (`circuit_grad`).

It does not own the read (`crossbar.py`) or what to do with the layers
(`rxjax.experiment`).
"""

from __future__ import annotations

import functools
import itertools
import math
import warnings
from typing import Any

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from rxjax import circuit_grad
from rxjax import crossbar
from rxjax import finite

ChipSpec = crossbar.ChipSpec
MODES = ("digital", "ideal", "nonideal")
COLLECTION = "chips"  # Flax variable collection of the programmed chips.
RNG = "chip"  # Flax RNG stream whose presence (re)programs chips exactly.


def mode_spec(mode: str, spec: ChipSpec | None = None) -> ChipSpec | None:
  """The spec a mode runs with: None (digital), cross-ideal or the chip.

  Args:
    mode: "digital", "ideal" (RxNN's Cross-ideal: precision only) or
      "nonideal".
    spec: the chip; None is the papers' default `ChipSpec()`.
  """
  if mode not in MODES:
    raise ValueError(f"`mode` must be one of {MODES}, got {mode!r}")
  if mode == "digital":
    return None
  spec = ChipSpec() if spec is None else spec
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
# Programming a network: write every layer, solve all tiles, calibrate.
#
# A layer's chips live in the Flax variable collection "chips" (one entry per
# layer: the `Chip` pytree with a leading conv-group axis, the chip keys and,
# for linear reads, the folded matrices). What a layer does with them is the
# `stage` of the pass it runs in, chosen by the caller (`program`, `apply`):
#
#   "write"      map and vary the current weights on a new chip instance
#                (`crossbar.write`, key from the "chip" RNG); run digitally
#   "calibrate"  calibrate the stored, solved chips on the layer's inputs as
#                they flow through the network on crossbars; read them
#   "refresh"    reprogram the current weights with the stored distortion
#                (`crossbar.reprogram`); read
#   "read"       read the stored chips
#   "circuit"    the current weights on the stored chips, `G_eff` solved
#                exactly, differentiable in the weights (`circuit_grad`);
#                read, with the gradient of the linear read through `W_eff`
#   "circuit_interpolated"  the same with the stored distortion
#
# Between the "write" and the "calibrate" pass, `_solve_written` solves the
# tiles of every layer in one `crossbar.solve`.

STAGES = ("write", "calibrate", "refresh", "read") + tuple(
    circuit_grad.STAGES.values())


def _per_group(fn, *args):
  """`fn` over the leading group axis; no vmap for one group."""
  if jax.tree.leaves(args)[0].shape[0] == 1:
    out = fn(*jax.tree.map(lambda a: a[0], args))
    return jax.tree.map(lambda a: a[None], out)
  return jax.vmap(fn)(*args)


def _group_keys(key, groups):
  return jnp.stack([jax.random.fold_in(key, g) for g in range(groups)])


@flax.struct.dataclass
class _Written:
  """A layer's chips `[G, ...]` as written (`crossbar.write`), not yet
  solved, with the spec to solve them with (static)."""

  chips: crossbar.Chip
  spec: ChipSpec = flax.struct.field(pytree_node=False)


def _solve_written(collection, mesh):
  """The "chips" collection after a "write" pass, every `_Written` entry
  solved: all layers' tiles in one `crossbar.solve` (one per distinct spec).

  LeNet-5's 48 tiles of 64 x 64 solve faster in one batch than layer by
  layer, and the batch is what a mesh shards.
  """
  is_written = lambda a: isinstance(a, _Written)
  leaves, treedef = jax.tree.flatten(collection, is_leaf=is_written)
  by_spec = {}
  for i, leaf in enumerate(leaves):
    if is_written(leaf):
      by_spec.setdefault(leaf.spec, []).append(i)
  for spec, idx in by_spec.items():
    solved = crossbar.solve([leaves[i].chips for i in idx], spec, mesh=mesh)
    for i, chips in zip(idx, solved):
      leaves[i] = chips
  return jax.tree.unflatten(treedef, leaves)


def _layer_chips(module: nn.Module, w, x_fn, spec: ChipSpec, stage: str):
  """The layer's chips `[G, ...]` at `stage` (see above), and their folded
  matrices.

  Args:
    module: the layer.
    w: `[G, K, F]` its weights as crossbar matrices.
    x_fn: `() -> [G, R, K]` the layer's inputs (called only to calibrate).
    spec: the layer's chip.
    stage: "write", "calibrate", "refresh" or "read".

  Returns:
    None at "write" (the layer then runs digitally: its output only carries
    the pass to the next layer); otherwise `(chips, w_eff, w_eff_bwd)`, the
    folded matrices `[G, K, F]` / `[G, F, K]` (`crossbar.fold`) when
    `spec.linear` (the backward one with the transposed read), else None.
    At the circuit stages `w_eff` is always there, with its converters
    straight-through (`circuit_grad.fold`), and carries `w`'s gradient.
  """
  w_live = w
  w = jax.lax.stop_gradient(w)
  if stage == "write":
    keys = _group_keys(module.make_rng(RNG), w.shape[0])
    chips = _per_group(lambda w_g, k: crossbar.write(w_g, spec, key=k), w,
                       keys)
    module.put_variable(COLLECTION, "chip", _Written(chips, spec))
    module.put_variable(COLLECTION, "key", keys)
    return None
  if not module.has_variable(COLLECTION, "chip"):
    raise ValueError(
        f"layer {'/'.join(module.path) or module.name} has no programmed "
        "chip: program the model first (rxjax.nn.program)")
  chips = module.get_variable(COLLECTION, "chip")
  if stage == "read":
    return (chips, module.get_variable(COLLECTION, "w_eff"),
            module.get_variable(COLLECTION, "w_eff_bwd"))
  keys = module.get_variable(COLLECTION, "key")
  if stage in circuit_grad.STAGES.values():  # Nothing stored.
    chips = circuit_grad.program(w_live, chips, keys, spec,
                                 exact=stage == "circuit")
    return chips, circuit_grad.fold(chips, spec), None
  if stage == "calibrate":

    def one(c, x_g, w_g, key):
      c = _fit_adc_range(crossbar.calibrate(c, x_g, spec), w_g, x_g, spec,
                         key)
      return c, _fit_gain(c, w_g, x_g, spec, key)

    chips, gain = _per_group(one, chips, jax.lax.stop_gradient(x_fn()), w,
                             keys)
  else:  # "refresh"
    gain = module.get_variable(COLLECTION, "gain")  # Kept, as calibration.
    chips = _per_group(
        lambda c, w_g, k: crossbar.reprogram(c, w_g, spec, key=k), chips, w,
        keys)
  w_eff = w_bwd = None
  if spec.linear:
    w_eff = _per_group(lambda c: crossbar.fold(c, spec), chips)
    if spec.backward == "transposed_read":
      w_bwd = _per_group(lambda c: crossbar.fold(c, spec, "backward"), chips)
  module.put_variable(COLLECTION, "chip", chips)
  module.put_variable(COLLECTION, "w_eff", w_eff)
  module.put_variable(COLLECTION, "w_eff_bwd", w_bwd)
  module.put_variable(COLLECTION, "gain", gain)
  return chips, w_eff, w_bwd


def _fit_gain(chip, w, x, spec: ChipSpec, key):
  """`[F]` per-column output gain (`spec.gain_correction`), or None: the
  least-squares fit of the calibrated chip's readings of the calibration
  inputs `x` (`[R, K]`) onto `x @ w` (`crossbar.column_gain`)."""
  if spec.gain_correction == "none":
    return None
  read_key = (jax.random.fold_in(key, 2) if spec.device.read_noise > 0
              else None)
  y = crossbar.read(x, chip, spec, key=read_key)
  return crossbar.column_gain(y, x @ w.astype(x.dtype))


def _fit_adc_range(chip, w, x, spec: ChipSpec, key):
  """The calibrated chip with the ADC full scale `spec.adc_range` picks:
  unchanged for "calibrated" (or an ADC without quantization); for
  "fitted", of the calibrated full scale times each of
  `crossbar.ADC_RANGE_FACTORS`, the one whose readings of `x` (`[R, K]`),
  gain-corrected as `spec.gain_correction` fits them, have the least
  squared error against `x @ w` (ties: the larger full scale)."""
  if spec.adc_range == "calibrated" or spec.adc.bits is None:
    return chip
  ideal = x @ w.astype(x.dtype)
  read_key = (jax.random.fold_in(key, 3) if spec.device.read_noise > 0
              else None)
  errors = []
  for f in crossbar.ADC_RANGE_FACTORS:
    c = chip.replace(adc_full_scale=chip.adc_full_scale * f)
    y = crossbar.read(x, c, spec, key=read_key)
    if spec.gain_correction == "column":
      y = y * crossbar.column_gain(y, ideal)
    errors.append(jnp.sum((y - ideal) ** 2))
  factors = jnp.asarray(crossbar.ADC_RANGE_FACTORS, chip.adc_full_scale.dtype)
  best = factors[jnp.argmin(jnp.stack(errors))]
  return chip.replace(adc_full_scale=chip.adc_full_scale * best)


def _gained(module: nn.Module, y, groups: int = 1):
  """The layer's output `[..., F]` times its stored gain (if any)."""
  if not module.has_variable(COLLECTION, "gain"):
    return y
  gain = module.get_variable(COLLECTION, "gain")
  if gain is None:
    return y
  return y * jax.lax.stop_gradient(gain).reshape(-1).astype(y.dtype)


def _read_key(module: nn.Module, spec: ChipSpec):
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


def _clip_range(chips, spec: ChipSpec, channels: int):
  """Per-channel input range `[channels]` (each group its own scale)."""
  hi = jnp.repeat(chips.x_scale, channels // chips.x_scale.shape[0])
  lo = jnp.zeros_like(hi) if spec.inputs == "non_negative" else -hi
  return lo, hi


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
  layer = _layer_chips(module, kernel[None], lambda: x2[None], spec, stage)
  if layer is None:  # Written, not solved yet: digital.
    return x @ kernel.astype(x.dtype)
  chips, w_eff, w_bwd = layer
  if stage in circuit_grad.STAGES.values():
    lo, hi = _clip_range(chips, spec, 1)
    chip = jax.lax.stop_gradient(jax.tree.map(lambda a: a[0], chips))
    y = circuit_grad.straight_through(
        jnp.clip(x2, lo, hi) @ w_eff[0].astype(x.dtype),
        lambda: crossbar.read(jax.lax.stop_gradient(x2), chip, spec,
                              key=_read_key(module, spec)), spec)
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

    layer = _layer_chips(module, w, patches, spec, stage)
  if layer is None:  # Digital, or written and not solved yet.
    y = conv(x, kernel)
  else:
    chips, w_eff, w_bwd = layer
    y_lin = None
    if stage in circuit_grad.STAGES.values():
      lo, hi = _clip_range(chips, spec, x.shape[-1])
      y_lin = conv(jnp.clip(x, lo, hi),
                   matrix_to_kernel(w_eff, conv.k).astype(x.dtype))
      chips = jax.lax.stop_gradient(chips)
    if y_lin is not None and spec.linear:
      y = y_lin
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
      if y_lin is not None:
        y = circuit_grad.straight_through(y_lin, lambda: y, spec)
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


def _warn_digital(module: nn.Module):
  """Warns that a layer with weights stays digital.

  The text names the class only, so Python's warning registry shows it once
  per class (under the default filter) however many layers and passes."""
  name = type(module).__name__
  warnings.warn(
      f"{name} layers have a kernel but run digitally: on_crossbars maps "
      "nn.Dense and nn.Conv (and their subclasses) onto crossbars",
      stacklevel=2)


def _interceptor(spec: ChipSpec | None, stage: str):
  """Runs every `nn.Dense` / `nn.Conv` on its chip at `stage`: plain layers
  on `spec`, `CrossbarDense` / `CrossbarConv` on their own spec."""

  def intercept(next_fun, args, kwargs, context):
    module = context.module
    if (context.method_name != "__call__"
        or not module.has_variable("params", "kernel")):
      return next_fun(*args, **kwargs)  # Init, or a layer without weights.
    if isinstance(module, (CrossbarDense, CrossbarConv)):
      layer_spec = module.spec
    elif isinstance(module, (nn.Dense, nn.Conv)):
      layer_spec = spec
    else:
      if spec is not None:
        _warn_digital(module)
      return next_fun(*args, **kwargs)
    (x,) = args
    kernel = module.get_variable("params", "kernel")
    if isinstance(module, nn.Dense):
      y = dense_on_chip(module, x, kernel, layer_spec, stage)
    else:
      y = conv_on_chip(module, x, _masked(module, kernel), _geometry(module),
                       layer_spec, stage)
    if module.use_bias:
      y = y + module.get_variable("params", "bias").astype(y.dtype)
    return y

  return intercept


def on_crossbars(spec: ChipSpec | None, *, stage: str = "read"):
  """Runs every `nn.Dense` and `nn.Conv` called inside on crossbars.

  `CrossbarDense` / `CrossbarConv` keep their own `spec`. With spec None the
  plain layers run digitally.

  Args:
    spec: the chip of the plain layers.
    stage: what each layer does with its chips in the "chips" collection
      (`STAGES`): "read" (the default: read the programmed chips), or one of
      the stages of programming that `program` and `apply` run.

  Example:
    >>> with rxjax.nn.on_crossbars(spec):
    ...   logits = model.apply({**variables, "chips": chips}, x)
  """
  if stage not in STAGES:
    raise ValueError(f"`stage` must be one of {STAGES}, got {stage!r}")
  return nn.intercept_methods(_interceptor(spec, stage))


def _run(model, variables, x, spec, stage, rngs, mutable, apply_kwargs):
  with on_crossbars(spec, stage=stage):
    return model.apply(variables, x, rngs=rngs, mutable=mutable or False,
                       **apply_kwargs)


def _program_and_apply(model, variables, x, spec, key, mesh, rngs, mutable,
                       apply_kwargs):
  """The one path that programs a network, top to bottom.

  Returns `(output, state)` of the calibration pass: the model's output on
  the programmed chips and the collections, the chips under "chips".
  """
  rngs = {**rngs, RNG: key}
  mutable = list(mutable) + [COLLECTION]
  # 1. Every layer's weights mapped and varied (`crossbar.write`); the
  #    pass's activations are digital and unused (dead code under jit).
  _, written = _run(model, variables, x, spec, "write", rngs, mutable,
                    apply_kwargs)
  # 2. All tiles of all layers solved in one batch, sharded over `mesh`:
  #    per-layer `Chip` pytrees.
  chips = _solve_written(written.get(COLLECTION, {}), mesh)
  # 3. One calibration pass: each layer calibrates its chips on the
  #    activations that reach it on crossbars, then reads through them.
  return _run(model, {**variables, COLLECTION: chips}, x, spec, "calibrate",
              rngs, mutable, apply_kwargs)


def _without_chips(variables):
  return {k: v for k, v in variables.items() if k != COLLECTION}


def _explicit_context() -> bool:
  """Whether the current mesh (`jax.set_mesh`) has Explicit axes."""
  mesh = jax.sharding.get_abstract_mesh()
  return not mesh.empty and bool(mesh.explicit_axes)


def _auto(mesh):
  """`mesh` with every axis Auto (None stays None)."""
  if mesh is None or not mesh.explicit_axes:
    return mesh
  auto = (jax.sharding.AxisType.Auto,) * len(mesh.axis_names)
  return jax.sharding.Mesh(mesh.devices, mesh.axis_names, axis_types=auto)


def _batch_spec(x) -> jax.sharding.PartitionSpec:
  """The sharding of `x`'s leading (batch) axis, as a spec for outputs
  with that leading axis."""
  spec = jax.typeof(x).sharding.spec
  return jax.sharding.PartitionSpec(spec[0] if len(spec) else None)


def _on_auto_axes(fn, out_sharding, *args):
  """`fn(*args)` with the current Explicit mesh's axes turned Auto.

  The crossbar layers reshape batch-sharded activations into rows of tile
  inputs and scan over tile rows with accumulators that start unsharded;
  under Explicit axes (sharding in types) JAX asks for the output sharding
  of every such reshape and scan carry. Inside, placement is GSPMD's, as on
  an Auto mesh; the outputs come back as `out_sharding` says.
  """
  return jax.sharding.auto_axes(fn, out_sharding=out_sharding)(*args)


def program(model: nn.Module, variables, x, spec: ChipSpec | None, *, key,
            mesh=None, **apply_kwargs) -> dict[str, Any]:
  """Programs every crossbar layer of `model` on one chip instance.

  params -> every layer's mapped and varied conductances (`crossbar.write`,
  in one pass of the model whose activations are not used) -> all tiles of
  all layers solved in one batch (`crossbar.solve`) -> per-layer `Chip`
  pytrees -> one calibration pass (each layer's input scale and ADC range
  calibrated on the activations that reach it when `x` flows through the
  network already on crossbars) -> the chips. Pure, jit- and
  vmap-compatible (vmap over `key` for many chips).

  Args:
    model: a Linen model (plain `nn.Dense` / `nn.Conv` layers are run via
      `on_crossbars`).
    variables: its variables ("params", "batch_stats", ...), without chips.
    x: calibration batch, the model's input.
    spec: the chip of the plain layers (None: they stay digital; a model
      without `CrossbarDense` / `CrossbarConv` then gets no chips).
    key: PRNG key of the chip instance. Each layer's chips draw from a key
      derived from it and the layer's path in the model (Flax's
      `make_rng`), never from where the tiles are solved.
    mesh: optional `jax.sharding.Mesh`: the tile axis of the one batched
      solve is sharded over all its devices (`crossbar.solve`). None:
      placement follows the inputs.
    **apply_kwargs: passed to `model.apply` (e.g. `train=False`).

  Returns:
    The "chips" collection, to pass to `apply`. Under jit, a non-finite
    weight or calibration input makes every array of every chip NaN (so
    every read is NaN; `rxjax.finite.status(chips)` tells).

  Raises:
    ValueError: a weight or a calibration input is NaN or inf (outside
      jit); the message names the variable.
  """
  if _explicit_context():  # Chips replicated, as `solve` gathers them.
    return _on_auto_axes(
        lambda v, x, k: program(model, v, x, spec, key=k, mesh=_auto(mesh),
                                **apply_kwargs),
        jax.sharding.PartitionSpec(), variables, x, key)
  variables = _without_chips(variables)
  ok = finite.all_true(finite.check("variables", variables),
                       finite.check("x", x, "calibration batch"))
  _, state = _program_and_apply(model, variables, x, spec, key, mesh, {}, [],
                                apply_kwargs)
  return finite.poison(state.get(COLLECTION, {}), ok)


def apply(model: nn.Module, variables, chips, x, spec: ChipSpec | None, *,
          key=None, refresh: bool = False, program_key=None, mesh=None,
          backward: str = "straight_through", mutable=False,
          **apply_kwargs):
  """`model.apply` with its crossbar layers read from programmed chips.

  Args:
    model, variables: as for `model.apply`.
    chips: the collection returned by `program` (ignored with
      `program_key`).
    x: the model's input.
    spec: the spec the chips of the plain layers were programmed with; None
      runs them digitally.
    key: PRNG key for read noise (`spec.device.read_noise > 0`).
    refresh: reprogram the current `variables["params"]` onto the chips with
      their stored distortion first (`crossbar.reprogram`; re-training
      between exact programmings). Returns `(output, state)` then.
    program_key: program the current weights exactly during this call
      instead (chip instance `program_key`: `program`'s path, whose
      calibration pass is this call's forward pass). Returns `(output,
      state)` then.
    mesh: with `program_key`, the mesh that shares the solve (`program`).
    backward: the re-training gradient (`circuit_grad.BACKWARDS`):
      "straight_through" (the layers' own VJPs, `ChipSpec.backward`) or
      "circuit" / "circuit_interpolated": the current `variables["params"]`
      on the chips (their calibration kept), `G_eff` solved exactly or from
      the stored distortion, and the gradient through the linear read,
      `G_eff` and the mapping (`rxjax.circuit_grad` says exactly what is
      differentiated). The chips are not changed.
    mutable: other collections to update (e.g. ["batch_stats"]).
    **apply_kwargs: passed to `model.apply`.

  Returns:
    The model's output; with `refresh`, `program_key` or `mutable`,
    `(output, state)` with the updated collections (the new chips under
    "chips").
  """
  if _explicit_context():
    # The output keeps `x`'s batch sharding; the collections replicated.
    batch = _batch_spec(x)
    out = (batch, jax.sharding.PartitionSpec()) if (
        refresh or program_key is not None or mutable) else batch
    return _on_auto_axes(
        lambda v, c, x, k, pk: apply(
            model, v, c, x, spec, key=k, refresh=refresh, program_key=pk,
            mesh=_auto(mesh), backward=backward, mutable=mutable,
            **apply_kwargs),
        out, variables, chips, x, key, program_key)
  variables = _without_chips(variables)
  rngs = {} if key is None else {"read": key}
  mutable = list(mutable) if mutable else []
  if backward not in circuit_grad.BACKWARDS:
    raise ValueError(f"`backward` must be one of {circuit_grad.BACKWARDS}, "
                     f"got {backward!r}")
  if backward != "straight_through" and (refresh or program_key is not None):
    raise ValueError(f"`backward` = {backward!r} reads the current weights "
                     "on the stored chips itself: pass neither `refresh` "
                     "nor `program_key`")
  if program_key is not None:
    return _program_and_apply(model, variables, x, spec, program_key, mesh,
                              rngs, mutable, apply_kwargs)
  if chips:
    variables[COLLECTION] = chips
  stage = circuit_grad.STAGES.get(backward, "read")
  if refresh:
    stage = "refresh"
    mutable.append(COLLECTION)
  return _run(model, variables, x, spec, stage, rngs, mutable, apply_kwargs)
