"""Any Linen model on crossbars: the interceptor (`on_crossbars`), `program`
and `apply`."""

from __future__ import annotations

import warnings
from typing import Any

import flax.linen as nn
import jax

from rxjax import circuit_grad
from rxjax import finite
from rxjax.nn.conv import conv_geometry
from rxjax.nn.layers import (CrossbarConv, CrossbarDense, conv_on_chip,
                             dense_on_chip, masked)
from rxjax.nn.modes import COLLECTION, RNG, ChipSpec
from rxjax.nn.stages import STAGES, solve_written

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
      y = conv_on_chip(module, x, masked(module, kernel), conv_geometry(module),
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
  chips = solve_written(written.get(COLLECTION, {}), mesh)
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
