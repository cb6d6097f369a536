"""The three-stage crossbar VMM of a programmed layer (RxNN V-A, TxSim IV).

This module owns what happens between a layer's weights and its outputs on a
chip:

* `ChipSpec`: every setting of the simulated chip (tiles, mapping, device,
  wires, converters, backward mode), frozen and hashable.
* `program` = `write` then `solve`: weights -> a `Chip` pytree. `write`
  maps the weights and draws one chip instance of device variation and ADC
  errors (the programmed conductances of every tile); `solve`, the one tile
  batcher, computes the exact forward (and, for training, backward)
  effective conductances `G_eff` of every tile of any number of chips in one
  batched `circuit.effective_conductance`, its tile axis sharded over a
  mesh's devices when given one. `G_eff` is computed once per chip, never
  per input. `reprogram` writes new weights on a programmed chip and reuses
  its distortion instead of solving (TxSim's interpolated FCM).
* `calibrate`: input scale and ADC full-scale current from a calibration
  batch (RxNN VII, TxSim IV-B).
* `read`: the three stages, DAC -> `v @ G_eff` per tile -> ADC, then
  shift-and-add over input cycles and weight slices, pair subtraction, the
  digital sum over fan-in tiles and the conversion back to weight units.
  `direction="backward"` is the transposed read of an error signal.
* `crossbar_matmul`: `read` with a custom VJP; the backward pass is either a
  floating-point straight-through (RxNN re-training) or the transposed
  non-ideal read (TxSim training).
* `matmul`: the one-call, NumPy-like entry point.

It does not own the circuit solve (`rxjax.circuit`), the weight <-> conductance
map (`mapping.py`), device physics (`device.py`) or the converter models
(`rxjax.periphery`): it composes them.

Conventions. Inputs are scaled by a per-layer input scale `x_scale` into
`[-1, 1]` and applied as two passes (positive part, then negative part, the
digital results subtracted) unless `ChipSpec.inputs == "non_negative"`, which
skips the negative pass (negative inputs are then clipped to 0: use it after
a ReLU). Conductance arrays of a chip are `[S, P, Tr, Tc, M, N]`: weight
slices, polarities (differential: 0 = positive, 1 = negative crossbar),
tile rows and columns of the layer's tile grid, and the tile itself.
"""

from __future__ import annotations

import dataclasses
import functools
import flax.struct
import jax
import jax.numpy as jnp

from rxjax import _checks
from rxjax import circuit
from rxjax import device as device_lib
from rxjax import finite
from rxjax import mapping as mapping_lib
from rxjax import periphery

_BACKWARD_MODES = ("straight_through", "transposed_read")
_INPUTS = ("signed", "non_negative")
_SOLVERS = ("exact", "aam")
_PAIR_SUBTRACTIONS = ("digital", "analog")
_GAIN_CORRECTIONS = ("none", "column")
_ADC_RANGES = ("calibrated", "fitted")
# Candidate ADC full scales of `adc_range="fitted"`, as fractions of the
# calibrated one: 2**(-k/2), k = 0..4 (1 down to 1/4).
ADC_RANGE_FACTORS = tuple(2.0 ** (-k / 2) for k in range(5))


