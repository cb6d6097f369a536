"""A programmed layer (`Chip`) and programming: `write` (map the weights,
draw one chip instance), `solve` (the one tile batcher: every tile's exact
`G_eff`), `program` = both, `reprogram` (new weights, stored distortion)."""

from __future__ import annotations

import dataclasses
import functools

import flax.struct
import jax
import jax.numpy as jnp

from rxjax import circuit
from rxjax import device as device_lib
from rxjax import finite
from rxjax import mapping as mapping_lib
from rxjax import periphery
from rxjax.crossbar.spec import ChipSpec

@flax.struct.dataclass
class Chip:
  """One programmed layer on one chip instance (a pytree; vmap over chips).

  Attributes:
    g: `[S, P, Tr, Tc, M, N]` programmed device conductances (siemens).
    g_eff: same shape, forward effective conductances (`i = v @ g_eff`);
      None in a chip that is written but not solved yet (`write`).
    g_eff_bwd: same shape, backward effective conductances
      (`i_rows = g_eff_bwd @ v_cols`), or None when not needed.
    y_port: `[S, P, Tr, Tc, M, M]` row-port admittances for the exact DAC
      load (`dac.model == "divider_exact"`), else None.
    w_scale: scalar weight scale `w_max` (weight units).
    x_scale: scalar input scale (input units map to `[-1, 1]`).
    adc_full_scale: scalar ADC full-scale current (amperes), forward read.
    adc_offset, adc_gain: `[S, P, Tr, Tc, N]` per-column ADC offset (fraction
      of full scale) and relative gain error.
    fan_in, fan_out: the layer's shape (static).
  """

  g: jax.Array
  g_eff: jax.Array
  g_eff_bwd: jax.Array | None
  y_port: jax.Array | None
  w_scale: jax.Array
  x_scale: jax.Array
  adc_full_scale: jax.Array
  adc_offset: jax.Array
  adc_gain: jax.Array
  fan_in: int = flax.struct.field(pytree_node=False, default=0)
  fan_out: int = flax.struct.field(pytree_node=False, default=0)


def check_spec(spec) -> None:
  if not isinstance(spec, ChipSpec):
    raise TypeError(f"`spec` must be a rxjax.ChipSpec, got {spec!r}")


def check_w(w) -> jax.Array:
  w = jnp.asarray(w)
  if w.ndim != 2:
    raise ValueError(
        f"`w` must be a [fan_in, fan_out] weight matrix, got shape {w.shape}")
  if not jnp.issubdtype(w.dtype, jnp.floating):
    raise TypeError(f"`w` must be floating point, got dtype {w.dtype}")
  return w


def check_solved(chip: Chip):
  if chip.g_eff is None:
    raise ValueError("this chip is written but not solved: pass it through "
                     "crossbar.solve (or program it with crossbar.program)")


def _wires_ideal(wires: circuit.Wires) -> bool:
  return all(v is None or float(v) == 0.0
             for v in dataclasses.astuple(wires))


def nominal_load(spec: ChipSpec) -> float:
  """Default load at which the divider DAC is exact: a mid-state tile row.

  `periphery` uses `spec.dac.nominal_load` instead when it is set.
  """
  d = spec.device
  return spec.mapping.tile_cols * (d.g_min + d.g_max) / 2


def design_full_scale(spec: ChipSpec, dtype) -> jax.Array:
  """Uncalibrated ADC range: every row at `v_read`, every cell at g_max."""
  return jnp.asarray(
      spec.dac.v_read * spec.mapping.tile_rows * spec.device.g_max, dtype)


def variation_key(key):
  """The key of a chip instance's device variation draw, from the chip's
  key (`write`, `reprogram`; `rxjax.circuit_grad` draws the same)."""
  return jax.random.fold_in(key, 0)


@functools.partial(jax.jit, static_argnames=("spec",))
def _map_and_vary(w, spec: ChipSpec, key):
  mapped = mapping_lib.program(w, spec.mapping, spec.device)
  g = device_lib.vary(mapped.g, spec.device, key=variation_key(key))
  return g, mapped.w_scale


@functools.partial(jax.jit, static_argnames=("spec", "shape"))
def _write(w, spec: ChipSpec, key, shape) -> Chip:
  g, w_scale = _map_and_vary(w, spec, key)
  offset, gain = periphery.adc_variation(
      g.shape[:-2] + g.shape[-1:], spec.adc,
      key=jax.random.fold_in(key, 1), dtype=g.dtype)
  return Chip(g=g, g_eff=None, g_eff_bwd=None, y_port=None,
              w_scale=w_scale, x_scale=jnp.ones((), g.dtype),
              adc_full_scale=design_full_scale(spec, g.dtype),
              adc_offset=offset, adc_gain=gain, fan_in=shape[0],
              fan_out=shape[1])


