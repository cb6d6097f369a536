"""Peripheral converters of a crossbar tile: DAC, ADC and their calibration.

This package owns the first and the last stage of the three-stage read of
RxNN section V (fig. 4) and DESIGN.md section 3:

* input streaming: an input of `input_bits` is applied over `n_cycles(dac)`
  cycles of a `dac_bits` DAC (`stream`, `cycle_weights`); the digitized
  results of the cycles are combined by shift-and-add with `cycle_weights`;
* the DAC voltage of every row: ideal, RxNN's resistive divider loaded by the
  row load `G_Load` computed from `G_eff` (`dac_voltage`, `row_load`), or the
  same divider solved against the exact row-port admittance of the tile
  (`dac_voltage_exact`, `port_admittance`);
* the ADC: per-column gain and offset, a non-linear transfer curve, clipping
  and quantization over a calibrated full-scale current (`adc`,
  `adc_variation`);
* calibration of the input scale and of the ADC full scale from calibration
  batches (`calibrate`, `input_scale`, `full_scale`; TxSim IV-B).

It does not own the crossbar network (`rxjax.circuit`), the mapping of weights
(`mapping.py`) or the composition of the stages (`rxjax.crossbar`).

Signed inputs. Everything here sees only non-negative normalized inputs
`x01` in `[0, 1]` (the input divided by its calibrated scale). Signed inputs
(the first layer, backward errors) are applied as TWO PASSES: the positive
part `max(x, 0)` and then the negative part `max(-x, 0)`, each through the
same DAC -> crossbar -> ADC read, and the two digital results are subtracted.
`models.SignedInputs` makes the passes, which the crossbar read applies;
the converters never see a sign.

All functions are pure and traceable; the specs are frozen, hashable
dataclasses, to be passed as static arguments under `jax.jit`. Array
functions keep the floating dtype of their main input (float32 or float64).

The peripheral models of a chip are dispatched once, in `models.select`
(`crossbar.ChipSpec.periphery`): the DAC drive, the pair subtraction and the
input passes are objects whose methods the crossbar read calls.

Modules: `specs` (`DACSpec`, `ADCSpec`), `dac` (streaming, DAC voltages,
row loads), `readout` (the ADC), `calibration` (input scale, ADC full
scale), `models` (the models of a chip, chosen once per spec).
"""

from rxjax.periphery.calibration import calibrate, full_scale, input_scale
from rxjax.periphery.dac import (cycle_weights, dac_voltage, dac_voltage_exact,
                                 n_cycles, port_admittance, row_load, stream,
                                 stream_cycle, stream_levels)
from rxjax.periphery.models import (INPUTS, PAIR_SUBTRACTIONS, AnalogPairs,
                                    DigitalPairs, DividerDrive,
                                    ExactDividerDrive, IdealDrive,
                                    NonNegativeInputs, Periphery, SignedInputs,
                                    select)
from rxjax.periphery.readout import adc, adc_bipolar, adc_codes, adc_variation
from rxjax.periphery.specs import CALIBRATIONS, DAC_MODELS, ADCSpec, DACSpec

__all__ = ["ADCSpec", "AnalogPairs", "CALIBRATIONS", "DACSpec", "DAC_MODELS",
           "DigitalPairs", "DividerDrive", "ExactDividerDrive", "INPUTS",
           "IdealDrive", "NonNegativeInputs", "PAIR_SUBTRACTIONS", "Periphery",
           "SignedInputs", "select", "adc",
           "adc_bipolar", "adc_codes", "adc_variation", "calibrate",
           "cycle_weights", "dac_voltage", "dac_voltage_exact", "full_scale",
           "input_scale", "n_cycles", "port_admittance", "row_load", "stream",
           "stream_cycle", "stream_levels"]
