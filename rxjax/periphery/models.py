"""The peripheral models of a chip, chosen once per spec (`select`).

`crossbar` composes its reads from these objects and never branches on a
model's name: how the DACs drive the tile's lines (`IdealDrive`,
`DividerDrive`, `ExactDividerDrive`: RxNN fig. 2a / 4), where a differential
pair's currents are subtracted (`DigitalPairs`: one unipolar ADC per
crossbar column, subtracted after the shift-and-add; `AnalogPairs`: the
sense amplifier subtracts `I+ - I-` and one bipolar ADC per pair digitizes
it) and how inputs are applied (`SignedInputs`: two passes, the positive
part and then the negative part, the digital results subtracted;
`NonNegativeInputs`: one pass).

Array layouts are `crossbar`'s: a chip's conductances are `[S, P, Tr, Tc,
M, N]` (weight slices, polarities, tile rows and columns, the tile).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from rxjax import _checks
from rxjax.periphery import dac as dac_lib
from rxjax.periphery import readout
from rxjax.periphery.specs import DAC_MODELS, DACSpec

PAIR_SUBTRACTIONS = ("digital", "analog")
INPUTS = ("signed", "non_negative")


# ---------------------------------------------------------------------------
# How the DACs drive the lines.


def _einsum(lead: int, tiles: int, driven_last: bool) -> str:
  """Voltages `[L..., T..., D]` times tiles `[T..., D, K]` (or `[T..., K,
  D]`), summed over the driven lines D: `[L..., T..., K]`."""
  l, t = "abcdefgh"[:lead], "ijklmnop"[:tiles]
  g = f"{t}yx" if driven_last else f"{t}xy"
  return f"{l}{t}x,{g}->{l}{t}y"


@dataclasses.dataclass(frozen=True)
class IdealDrive:
  """Every driven line at `u * v_read`, whatever the tile's load."""

  dac: DACSpec
  # Whether a line's voltage depends on the conductances it drives (then a
  # read cannot drop unused columns or rows, nor subtract a pair's
  # conductances).
  load_dependent: ClassVar[bool] = False
  # Whether the drive solves against the tile's row-port admittance (then
  # every row of a tile is read, and the chip keeps `y_port`).
  uses_port_admittance: ClassVar[bool] = False

  def port_admittance(self, g, wires):
    """The row-port admittance a chip keeps for this drive, or None."""
    del g, wires
    return None

  def currents(self, u, g, *, driven_first: bool, nominal_load,
               y_port=None):
    """The tile kernel: sensed currents of tiles driven with codes `u`.

    The one computation of both reads (`crossbar.reads`), forward (one tile
    row at a time, `driven_first`) and transposed (one tile column at a
    time): the DAC voltages of the driven lines, then `v @ G_eff`.

    Args:
      u: `[L..., D]` normalized DAC codes of the driven lines (leading axes:
        passes, batch, cycles).
      g: effective conductances: `[D, T..., K]` (`driven_first`: the
        forward read's rows first, then the tiles and the sensed columns)
        or `[T..., K, D]` (the transposed read's tiles as stored, driven
        columns last).
      nominal_load: the line load at which a divider is exact (siemens).
      y_port: `[T..., D, D]` row-port admittances of the tiles (the exact
        divider, forward), or None.

    Returns:
      `[L..., T..., K]` currents (amperes).
    """
    del nominal_load, y_port
    # One GEMM: [L, D] @ [D, T K].
    v = dac_lib.dac_voltage(u, self.dac)
    driven = 0 if driven_first else g.ndim - 1
    return jax.lax.dot_general(v, g, (((u.ndim - 1,), (driven,)), ((), ())))


@dataclasses.dataclass(frozen=True)
class DividerDrive(IdealDrive):
  """RxNN's resistive-divider DAC, loaded by each line's `G_eff` sum."""

  load_dependent: ClassVar[bool] = True

  def _voltages(self, u_t, g_t, g_load, nominal_load, y_port):
    del g_t, y_port
    return dac_lib.dac_voltage(u_t, self.dac, g_load,
                               nominal_load=nominal_load)

  def currents(self, u, g, *, driven_first: bool, nominal_load,
               y_port=None):
    if driven_first:
      g = jnp.moveaxis(g, 0, -2)  # [T..., D, K]
    tiles = g.ndim - 2
    # The load of a driven line: the sum of its conductances.
    g_load = dac_lib.row_load(g) if driven_first else g.sum(-2)  # [T..., D]
    u_t = u.reshape(u.shape[:-1] + (1,) * tiles + u.shape[-1:])
    v = self._voltages(u_t, g, g_load, nominal_load, y_port)
    return jnp.einsum(_einsum(u.ndim - 1, tiles, not driven_first), v, g)


@dataclasses.dataclass(frozen=True)
class ExactDividerDrive(DividerDrive):
  """The divider solved against the tile's exact row-port admittance
  (forward reads; `crossbar.ChipSpec` refuses it with the transposed
  read)."""

  uses_port_admittance: ClassVar[bool] = True

  def port_admittance(self, g, wires):
    return dac_lib.port_admittance(g, wires)

  def _voltages(self, u_t, g_t, g_load, nominal_load, y_port):
    del g_load
    u_t = jnp.broadcast_to(u_t, u_t.shape[:u_t.ndim - g_t.ndim + 1]
                           + g_t.shape[:-1])
    return dac_lib.dac_voltage_exact(u_t, self.dac, y_port,
                                     nominal_load=nominal_load)


