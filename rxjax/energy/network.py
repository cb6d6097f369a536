"""The crossbar layers of a Linen model, found by an interceptor of our own
(the layers `rxjax.nn.on_crossbars` maps: nn.Dense, nn.Conv), and `count`:
a network's energy from shapes alone."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from rxjax import crossbar
from rxjax import nn as rnn
from rxjax.energy.counts import Geometry, layer_counts, nominal_array_j
from rxjax.energy.report import EnergyReport, build_report
from rxjax.energy.spec import EnergySpec



class Call(NamedTuple):
  """One call of a crossbar layer, as `recorder` saw it."""
  path: tuple
  module: Any  # The nn.Dense / nn.Conv module (bound).
  spec: crossbar.ChipSpec
  x: Any  # The layer's input.
  geometry: Geometry


def _layer_spec(module, spec):
  if isinstance(module, (rnn.CrossbarDense, rnn.CrossbarConv)):
    return module.spec
  return spec


def recorder(calls: list, spec, images: int):
  """An interceptor recording every crossbar layer's call (shapes, input),
  the layers `rxjax.nn.on_crossbars` maps (nn.Dense, nn.Conv)."""

  def intercept(next_fun, args, kwargs, context):
    module = context.module
    y = next_fun(*args, **kwargs)
    if (context.method_name != "__call__"
        or not isinstance(module, (nn.Dense, nn.Conv))
        or not module.has_variable("params", "kernel")):
      return y
    layer_spec = _layer_spec(module, spec)
    if layer_spec is None:
      return y
    x = args[0]
    kernel = module.get_variable("params", "kernel")
    if isinstance(module, nn.Dense):
      k, f, g = kernel.shape[0], kernel.shape[1], 1
    else:
      g = module.feature_group_count
      k, f = math.prod(kernel.shape[:-1]), kernel.shape[-1] // g
    positions = math.prod(y.shape) // (kernel.shape[-1] * images)
    geometry = Geometry(int(k), int(f), int(g), int(positions),
                        int(math.prod(jnp.shape(x)) // images),
                        int(math.prod(y.shape) // images))
    calls.append(Call(tuple(module.path), module, layer_spec, x, geometry))
    return y

  return intercept


def batch_images(x) -> int:
  """B of an example batch `x: [B, ...]` (a ValueError if it has none)."""
  shape = jnp.shape(x)
  if len(shape) < 1 or shape[0] < 1:
    raise ValueError(f"`x` must be an example batch [B, ...] with B >= 1, "
                     f"got shape {shape}")
  return int(shape[0])


def check_specs(spec, espec) -> EnergySpec:
  """The energy spec to use (None: `EnergySpec()`); a TypeError naming the
  argument when `spec` or `espec` is of the wrong type."""
  if not isinstance(spec, crossbar.ChipSpec):
    raise TypeError(f"`spec` must be a rxjax.crossbar.ChipSpec, got {spec!r}")
  espec = EnergySpec() if espec is None else espec
  if not isinstance(espec, EnergySpec):
    raise TypeError(f"`energy_spec` must be an EnergySpec or None, got "
                    f"{espec!r}")
  return espec


def layers(model: nn.Module, variables, x, spec: crossbar.ChipSpec,
           **apply_kwargs) -> list[tuple[str, Geometry]]:
  """The crossbar layers of `model` on inputs shaped like `x`, in call
  order, from shapes only (`jax.eval_shape`: no compute).

  `variables` and `x` may be arrays or `jax.ShapeDtypeStruct`s.
  """
  images = batch_images(x)
  calls = []

  def run(v, x):
    with nn.intercept_methods(recorder(calls, spec, images)):
      return model.apply(v, x, **apply_kwargs)

  jax.eval_shape(run, variables, x)
  return [("/".join(c.path), c.geometry, c.spec) for c in calls]


def count(model: nn.Module, variables, x, spec: crossbar.ChipSpec, *,
          energy_spec: EnergySpec | None = None,
          **apply_kwargs) -> EnergyReport:
  """Counts, energy, latency and area from shapes alone, no chip.

  For networks too large to program here (ImageNet-size): `variables` may
  be `jax.eval_shape(model.init, ...)`'s shapes and `x` a
  `jax.ShapeDtypeStruct`. The array term is `nominal_array_j`.
  """
  espec = check_specs(spec, energy_spec)
  found = layers(model, variables, x, spec, **apply_kwargs)
  rows = []
  for name, geometry, layer_spec in found:
    c = layer_counts(geometry, layer_spec, espec)
    rows.append((name, geometry, layer_spec,
                 nominal_array_j(c, layer_spec, espec)))
  return build_report(rows, espec, "nominal", batch_images(x))
