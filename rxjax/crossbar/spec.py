"""`ChipSpec`: every setting of the simulated chip (tiles, mapping, device,
wires, converters, backward mode), frozen and hashable."""

from __future__ import annotations

import dataclasses

from rxjax import _checks
from rxjax import circuit
from rxjax import device as device_lib
from rxjax import mapping as mapping_lib
from rxjax import periphery

_BACKWARD_MODES = ("straight_through", "transposed_read")
_SOLVERS = ("exact", "aam")
# `gain_correction` and `adc_range` values (also config.retrain's fields).
GAIN_CORRECTIONS = ("none", "column")
ADC_RANGES = ("calibrated", "fitted")
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
    _checks.check_choice("inputs", self.inputs, periphery.INPUTS)
    _checks.check_choice("solver", self.solver, _SOLVERS)
    _checks.check_choice("pair_subtraction", self.pair_subtraction,
                         periphery.PAIR_SUBTRACTIONS)
    _checks.check_choice("gain_correction", self.gain_correction,
                         GAIN_CORRECTIONS)
    _checks.check_choice("adc_range", self.adc_range, ADC_RANGES)
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
