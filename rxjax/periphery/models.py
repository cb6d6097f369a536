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


@dataclasses.dataclass(frozen=True)
class IdealDrive:
  """Every driven line at `u * v_read`, whatever the tile's load."""

  dac: DACSpec
  # Whether a line's voltage depends on the conductances it drives (then a
  # read cannot drop unused columns, nor subtract a pair's conductances).
  load_dependent: ClassVar[bool] = False
  # Whether the drive solves against the tile's row-port admittance (then
  # every row of a tile is read, and the chip keeps `y_port`).
  uses_port_admittance: ClassVar[bool] = False

  def port_admittance(self, g, wires):
    """The row-port admittance a chip keeps for this drive, or None."""
    del g, wires
    return None

  def tile_row_currents(self, u, g_r, y_port, r, nominal_load):
    """Column currents of one tile row in one input cycle (forward read).

    Args:
      u: `[Q, B, M]` this cycle's normalized DAC codes of the tile row's
        rows (passes, batch, rows).
      g_r: `[M, S, P, Tc, N]` the tile row's effective conductances.
      y_port: the chip's `[S, P, Tr, Tc, M, M]` row-port admittances, or
        None (`port_admittance`).
      r: the tile row's index (may be traced).
      nominal_load: the row load at which a divider is exact (siemens).

    Returns:
      `[Q, B, S, P, Tc, N]` currents (amperes).
    """
    del y_port, r, nominal_load
    # One GEMM per step: [Q B, M] @ [M, S P Tc N].
    v = dac_lib.dac_voltage(u, self.dac)
    return jax.lax.dot_general(v, g_r, (((2,), (0,)), ((), ())))

  def column_currents(self, u, g_bwd, m_read, nominal_load):
    """Row currents of the transposed read, per tile column.

    Args:
      u: `[C, Q, B, Tc, N]` normalized DAC codes of the column drivers
        (cycles, passes, batch, tile columns, columns).
      g_bwd: `[S, P, Tr, Tc, M, N]` backward effective conductances.
      m_read: the rows read (the layer's fan-in rows of the tile grid).
      nominal_load: the column load at which a divider is exact (siemens).

    Returns:
      One `[C, Q, B, S, P, m_read]` array of currents (amperes) per tile
      column.
    """
    del nominal_load
    s, p, tr, tc, m, n = g_bwd.shape
    c, q, b = u.shape[:3]
    # One GEMM per tile column, [C Q B, N] @ [N, S P Tr M] (XLA's CPU
    # backend runs the batched einsum several times slower).
    v = dac_lib.dac_voltage(u, self.dac)
    # [Tc, S P, Tr M, N]; the padding rows of the last tile row are not read.
    g_t = jnp.moveaxis(g_bwd, 3, 0).reshape(tc, s * p, tr * m, n)
    g_t = g_t[:, :, :m_read].reshape(tc, s * p * m_read, n)
    return [jax.lax.dot_general(v[:, :, :, t], g_t[t],
                                (((3,), (1,)), ((), ())))
            .reshape(c, q, b, s, p, m_read) for t in range(tc)]


@dataclasses.dataclass(frozen=True)
class DividerDrive(IdealDrive):
  """RxNN's resistive-divider DAC, loaded by each line's `G_eff` sum."""

  load_dependent: ClassVar[bool] = True

  def tile_row_currents(self, u, g_r, y_port, r, nominal_load):
    del y_port, r
    g_r = jnp.moveaxis(g_r, 0, 3)  # [S, P, Tc, M, N]
    u_t = u[:, :, None, None, None, :]
    g_load = dac_lib.row_load(g_r)  # [S, P, Tc, M]
    v = dac_lib.dac_voltage(u_t, self.dac, g_load, nominal_load=nominal_load)
    return jnp.einsum("qbsptm,sptmn->qbsptn", v, g_r)

  def column_currents(self, u, g_bwd, m_read, nominal_load):
    s, p, tr, tc, m, n = g_bwd.shape
    c, q, b = u.shape[:3]
    # Divider DACs on the columns, loaded by the column sums of G_eff_bwd.
    u = u[:, :, :, None, None, None, :, :]  # [C, Q, B, 1, 1, 1, Tc, N]
    g_load = g_bwd.sum(-2)  # Column loads: [S, P, Tr, Tc, N].
    v = dac_lib.dac_voltage(u, self.dac, g_load, nominal_load=nominal_load)
    i = jnp.einsum("cqbsprtn,sprtmn->cqbsprtm", v, g_bwd)
    return [i[..., t, :].reshape(c, q, b, s, p, tr * m)[..., :m_read]
            for t in range(tc)]


@dataclasses.dataclass(frozen=True)
class ExactDividerDrive(DividerDrive):
  """The divider solved against the tile's exact row-port admittance
  (forward reads; `crossbar.ChipSpec` refuses it with the transposed
  read)."""

  uses_port_admittance: ClassVar[bool] = True

  def port_admittance(self, g, wires):
    return dac_lib.port_admittance(g, wires)

  def tile_row_currents(self, u, g_r, y_port, r, nominal_load):
    g_r = jnp.moveaxis(g_r, 0, 3)  # [S, P, Tc, M, N]
    u_t = u[:, :, None, None, None, :]
    y_r = jnp.moveaxis(y_port, 2, 0)[r]
    u_t = jnp.broadcast_to(u_t, u_t.shape[:2] + g_r.shape[:-1])
    v = dac_lib.dac_voltage_exact(u_t, self.dac, y_r,
                                  nominal_load=nominal_load)
    return jnp.einsum("qbsptm,sptmn->qbsptn", v, g_r)


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