@dataclasses.dataclass(frozen=True)
class ChipSpec:
  """A simulated crossbar chip. The default is the papers' chip.

  Default (RxNN VII / TxSim V): 64x64 tiles; ReRAM devices 100 kOhm - 1 MOhm
  with 2-bit cells holding 8-bit weights in 4 slices, differential pairs,
  10% lognormal process variation; row / column wire segments of 1 / 4.6 Ohm
  and 100 Ohm driver and sense resistances; 8-bit inputs streamed through
  1-bit DACs at 0.25 V; 8-bit ADCs calibrated on the data.

  Attributes:
    mapping: tiles, weight precision, signed-weight scheme (`mapping.py`).
    device: conductance range, device precision, variation (`device.py`).
    wires: parasitic resistances of every tile, in ohm (`rxjax.circuit`).
    dac: input precision, DAC resolution and model (`rxjax.periphery`).
    adc: ADC resolution, calibration and non-idealities (`rxjax.periphery`).
    backward: gradient of `crossbar_matmul` w.r.t. its input:
      "straight_through" (floating point, `dy @ w.T`; RxNN re-training) or
      "transposed_read" (the error signal read backwards through the
      non-ideal chip; TxSim). Weight gradients are the ideal `x.T @ dy`.
    inputs: "signed" (two passes) or "non_negative" (one pass; negative
      inputs clip to 0).
    solver: how `G_eff` is computed when a chip is programmed: "exact"
      (`circuit.effective_conductance`, the Fast Crossbar Model) or "aam"
      (`circuit.aam_conductance`, TxSim's approximate analytical model:
      far cheaper, accurate only while the wires are small against the
      devices; its docstring says where not to use it).
    aam_paths: path families the AAM keeps (`aam_conductance(paths=...)`),
      an int >= 1; used only with `solver="aam"`.
    pair_subtraction: where a differential pair's currents are subtracted:
      "digital" (default; each crossbar's columns have their own unipolar
      ADC and the readings are subtracted after the shift-and-add) or
      "analog" (the sense amplifier subtracts `I+ - I-` and one bipolar,
      sign-magnitude ADC per pair digitizes it, `periphery.adc_bipolar`,
      as in PRIME-style designs; needs differential pairs and `adc.bits`
      None or >= 2). With an ideal DAC an analog read is one product per
      pair, `v @ (G+_eff - G-_eff)`, instead of two.
    gain_correction: digital gain correction of a layer's outputs, fitted
      when the layer is programmed (`rxjax.nn.program`): "none" (default)
      or "column" (one factor per output column, the least-squares fit of
      the chip's readings of the calibration inputs onto their ideal
      products, `column_gain`; applied after the digital sum over tiles,
      before the digital bias). Chips calibrate their readout this way;
      without it the IR drops shrink the analog products against the
      digital biases (see docs/training.md).
    adc_range: the ADC full scale of a layer programmed through
      `rxjax.nn.program`: "calibrated" (default; `adc.calibration` of the
      calibration currents) or "fitted" (of the calibrated full scale
      times each of `ADC_RANGE_FACTORS`, the one whose readings of the
      calibration inputs, after the gain correction, are closest to their
      ideal products in squared error: a coarse ADC calibrated on the
      largest current leaves most columns a few codes, and clipping the
      rare largest currents buys resolution for all others; see
      docs/training.md). `crossbar.calibrate` alone always calibrates.
  """

  mapping: mapping_lib.MappingSpec = mapping_lib.MappingSpec()
  device: device_lib.DeviceSpec = device_lib.DeviceSpec()
  wires: circuit.Wires = circuit.Wires(
      r_row=1.0, r_col=4.6, r_source=100.0, r_sense=100.0)
  dac: periphery.DACSpec = periphery.DACSpec()
  adc: periphery.ADCSpec = periphery.ADCSpec()
  backward: str = "straight_through"
  inputs: str = "signed"
  solver: str = "exact"
  aam_paths: int = 3
  pair_subtraction: str = "digital"
  gain_correction: str = "none"
  adc_range: str = "calibrated"

  def __post_init__(self):
    checks = (("mapping", mapping_lib.MappingSpec),
              ("device", device_lib.DeviceSpec), ("wires", circuit.Wires),
              ("dac", periphery.DACSpec), ("adc", periphery.ADCSpec))
    for name, kind in checks:
      if not isinstance(getattr(self, name), kind):
        raise TypeError(f"`{name}` must be a {kind.__name__}, got "
                        f"{getattr(self, name)!r}")
    _checks.check_choice("backward", self.backward, _BACKWARD_MODES)
    _checks.check_choice("inputs", self.inputs, _INPUTS)
    _checks.check_choice("solver", self.solver, _SOLVERS)
    _checks.check_choice("pair_subtraction", self.pair_subtraction,
                         _PAIR_SUBTRACTIONS)
    _checks.check_choice("gain_correction", self.gain_correction,
                         _GAIN_CORRECTIONS)
    _checks.check_choice("adc_range", self.adc_range, _ADC_RANGES)
    if self.pair_subtraction == "analog":
      if self.mapping.signed != "differential":
        raise ValueError(
            "`pair_subtraction` = 'analog' needs differential pairs "
            f"(mapping.signed='differential'), got "
            f"mapping.signed={self.mapping.signed!r}")
      if self.adc.bits is not None and self.adc.bits < 2:
        raise ValueError(
            "`pair_subtraction` = 'analog' needs a bipolar ADC with "
            f"`adc.bits` >= 2 (one bit is the sign) or None, got "
            f"adc.bits={self.adc.bits}")
    if (isinstance(self.aam_paths, bool)
        or not isinstance(self.aam_paths, int) or self.aam_paths < 1):
      raise ValueError(f"`aam_paths` must be an int >= 1, got "
                       f"{self.aam_paths!r}")
    if (self.backward == "transposed_read"
        and self.dac.model == "divider_exact"):
      raise ValueError(
          "`dac.model` = 'divider_exact' is implemented for forward reads "
          "only; with `backward` = 'transposed_read' use 'divider' or "
          "'ideal'")

  @classmethod
  def ideal(cls, **overrides) -> "ChipSpec":
    """Every non-ideality off, full precision: reads equal `x @ w`."""
    fields = dict(
        mapping=mapping_lib.MappingSpec(weight_bits=None),
        device=device_lib.DeviceSpec.ideal(),
        wires=circuit.Wires.ideal(),
        dac=periphery.DACSpec.ideal(),
        adc=periphery.ADCSpec.ideal())
    fields.update(overrides)
    return cls(**fields)

  def replace(self, **changes) -> "ChipSpec":
    return dataclasses.replace(self, **changes)

  def cross_ideal(self) -> "ChipSpec":
    """This chip with its precision only: RxNN's "Cross-ideal".

    Keeps the tiles, the weight / device / input / ADC resolutions and the
    signed-weight scheme; turns off the wire and terminal resistances, device
    variation, noise and faults, the DAC's load dependence and the ADC's
    non-linearity, offsets and gain errors.
    """
    d = self.device
    return self.replace(
        device=dataclasses.replace(d, sigma=0.0, write_noise=0.0,
                                   stuck_at_min=0.0, stuck_at_max=0.0,
                                   read_noise=0.0),
        wires=circuit.Wires.ideal(),
        dac=dataclasses.replace(self.dac, model="ideal"),
        adc=dataclasses.replace(self.adc, nonlinearity=0.0, offset_sigma=0.0,
                                gain_sigma=0.0))

  @property
  def linear(self) -> bool:
    """Whether a programmed layer reads as `clip(x) @ W_eff` exactly.

    True when nothing between the clipped input and the digital output is
    non-linear or random per read: full-precision inputs (`input_bits`
    None), ideal DAC voltages, an ADC without quantization, offset or
    non-linearity, no read noise. Then `fold` gives `W_eff` once per chip
    and a read costs one matrix multiply (RxNN V: the FCM's non-ideal weight
    matrix). Wire resistances, variation and ADC gain errors are linear.
    """
    return (self.dac.input_bits is None
            and not self.periphery.drive.load_dependent
            and self.adc.bits is None and self.adc.nonlinearity == 0
            and self.adc.offset_sigma == 0 and self.device.read_noise == 0)

  @property
  def periphery(self) -> periphery.Periphery:
    """The chip's peripheral models (`periphery.select`): the DAC drive,
    the pair subtraction and the input passes, chosen once here."""
    return periphery.select(self.dac, self.pair_subtraction, self.inputs)


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