def write(w, spec: ChipSpec, *, key) -> Chip:
  """Writes a layer's weights onto one chip instance, not yet solved.

  The first stage of `program`: the mapping (`mapping.program`), one draw
  of device variation (`device.vary`) and of the ADCs' offsets and gains.
  The returned chip has no `G_eff` yet (`g_eff` is None): `solve` computes
  it, for many chips' tiles in one batch. jit-compatible and vmappable over
  keys.

  Args:
    w: `[fan_in, fan_out]` weights.
    spec: the chip.
    key: PRNG key of this chip instance: the same key gives the same chip,
      whichever device later solves its tiles.

  Returns:
    The written `Chip`, `g_eff`, `g_eff_bwd` and `y_port` None. Under jit, a
    non-finite weight makes every array of the chip NaN (`finite.status`
    tells).

  Raises:
    ValueError: `w` holds NaN or inf (outside jit).
  """
  w = check_w(w)
  check_spec(spec)
  ok = finite.check("w", w, "weights")
  return finite.poison(_write(w, spec, key, w.shape), ok)


def _effective(g, spec: ChipSpec):
  """(forward, backward or None) G_eff of tiles `[T, M, N]`, by
  `spec.solver`."""
  if spec.solver == "aam":
    solve = functools.partial(circuit.aam_conductance, paths=spec.aam_paths)
  else:
    solve = circuit.effective_conductance
  g_eff = solve(g, spec.wires)
  g_eff_bwd = None
  if spec.backward == "transposed_read":
    # Same terminals both ways: the backward solve would repeat the forward.
    g_eff_bwd = g_eff if spec.wires.reciprocal else solve(
        g, spec.wires, direction="backward")
  return g_eff, g_eff_bwd


def _place(a, sharding: jax.sharding.NamedSharding):
  """`a` laid out as `sharding` says, on an Explicit or an Auto mesh."""
  if jax.sharding.AxisType.Explicit in sharding.mesh.axis_types:
    return jax.sharding.reshard(a, sharding)
  return jax.lax.with_sharding_constraint(a, sharding)


# A network's tiles on a mesh are solved in chunks of ceil(T / _CHUNKS)
# tiles (`_solve_tiles`).
_CHUNKS = 8


