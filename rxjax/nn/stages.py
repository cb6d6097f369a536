"""Programming a network: the stages a layer's chips go through in the
"chips" collection, and the layer-level reads of those chips."""

from __future__ import annotations

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from rxjax import circuit_grad
from rxjax import crossbar
from rxjax.nn.modes import COLLECTION, RNG, ChipSpec

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
# Between the "write" and the "calibrate" pass, `solve_written` solves the
# tiles of every layer in one `crossbar.solve`.

STAGES = ("write", "calibrate", "refresh", "read") + tuple(
    circuit_grad.STAGES.values())


def per_group(fn, *args):
  """`fn` over the leading group axis; no vmap for one group."""
  if jax.tree.leaves(args)[0].shape[0] == 1:
    out = fn(*jax.tree.map(lambda a: a[0], args))
    return jax.tree.map(lambda a: a[None], out)
  return jax.vmap(fn)(*args)


def group_keys(key, groups):
  """`[groups]` keys, one per conv group: `fold_in(key, g)`."""
  return jnp.stack([jax.random.fold_in(key, g) for g in range(groups)])


@flax.struct.dataclass
class Written:
  """A layer's chips `[G, ...]` as written (`crossbar.write`), not yet
  solved, with the spec to solve them with (static)."""

  chips: crossbar.Chip
  spec: ChipSpec = flax.struct.field(pytree_node=False)


def solve_written(collection, mesh):
  """The "chips" collection after a "write" pass, every `Written` entry
  solved: all layers' tiles in one `crossbar.solve` (one per distinct spec).

  LeNet-5's 48 tiles of 64 x 64 solve faster in one batch than layer by
  layer, and the batch is what a mesh shards.
  """
  is_written = lambda a: isinstance(a, Written)
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


def layer_chips(module: nn.Module, w, x_fn, spec: ChipSpec, stage: str):
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
    keys = group_keys(module.make_rng(RNG), w.shape[0])
    chips = per_group(lambda w_g, k: crossbar.write(w_g, spec, key=k), w,
                       keys)
    module.put_variable(COLLECTION, "chip", Written(chips, spec))
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

    chips, gain = per_group(one, chips, jax.lax.stop_gradient(x_fn()), w,
                             keys)
  else:  # "refresh"
    gain = module.get_variable(COLLECTION, "gain")  # Kept, as calibration.
    chips = per_group(
        lambda c, w_g, k: crossbar.reprogram(c, w_g, spec, key=k), chips, w,
        keys)
  w_eff = w_bwd = None
  if spec.linear:
    w_eff = per_group(lambda c: crossbar.fold(c, spec), chips)
    if spec.backward == "transposed_read":
      w_bwd = per_group(lambda c: crossbar.fold(c, spec, "backward"), chips)
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


def gained(module: nn.Module, y, groups: int = 1):
  """The layer's output `[..., F]` times its stored gain (if any)."""
  if not module.has_variable(COLLECTION, "gain"):
    return y
  gain = module.get_variable(COLLECTION, "gain")
  if gain is None:
    return y
  return y * jax.lax.stop_gradient(gain).reshape(-1).astype(y.dtype)


def layer_read_key(module: nn.Module, spec: ChipSpec):
  """The layer's read-noise key (the "read" RNG), or None without noise."""
  return module.make_rng("read") if spec.device.read_noise > 0 else None


def _clipped(op):
  """`(x, w, lo, hi) -> op(clip(x, lo, hi), w)`: a folded layer's read."""
  return lambda x, w, lo, hi: op(jnp.clip(x, lo, hi), w)


def chipwise(op):
  """`(x, w, lo, hi) -> op(clip(x, lo, hi), w)` (a convolution) whose
  `jax.vmap` over chip instances runs native convolutions.

  Under `jax.vmap` over chips, the clip range and the kernel carry the chip
  axis, so the clipped input does too, and a convolution whose input and
  kernel are both batched becomes one grouped convolution, which XLA's CPU
  backend runs several times slower than the same convolutions one by one.
  Here that case runs as a `lax.map` over the
  chip axis, each step clipping the (shared or own) input and running one
  native convolution. Not differentiable by itself: `folded` differentiates
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


def folded(op, x, w, w_eff, w_bwd, lo, hi, read=None):
  """`op(clip(x, lo, hi), w_eff)` with the crossbar's gradients.

  `op(x, w)` is bilinear (a matmul or a convolution). Gradients: w.r.t. w
  the ideal ones at `(x, w)`; w.r.t. x straight-through with `w`, or with
  the folded transposed read `w_bwd` when given. `read(x, w_eff, lo, hi)`
  (default `_clipped(op)`) computes the forward value: the same product with
  its own vmap rule (`chipwise`).
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


def clip_range(chips, spec: ChipSpec, channels: int):
  """Per-channel input range `[channels]` (each group its own scale)."""
  hi = jnp.repeat(chips.x_scale, channels // chips.x_scale.shape[0])
  lo = spec.periphery.inputs.lowest(hi)
  return lo, hi