def _check_spec(spec) -> None:
  if not isinstance(spec, ChipSpec):
    raise TypeError(f"`spec` must be a rxjax.ChipSpec, got {spec!r}")


def _check_w(w) -> jax.Array:
  w = jnp.asarray(w)
  if w.ndim != 2:
    raise ValueError(
        f"`w` must be a [fan_in, fan_out] weight matrix, got shape {w.shape}")
  if not jnp.issubdtype(w.dtype, jnp.floating):
    raise TypeError(f"`w` must be floating point, got dtype {w.dtype}")
  return w


def _check_solved(chip: Chip):
  if chip.g_eff is None:
    raise ValueError("this chip is written but not solved: pass it through "
                     "crossbar.solve (or program it with crossbar.program)")


def _wires_ideal(wires: circuit.Wires) -> bool:
  return all(v is None or float(v) == 0.0
             for v in dataclasses.astuple(wires))


def _nominal_load(spec: ChipSpec) -> float:
  """Default load at which the divider DAC is exact: a mid-state tile row.

  `periphery` uses `spec.dac.nominal_load` instead when it is set.
  """
  d = spec.device
  return spec.mapping.tile_cols * (d.g_min + d.g_max) / 2


def _design_full_scale(spec: ChipSpec, dtype) -> jax.Array:
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
              adc_full_scale=_design_full_scale(spec, g.dtype),
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
  w = _check_w(w)
  _check_spec(spec)
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


def _solve_tiles(flat, spec: ChipSpec, mesh):
  """`_effective` of `[T, M, N]` tiles, their axis sharded over `mesh`.

  Every tile's solve is independent, so each device solves its own share
  and nothing is communicated. The tile axis is split over all devices of
  the mesh (its axes flattened) after zero tiles pad it to a multiple of the
  device count; they solve to zeros and are dropped.
  """
  if mesh is None:
    return _effective(flat, spec)
  count = flat.shape[0]
  flat = jnp.pad(flat, ((0, -count % mesh.size), (0, 0), (0, 0)))
  tiles = jax.sharding.PartitionSpec(mesh.axis_names)
  flat = _place(flat, jax.sharding.NamedSharding(mesh, tiles))
  bwd = spec.backward == "transposed_read"
  fn = lambda g: _effective(g, spec)[:1 + bwd]
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
  _check_spec(spec)
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
  w = _check_w(w)
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


def fold(chip: Chip, spec: ChipSpec, direction: str = "forward") -> jax.Array:
  """The layer's effective weight matrix when the read is linear.

  For a `spec.linear` chip, `read(x) == clip(x, -x_scale, x_scale) @ W_eff`
  (`[0, x_scale]` for non-negative inputs) to float rounding. `W_eff`
  combines, per tile, the slices' `G_eff` with their shift-and-add weights,
  the pair subtraction (or the reference column and the digital offset of
  the offset scheme) and the ADC gain errors, in weight units: the read's
  own arithmetic with the input taken out (tests compare the two). Cost:
  one pass over the conductances.

  Args:
    chip: a programmed layer.
    spec: its spec; must be `linear`.
    direction: "forward" (`[fan_in, fan_out]`) or "backward" (`[fan_out,
      fan_in]`, the transposed read).

  Returns:
    `W_eff` in weight units.
  """
  if not spec.linear:
    raise ValueError(
        "`fold` needs a linear read (spec.linear): full-precision inputs "
        "(dac.input_bits=None), dac.model='ideal', adc.bits=None, no ADC "
        "offset or non-linearity, no read noise")
  if direction not in ("forward", "backward"):
    raise ValueError(
        f"`direction` must be 'forward' or 'backward', got {direction!r}")
  return _fold(chip, spec, direction)