_DRIVES = {"ideal": IdealDrive, "divider": DividerDrive,
           "divider_exact": ExactDividerDrive}
assert tuple(_DRIVES) == DAC_MODELS


# ---------------------------------------------------------------------------
# Where a differential pair is subtracted.


@dataclasses.dataclass(frozen=True)
class DigitalPairs:
  """Each crossbar's columns have their own unipolar ADC; a pair's readings
  are subtracted digitally, after the shift-and-add."""

  adc = staticmethod(readout.adc)  # The ADC the readout uses.
  # Whether each crossbar of a pair has its own ADCs (then the two can be
  # read one after the other).
  separate_adcs: ClassVar[bool] = True

  def adc_polarities(self, p: int) -> int:
    """ADCs per column of `p` crossbars of a weight."""
    return p

  def adc_params(self, a):
    """Per-column ADC parameters `[S, P, ...]` of the ADCs that exist."""
    return a

  def pair_conductances(self, g_eff, drive: IdealDrive):
    """The conductances a read multiplies the voltages with."""
    del drive
    return g_eff

  def subtract(self, i, axis: int):
    """The currents the ADCs digitize, from each crossbar's currents (the
    polarities on `axis`)."""
    del axis
    return i

  def magnitude(self, i):
    """What an ADC's range must cover of the currents it digitizes."""
    return i

  def combine(self, acc):
    """`[Q, B, P, ...]` digital sums of a pair's crossbars -> the pair's."""
    return acc[:, :, 0] - acc[:, :, 1]


@dataclasses.dataclass(frozen=True)
class AnalogPairs(DigitalPairs):
  """The sense amplifier subtracts `I+ - I-`; one bipolar, sign-magnitude ADC
  per pair digitizes it (`readout.adc_bipolar`)."""

  adc = staticmethod(readout.adc_bipolar)
  separate_adcs: ClassVar[bool] = False

  def adc_polarities(self, p: int) -> int:
    return 1

  def adc_params(self, a):
    # One ADC per pair: polarity 0's draw, `[S, 1, ...]`.
    return a[:, :1]

  def pair_conductances(self, g_eff, drive: IdealDrive):
    # With a load-independent drive both crossbars of a pair see the same
    # voltages, so `v @ G+ - v @ G- = v @ (G+ - G-)`: one product instead
    # of two. (A divider DAC's voltage depends on each crossbar's row load.)
    if drive.load_dependent:
      return g_eff
    return g_eff[:, :1] - g_eff[:, 1:]

  def subtract(self, i, axis: int):
    if i.shape[axis] == 1:  # Subtracted before (`pair_conductances`).
      return i
    return (jax.lax.slice_in_dim(i, 0, 1, axis=axis)
            - jax.lax.slice_in_dim(i, 1, 2, axis=axis))

  def magnitude(self, i):
    return jnp.abs(i)  # Signed differences: the range of their magnitudes.

  def combine(self, acc):
    return acc[:, :, 0]  # Subtracted before the ADCs.


_PAIRS = {"digital": DigitalPairs, "analog": AnalogPairs}
assert tuple(_PAIRS) == PAIR_SUBTRACTIONS


# ---------------------------------------------------------------------------
# How inputs are applied.


@dataclasses.dataclass(frozen=True)
class SignedInputs:
  """Two passes: the positive part, then the negative part, through the same
  read; the two digital results are subtracted."""

  n_passes: ClassVar[int] = 2

  def passes(self, x01):
    """`[Q, ...]` non-negative input passes of normalized inputs."""
    return jnp.stack([jnp.maximum(x01, 0), jnp.maximum(-x01, 0)])

  def combine(self, y):
    """`[Q, ...]` digital results of the passes -> the read's."""
    return y[0] - y[1]

  def lowest(self, hi):
    """The lowest input the passes apply, given the highest `hi`."""
    return -hi


@dataclasses.dataclass(frozen=True)
class NonNegativeInputs(SignedInputs):
  """One pass; negative inputs clip to 0 (after a ReLU)."""

  n_passes: ClassVar[int] = 1

  def passes(self, x01):
    return jnp.maximum(x01, 0)[None]

  def combine(self, y):
    return y[0]

  def lowest(self, hi):
    return jnp.zeros_like(hi)


_INPUTS = {"signed": SignedInputs, "non_negative": NonNegativeInputs}
assert tuple(_INPUTS) == INPUTS


class Periphery(NamedTuple):
  """The peripheral models of one chip spec."""
  drive: IdealDrive
  pairs: DigitalPairs
  inputs: SignedInputs


def select(dac: DACSpec, pair_subtraction: str = "digital",
           inputs: str = "signed") -> Periphery:
  """The models of `dac.model`, `pair_subtraction` and `inputs`
  (`crossbar.ChipSpec.periphery`): the one place they are dispatched."""
  _checks.check_choice("pair_subtraction", pair_subtraction,
                       PAIR_SUBTRACTIONS)
  _checks.check_choice("inputs", inputs, INPUTS)
  return Periphery(_DRIVES[dac.model](dac), _PAIRS[pair_subtraction](),
                   _INPUTS[inputs]())