def _solve_tiles(flat, spec: ChipSpec, mesh):
  """`_effective` of `[T, M, N]` tiles, their axis sharded over `mesh`.

  Every tile's solve is independent, so each device solves its own share
  and nothing is communicated. The tile axis is split over all devices of
  the mesh (its axes flattened) after zero tiles pad it to a whole number
  of chunks per device; they solve to zeros and are dropped. Each device
  solves its chunks one after another, and a chunk's size depends only on
  T, so every tile is solved by the same program on any device count, and
  its `G_eff` is the same to the last bit (a solve's roundings depend on
  how many tiles it is vmapped over).
  """
  if mesh is None:
    return _effective(flat, spec)
  count = flat.shape[0]
  chunk = -(-count // _CHUNKS)
  flat = jnp.pad(flat, ((0, -count % (mesh.size * chunk)), (0, 0), (0, 0)))
  tiles = jax.sharding.PartitionSpec(mesh.axis_names)
  flat = _place(flat, jax.sharding.NamedSharding(mesh, tiles))
  bwd = spec.backward == "transposed_read"

  def fn(g):
    chunks = g.reshape((-1, chunk) + g.shape[1:])
    out = jax.lax.map(lambda c: _effective(c, spec)[:1 + bwd], chunks)
    return tuple(a.reshape(g.shape) for a in out)

  # Nothing is reduced over devices, so the varying-axes type check (which
  # rejects the solver scans' unvarying initial carries) has nothing to
  # guard.
  out = jax.shard_map(fn, mesh=mesh, in_specs=tiles,
                      out_specs=(tiles,) * (1 + bwd), check_vma=False)(flat)
  # Gathered once: every layer's read needs its whole chip.
  whole = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  out = [_place(a, whole)[:count] for a in out]
  return out[0], (out[1] if bwd else None)


@functools.partial(jax.jit, static_argnames=("spec", "mesh"))
def _solve(chips, spec: ChipSpec, mesh):
  m, n = spec.mapping.tile_rows, spec.mapping.tile_cols
  gs = [c.g for c in chips]
  if _wires_ideal(spec.wires):
    solved = [(g, g if spec.backward == "transposed_read" else None)
              for g in gs]
  else:
    flat = jnp.concatenate([g.reshape(-1, m, n) for g in gs])
    fwd, bwd = _solve_tiles(flat, spec, mesh)
    sizes = [g.size // (m * n) for g in gs]
    starts = [sum(sizes[:k]) for k in range(len(gs))]
    take = lambda a, k: None if a is None else a[
        starts[k]:starts[k] + sizes[k]].reshape(gs[k].shape)
    solved = [(take(fwd, k), take(bwd, k)) for k in range(len(gs))]
  out = []
  drive = spec.periphery.drive
  for chip, (g_eff, g_eff_bwd) in zip(chips, solved):
    y_port = drive.port_admittance(chip.g, spec.wires)
    out.append(chip.replace(g_eff=g_eff, g_eff_bwd=g_eff_bwd, y_port=y_port))
  return out


def solve(chips, spec: ChipSpec, *, mesh=None) -> list[Chip]:
  """The effective conductances of written chips: all their tiles in one
  batch.

  The second stage of `program`, and the one tile batcher of rxjax: the
  tiles of every chip (any layers, any leading axes such as conv groups)
  are solved together, one compiled circuit solve for the whole network,
  for its exact `G_eff` (`circuit.effective_conductance`, or TxSim's AAM
  with `spec.solver == "aam"`), and the backward one when
  `spec.backward == "transposed_read"`. jit- and vmap-compatible.

  Args:
    chips: sequence of chips from `write`, all with `spec`'s tiles.
    spec: the chip spec they were written with.
    mesh: optional `jax.sharding.Mesh`: the tile axis of the batch is
      sharded over all its devices (every mesh axis), padded with zero tiles
      to a multiple of their count. None: placement follows the inputs.

  Returns:
    The chips with `g_eff` (and `g_eff_bwd`, `y_port` where the spec needs
    them), uncalibrated (`x_scale = 1`, ADC full scale at its never-clipping
    design value); see `calibrate`.
  """
  check_spec(spec)
  chips = list(chips)
  m, n = spec.mapping.tile_rows, spec.mapping.tile_cols
  for k, chip in enumerate(chips):
    if not isinstance(chip, Chip) or chip.g.shape[-2:] != (m, n):
      raise ValueError(
          f"`chips[{k}]` must be a Chip written with this spec's {m}x{n} "
          f"tiles (crossbar.write), got "
          f"{chip.g.shape if isinstance(chip, Chip) else type(chip)}")
  if mesh is not None and not isinstance(mesh, jax.sharding.Mesh):
    raise TypeError(f"`mesh` must be a jax.sharding.Mesh or None, got "
                    f"{mesh!r}")
  if not chips:
    return []
  return _solve(chips, spec, mesh)


def program(w, spec: ChipSpec, *, key, mesh=None) -> Chip:
  """Programs a layer's weights onto one chip instance: `write`, `solve`.

  Mapping (`mapping.program`), one draw of device variation
  (`device.vary`), ADC offsets and gains, and the exact `G_eff` of every
  tile (and the backward one when `spec.backward == "transposed_read"`).
  jit-compatible and vmappable over keys. A network's layers are programmed
  together by `rxjax.nn.program` (all tiles in one `solve`).

  Args:
    w: `[fan_in, fan_out]` weights.
    spec: the chip.
    key: PRNG key of this chip instance (device variation, ADC offsets):
      the same key gives the same chip.
    mesh: optional `jax.sharding.Mesh` whose devices share the tiles'
      solve (`solve`).

  Returns:
    The programmed `Chip`, uncalibrated (`x_scale = 1`, ADC full scale at its
    never-clipping design value); see `calibrate`. Under jit, a non-finite
    weight makes every array of the chip NaN (`finite.status` tells).

  Raises:
    ValueError: `w` holds NaN or inf (outside jit).
  """
  return solve([write(w, spec, key=key)], spec, mesh=mesh)[0]


def reprogram(chip: Chip, w, spec: ChipSpec, *, key) -> Chip:
  """New weights on the same chip instance, `G_eff` from stored distortion.

  TxSim IV-D's interpolated FCM: the relative distortion `(g - G_eff) / g`
  of every cell, stored when `chip` was programmed exactly, is applied to
  the conductances of the new weights, `G_eff' = g' (G_eff / g)`, without a
  circuit solve. The calibration (input scale, ADC range and columns) is
  kept. Exact when the weights did not change; a good approximation while
  they change little (the distortion depends on the conductances only
  through the IR drops). Cost: the mapping and the variation draw.

  Args:
    chip: a chip programmed exactly (`program`), whose distortion is reused.
    w: `[fan_in, fan_out]` new weights (the shape `chip` was programmed for).
    spec: the chip's spec.
    key: the chip instance's key, as passed to `program` (the same device
      variation draws).

  Returns:
    The chip holding `w`.
  """
  w = check_w(w)
  if w.shape != (chip.fan_in, chip.fan_out):
    raise ValueError(f"`w` must have the programmed shape "
                     f"{(chip.fan_in, chip.fan_out)}, got {w.shape}")
  g, w_scale = _map_and_vary(w, spec, key)
  return _redistort(chip, g, w_scale)


@jax.jit
def _redistort(chip: Chip, g, w_scale) -> Chip:
  def scale(g_eff):
    if g_eff is None:
      return None
    ratio = jnp.where(chip.g > 0, g_eff / jnp.where(chip.g > 0, chip.g, 1), 1)
    return g * ratio
  return chip.replace(g=g, g_eff=scale(chip.g_eff),
                      g_eff_bwd=scale(chip.g_eff_bwd), w_scale=w_scale)