@functools.partial(jax.jit, static_argnames=("spec", "direction"))
def _fold(chip: Chip, spec: ChipSpec, direction: str) -> jax.Array:
  s, p, tr, tc, m, n = chip.g.shape
  d = spec.device
  sw = jnp.asarray(mapping_lib.slice_weights(spec.mapping, spec.device),
                   chip.g.dtype)
  forward = direction == "forward"
  g = chip.g_eff if forward else chip.g_eff_bwd
  if g is None:
    raise ValueError("this chip was programmed without backward G_eff: "
                     "program it with spec.backward='transposed_read'")
  if forward and not (spec.adc.offset_sigma == 0 and spec.adc.gain_sigma == 0):
    g = g * (1 + _pair_adc_params(chip.adc_gain, spec)[..., None, :])
  w = jnp.einsum("sptumn,s->ptumn", g, sw) / (d.g_max - d.g_min)
  if spec.mapping.signed == "differential":
    w = w[0] - w[1]
  elif forward:  # Data columns minus the reference column, offset removed.
    w = 2 * (w[0, ..., :-1] - w[0, ..., -1:]) - 1
  else:  # Reference column not driven; the g_min baseline removed.
    w = 2 * (w[0, ..., :-1] - d.g_min * sw.sum() / (d.g_max - d.g_min)) - 1
  w = jnp.moveaxis(w, 2, 1)  # [Tr, M, Tc, N']
  w = w.reshape(tr * m, -1)[:chip.fan_in, :chip.fan_out] * chip.w_scale
  return w if forward else w.T


# ---------------------------------------------------------------------------
# The read.


# The backward read's error signals are signed: always two input passes.
_SIGNED = periphery.SignedInputs()


def _pad_to(x, size, axis=-1):
  pad = size - x.shape[axis]
  if pad == 0:
    return x
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, pad)
  return jnp.pad(x, widths)


def _input_levels(x, chip: Chip, spec: ChipSpec):
  """Quantized DAC input levels of a batch, tiled (`periphery.stream_levels`;
  a read takes each cycle's digits from them as it goes).

  Args:
    x: `[B, fan_in]` inputs.

  Returns:
    `[Q, B, Tr, M]`: input passes, batch, fan-in tiles, rows.
  """
  _, _, tr, _, m, _ = chip.g.shape
  q = periphery.stream_levels(
      spec.periphery.inputs.passes(x / chip.x_scale), spec.dac)
  q = _pad_to(q, tr * m)
  return q.reshape(q.shape[:-1] + (tr, m))


def _scan_tile_rows(q, chip: Chip, spec: ChipSpec, reduce, init, g_eff=None):
  """Column currents of one fan-in tile row and input cycle at a time.

  The DAC (this cycle's digits of the input levels), the per-tile products
  `v @ G_eff` and whatever `reduce` does with the currents (ADC and digital
  accumulation, or calibration statistics) run inside one scan step, so the
  `[Q, B, S, P, Tc, N]` currents of a step stay cache-sized and neither they
  nor the cycles' inputs are ever stored for the whole layer.

  Args:
    q: `[Q, B, Tr, M]` input levels (`_input_levels`).
    chip: the programmed layer.
    spec: its spec.
    reduce: `(acc, i, r, c) -> acc` with `i` the currents `[Q, B, S, P, Tc,
      N]` (amperes) of tile row `r` in input cycle `c`.
    init: initial accumulator.
    g_eff: overrides `chip.g_eff` (read noise, `_one_product_per_pair`).
  """
  g_eff = chip.g_eff if g_eff is None else g_eff
  dac = spec.dac
  drive = spec.periphery.drive
  load = _nominal_load(spec)
  c_total, tr = periphery.n_cycles(dac), q.shape[2]
  g_rows = jnp.transpose(g_eff, (2, 4, 0, 1, 3, 5))  # [Tr, M, S, P, Tc, N]

  def step(acc, u_rc, g_r, r, c):
    i = drive.tile_row_currents(u_rc, g_r, chip.y_port, r, load)
    return reduce(acc, i, r, c)

  def tile_row(acc, xs):
    q_r, g_r, r = xs  # [Q, B, M], [M, S, P, Tc, N]
    if c_total == 1:
      return step(acc, periphery.stream_cycle(q_r, 0, dac), g_r, r, 0), None
    cycle = lambda acc, c: (step(acc, periphery.stream_cycle(q_r, c, dac),
                                 g_r, r, c), None)
    acc, _ = jax.lax.scan(cycle, acc, jnp.arange(c_total))
    return acc, None

  acc, _ = jax.lax.scan(tile_row, init,
                        (jnp.moveaxis(q, 2, 0), g_rows, jnp.arange(tr)))
  return acc


def _pair_adc_params(a, spec: ChipSpec):
  """Per-column ADC parameters `[S, P, ...]` of the ADCs that exist: with
  analog pair subtraction one per pair, polarity 0's draw (`[S, 1, ...]`)."""
  return spec.periphery.pairs.adc_params(a)


def _one_product_per_pair(g_eff, spec: ChipSpec):
  """`G+_eff - G-_eff` `[S, 1, ...]` when the read may subtract conductances
  (analog pairs, a load-independent DAC), else `g_eff`."""
  per = spec.periphery
  return per.pairs.pair_conductances(g_eff, per.drive)


def _adc_columns(chip: Chip, spec: ChipSpec):
  """Per-column ADC offset and gain `[Tr, S, P, Tc, N]`, or None when off.

  With analog pair subtraction P is 1: one ADC per pair."""
  if spec.adc.offset_sigma == 0 and spec.adc.gain_sigma == 0:
    return None, None
  return (jnp.moveaxis(_pair_adc_params(chip.adc_offset, spec), 2, 0),
          jnp.moveaxis(_pair_adc_params(chip.adc_gain, spec), 2, 0))


def _trim(chip: Chip, spec: ChipSpec) -> Chip:
  """Drops tile rows and columns a forward read never uses, exactly.

  A layer narrower than one tile leaves rows driven at 0 V (they add no
  current) and columns whose currents are discarded. With one tile row the
  unused rows are dropped unless the exact DAC couples the rows
  ("divider_exact"); with one tile column of differential pairs the unused
  columns are dropped when the DAC voltage does not depend on the row load
  ("ideal"). LeNet-5's first convolution, a 25 x 6 matrix on a 64 x 64
  tile, then reads 6 of 64 columns through 25 of 64 rows.
  """
  s, p, tr, tc, m, n = chip.g.shape
  drive = spec.periphery.drive
  rows = chip.fan_in if (tr == 1 and not drive.uses_port_admittance) else m
  cols = n
  if tc == 1 and spec.mapping.signed == "differential" and (
      not drive.load_dependent):
    cols = chip.fan_out
  if (rows, cols) == (m, n):
    return chip
  return chip.replace(
      g=chip.g[..., :rows, :cols], g_eff=chip.g_eff[..., :rows, :cols],
      g_eff_bwd=None, adc_offset=chip.adc_offset[..., :cols],
      adc_gain=chip.adc_gain[..., :cols])


# Currents per scan step (elements) above which a digital-pair read runs the
# two polarities as separate scans (`_read_forward`); below it the joint read
# is faster.
SPLIT_CURRENTS = 2**20


def _read_forward(x, chip: Chip, spec: ChipSpec, key):
  chip = _trim(chip, spec)
  g_eff = chip.g_eff
  if spec.device.read_noise > 0:
    g_eff = device_lib.read(g_eff, spec.device, key=key)
  g_eff = _one_product_per_pair(g_eff, spec)
  levels = _input_levels(x, chip, spec)
  q, b = levels.shape[:2]
  s, p, _, tc, _, n = chip.g.shape
  dtype = chip.g.dtype
  cw = jnp.asarray(periphery.cycle_weights(spec.dac), dtype)
  sw = [float(k) for k in mapping_lib.slice_weights(spec.mapping,
                                                    spec.device)]
  offsets, gains = _adc_columns(chip, spec)
  differential = spec.mapping.signed == "differential"
  per = spec.periphery
  adc = per.pairs.adc

  def reducer(offsets, gains, sign):
    def reduce(acc, i, r, c):
      offset = None if offsets is None else offsets[r]
      gain = None if gains is None else gains[r]
      i = adc(per.pairs.subtract(i, axis=3), chip.adc_full_scale,
              spec.adc, offset=offset, gain=gain)
      # Shift-and-add over input cycles and weight slices (RxNN V-A), then
      # the digital sum over fan-in tiles (the scan). Written as a sum of
      # static slices, not an einsum or a reduction over the slice axis
      # (which XLA's CPU backend runs far slower), so that it fuses with
      # the ADC into one pass over the currents.
      i = sum(i[:, :, k] * sw[k] for k in range(len(sw))) * cw[c]
      if differential:  # Pair subtraction, digital, unless done before.
        if i.shape[2] == 1:  # Analog pairs, or one polarity (below).
          return acc + sign * i[:, :, 0]
        return acc + (i[:, :, 0] - i[:, :, 1])
      return acc + i
    return reduce

  init = jnp.zeros((q, b, tc, n) if differential else (q, b, p, tc, n), dtype)
  # Only pairs digitized crossbar by crossbar can be read one polarity at a
  # time (and only by a drive that needs no per-chip port admittance).
  split = (differential and per.pairs.separate_adcs
           and not per.drive.uses_port_admittance
           and q * b * s * p * tc * n > SPLIT_CURRENTS)
  if split:
    # The two crossbars of a pair are digitized separately, so they can be
    # read one after the other: each scan step's currents are then half
    # as large and stay in cache between the product and the ADC.
    # Splitting the slices as well gains nothing.
    acc = init
    for pol, sign in ((0, 1.0), (1, -1.0)):
      take = lambda a: None if a is None else a[:, :, pol:pol + 1]
      acc = _scan_tile_rows(levels, chip, spec,
                            reducer(take(offsets), take(gains), sign), acc,
                            g_eff=g_eff[:, pol:pol + 1])
  else:
    acc = _scan_tile_rows(levels, chip, spec,
                          reducer(offsets, gains, 1.0), init, g_eff=g_eff)
  d = spec.device
  acc = acc / (spec.dac.v_read * (d.g_max - d.g_min))
  if differential:
    y = acc
  else:
    # Data columns minus the tile's reference column (the last); the
    # represented weight is w_max * (2 u_hat - 1), so the offset is removed
    # with the digital sum of the applied (quantized) inputs.
    x_sum = sum(periphery.stream_cycle(levels, k, spec.dac) * cw[k]
                for k in range(len(cw))).sum((2, 3))
    y = 2 * (acc[:, :, 0, :, :-1] - acc[:, :, 0, :, -1:])
    y = y - x_sum[:, :, None, None]
  y = y.reshape(y.shape[:2] + (-1,))
  y = per.inputs.combine(y)
  return y * chip.x_scale * chip.w_scale


def _read_backward(dy, chip: Chip, spec: ChipSpec, key):
  """Transposed read: column drivers, row sense amplifiers (TxSim IV).

  The row ADCs' full scale is calibrated on this error batch (TxSim IV-B):
  the statistic of the currents of the rows that carry the layer's fan-in
  (padding rows of a partly filled tile are not digitized). Unused tile
  columns (driven at 0 V) and, with one tile row, unused rows are left out
  of the computation exactly.
  """
  if chip.g_eff_bwd is None:
    raise ValueError("this chip was programmed without backward G_eff: "
                     "program it with spec.backward='transposed_read'")
  g_bwd = chip.g_eff_bwd
  if spec.device.read_noise > 0:
    g_bwd = device_lib.read(g_bwd, spec.device, key=key)
  g_bwd = _one_product_per_pair(g_bwd, spec)
  s, p, tr, tc, m, n = g_bwd.shape
  offset_scheme = spec.mapping.signed == "offset"
  per = spec.periphery
  if not per.drive.load_dependent:
    # Exact trimming: unused columns are driven at 0 V and add no current;
    # with one tile row, the rows past the fan-in are not read.
    if tr == 1:
      m = chip.fan_in
    if tc == 1 and not offset_scheme:
      n = chip.fan_out
    g_bwd = g_bwd[..., :m, :n]
  n_data = n - 1 if offset_scheme else n
  # Errors are signed and their range is not known in advance: scale by the
  # batch's largest magnitude (a digital normalization) and use two passes.
  dy_scale = periphery.calibrate(jnp.abs(dy), "max")
  d01 = dy / dy_scale
  u = periphery.stream(_SIGNED.passes(d01), spec.dac)  # [C, Q, B, F]
  u = _pad_to(u, tc * n_data).reshape(u.shape[:-1] + (tc, n_data))
  if offset_scheme:  # The reference column is not driven.
    u = _pad_to(u, n)
  c = u.shape[0]
  m_read = min(tr * m, chip.fan_in)
  currents = per.drive.column_currents(u, g_bwd, m_read, _nominal_load(spec))
  currents = [per.pairs.subtract(i, axis=4) for i in currents]
  # Row ADCs: full scale from this error batch (dynamic range, TxSim IV-B),
  # over the rows read.
  currents_seen = [per.pairs.magnitude(i) for i in currents]
  if spec.adc.calibration == "max":
    full_scale = periphery.calibrate(functools.reduce(
        jnp.maximum, [i.max() for i in currents_seen]), "max")
  else:
    full_scale = periphery.full_scale(jnp.stack(currents_seen), spec.adc)
  i = sum(per.pairs.adc(i, full_scale, spec.adc) for i in currents)
  # Digital sums over column tiles (above), input cycles and weight slices,
  # as sums of static slices: [Q, B, P, m_read].
  cw = [float(k) for k in periphery.cycle_weights(spec.dac)]
  sw = [float(k) for k in mapping_lib.slice_weights(spec.mapping,
                                                    spec.device)]
  acc = sum(i[k, :, :, j] * (cw[k] * sw[j]) for k in range(c)
            for j in range(s))
  d = spec.device
  unit = spec.dac.v_read * (d.g_max - d.g_min)
  if offset_scheme:
    # Baseline of the g_min cells, removed digitally; weight offset as in
    # the forward read.
    u_sum = jnp.einsum("cqbtn,c->qb", u, jnp.asarray(cw, u.dtype))
    base = d.g_min * spec.dac.v_read * sum(sw) * u_sum
    acc = acc[:, :, 0] - base[:, :, None]
    y = 2 * acc / unit - u_sum[:, :, None]
  else:  # The pairs' subtraction, analog (before the ADCs) or digital.
    y = per.pairs.combine(acc) / unit
  y = _SIGNED.combine(y)
  return y * dy_scale * chip.w_scale


def read(x, chip: Chip, spec: ChipSpec, *, key=None,
         direction: str = "forward") -> jax.Array:
  """The non-ideal crossbar VMM.

  Args:
    x: forward: `[..., fan_in]` inputs (input units); backward: `[...,
      fan_out]` error signal.
    chip: a programmed (and usually calibrated) layer.
    spec: the spec the chip was programmed with.
    key: PRNG key for read noise (needed only if `spec.device.read_noise`).
    direction: "forward" (`~ x @ w`) or "backward" (`~ x @ w.T`).

  Returns:
    `[..., fan_out]` (forward) or `[..., fan_in]` (backward) in the units of
    `x @ w`.
  """
  if direction not in ("forward", "backward"):
    raise ValueError(
        f"`direction` must be 'forward' or 'backward', got {direction!r}")
  if spec.device.read_noise > 0 and key is None:
    raise ValueError("spec.device.read_noise > 0 needs a `key` per read")
  _check_solved(chip)
  x = jnp.asarray(x)
  fan_in, fan_out = chip.fan_in, chip.fan_out
  want, give = (fan_in, fan_out) if direction == "forward" else (fan_out,
                                                                 fan_in)
  if x.ndim < 1 or x.shape[-1] != want:
    raise ValueError(
        f"`x` must have shape [..., {want}] for a {direction} read of a "
        f"{fan_in}x{fan_out} layer, got {x.shape}")
  batch = x.shape[:-1]
  x2 = x.reshape((-1, want)).astype(chip.g.dtype)
  fn = _read_forward if direction == "forward" else _read_backward
  y = fn(x2, chip, spec, key)[:, :give]
  return y.reshape(batch + (give,))


def calibrate(chip: Chip, x, spec: ChipSpec) -> Chip:
  """Sets the input scale and the ADC full scale from a calibration batch.

  Args:
    chip: a programmed layer.
    x: `[..., fan_in]` calibration inputs (zero-padded up to the tile grid
      if narrower).
    spec: the chip's spec. The input scale is `spec.dac.calibration` ("max"
      or a percentile) of `|x|`; the ADC full scale the same statistic of
      every column current of every tile, cycle and pass.

  Returns:
    The chip with `x_scale` and `adc_full_scale` set. Under jit, a
    non-finite calibration input makes every array of the chip NaN.

  Raises:
    ValueError: `x` holds NaN or inf (outside jit), or is empty.
  """
  _check_solved(chip)
  _check_spec(spec)
  x = jnp.asarray(x, chip.g.dtype)
  if x.ndim < 1 or x.shape[-1] != chip.fan_in:
    raise ValueError(f"calibration inputs must have shape [..., "
                     f"{chip.fan_in}], got {x.shape}")
  if x.size == 0:
    raise ValueError(f"calibration inputs `x` must hold at least one row, "
                     f"got shape {x.shape}")
  ok = finite.check("x", x, "calibration inputs")
  return finite.poison(_calibrate(chip, x, spec), ok)


def _calibrate(chip: Chip, x, spec: ChipSpec) -> Chip:
  x = x.reshape((-1, chip.fan_in))
  x_scale = periphery.input_scale(x, spec.dac).astype(chip.g.dtype)
  calibrated = chip.replace(x_scale=x_scale)
  chip = _trim(calibrated, spec)
  levels = _input_levels(x, chip, spec)
  g_eff = _one_product_per_pair(chip.g_eff, spec)
  # What the ADCs digitize: each column's current, or |I+ - I-| of a pair.
  # (Only analog pairs take the abs: an abs on every current would keep a
  # second copy of all currents alive and raise the peak memory.)
  pairs = spec.periphery.pairs
  seen = lambda i: pairs.magnitude(pairs.subtract(i, axis=3))
  if spec.adc.calibration == "max":
    reduce = lambda acc, i, r, c: jnp.maximum(acc, seen(i).max())
    full = _scan_tile_rows(levels, chip, spec, reduce,
                           jnp.zeros((), x.dtype), g_eff=g_eff)
    full = periphery.calibrate(full, "max")  # All-zero data: 1, not 0.
  else:
    # A percentile needs every current: keep calibration batches small.
    reduce = lambda acc, i, r, c: acc.at[r, c].set(seen(i))
    c, (q, b) = periphery.n_cycles(spec.dac), levels.shape[:2]
    s, p, tr, tc, _, n = chip.g.shape
    p = pairs.adc_polarities(p)
    init = jnp.zeros((tr, c, q, b, s, p, tc, n), x.dtype)
    full = periphery.full_scale(
        _scan_tile_rows(levels, chip, spec, reduce, init, g_eff=g_eff),
        spec.adc)
  return calibrated.replace(adc_full_scale=full.astype(chip.g.dtype))


def column_gain(y_chip, y_ideal) -> jax.Array:
  """Per-column digital gain that maps a chip's readings onto the ideal ones.

  The least-squares fit, column by column, of `y_ideal ~ gain * y_chip`
  over a calibration batch: `gain_c = <y_chip_c, y_ideal_c> / <y_chip_c,
  y_chip_c>`. A column that read nothing (or whose fit is not positive)
  keeps gain 1. This is the digital readout calibration a chip does after
  programming (one multiplier per ADC column after the shift-and-add):
  the IR drops of a low-resistance or large tile mostly scale each
  column's current down (RxNN V-B: up to 0.02x on a 10 kOhm Cross128
  LeNet-5), while the layer's bias, added digitally, is not scaled.

  Args:
    y_chip: `[..., fan_out]` the chip's readings of the calibration inputs.
    y_ideal: same shape, their ideal products `x @ w`.

  Returns:
    `[fan_out]` gains.
  """
  y_chip = jnp.asarray(y_chip)
  y_ideal = jnp.asarray(y_ideal, y_chip.dtype)
  if y_chip.shape != y_ideal.shape or y_chip.ndim < 1:
    raise ValueError(f"`y_chip` and `y_ideal` must have one shape [..., "
                     f"fan_out], got {y_chip.shape} and {y_ideal.shape}")
  a = y_chip.reshape(-1, y_chip.shape[-1])
  b = y_ideal.reshape(-1, y_ideal.shape[-1])
  num = jnp.sum(a * b, axis=0)
  den = jnp.sum(a * a, axis=0)
  tiny = jnp.finfo(a.dtype).tiny
  ok = (den > tiny) & (num > 0)
  return jnp.where(ok, num / jnp.where(ok, den, 1), 1).astype(a.dtype)


# ---------------------------------------------------------------------------
# The layer primitive with its backward physics.


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def crossbar_matmul(x, w, chip: Chip, key, spec: ChipSpec):
  """`~ x @ w` on the chip programmed from `w`, with crossbar gradients.

  Args:
    x: `[..., fan_in]` inputs.
    w: `[fan_in, fan_out]` the weights `chip` was programmed from (used only
      by the gradients).
    chip: the programmed, calibrated layer.
    key: PRNG key for read noise, or None.
    spec: static spec.

  Returns:
    `[..., fan_out]`. Gradients: w.r.t. `w`, the ideal `x.T @ dy`; w.r.t.
    `x`, `dy @ w.T` (`spec.backward == "straight_through"`) or the transposed
    non-ideal read of `dy` ("transposed_read"); none w.r.t. the chip.
  """
  return read(x, chip, spec, key=key)


def _matmul_fwd(x, w, chip, key, spec):
  return read(x, chip, spec, key=key), (x, w, chip, key)


def _matmul_bwd(spec, residuals, dy):
  x, w, chip, key = residuals
  if spec.backward == "straight_through":
    dx = dy @ w.T.astype(dy.dtype)
  else:
    bkey = None if key is None else jax.random.fold_in(key, 1)
    dx = read(dy, chip, spec, key=bkey, direction="backward")
  x2 = x.reshape((-1, x.shape[-1]))
  dw = (x2.T @ dy.reshape((-1, dy.shape[-1]))).astype(w.dtype)
  dchip = jax.tree.map(jnp.zeros_like, chip)
  return dx.astype(x.dtype), dw, dchip, None


crossbar_matmul.defvjp(_matmul_fwd, _matmul_bwd)


def matmul(x, w, spec: ChipSpec | None = None, *, key,
           return_status: bool = False):
  """`x @ w` computed on a simulated crossbar chip: the one-call entry point.

  Programs `w` onto one chip instance drawn from `key`, calibrates the input
  scale and the ADCs on `x` itself, and reads.

  Args:
    x: `[..., fan_in]` inputs.
    w: `[fan_in, fan_out]` weights.
    spec: the chip; None is the papers' default `ChipSpec()`. `ChipSpec.ideal()`
      reproduces `x @ w` to float rounding.
    key: PRNG key: one key is one chip instance.
    return_status: also return a `finite.Status` (for use under jit, where
      a NaN / inf input cannot raise: the output is then all NaN).

  Returns:
    `[..., fan_out]`, differentiable as `crossbar_matmul`; with
    `return_status`, `(y, status)`. An empty batch gives an empty output.

  Raises:
    ValueError: `x` or `w` holds NaN or inf (outside jit), or bad shapes.
    TypeError: `spec` is not a `ChipSpec` or None.

  Example:
    >>> y = rxjax.matmul(x, w, key=jax.random.key(0))
  """
  spec = ChipSpec() if spec is None else spec
  _check_spec(spec)
  w = _check_w(w)
  x = jnp.asarray(x)
  if x.ndim < 1 or x.shape[-1] != w.shape[0]:
    raise ValueError(f"`x` must have shape [..., {w.shape[0]}] to multiply "
                     f"a {w.shape[0]}x{w.shape[1]} `w`, got {x.shape}")
  ok = finite.all_true(finite.check("x", x, "inputs"),
                       finite.check("w", w, "weights"))
  if x.size == 0:  # Nothing to calibrate on, nothing to read.
    y = jnp.zeros(x.shape[:-1] + (w.shape[1],), jnp.result_type(x, w))
  else:
    chip = program(w, spec, key=jax.random.fold_in(key, 0))
    chip = calibrate(chip, jax.lax.stop_gradient(x), spec)
    y = finite.poison(
        crossbar_matmul(x, w, chip, jax.random.fold_in(key, 1), spec), ok)
  if return_status:
    return y, finite.status((x, w))
  return y
