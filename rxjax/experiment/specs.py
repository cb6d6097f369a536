"""Config -> specs: the one place a run's config blocks become chip specs.

STYLE: configs stay at the edge. Every chip field, its spec field, unit and
range live in `rxjax.validate`, which also checks a whole config and builds
every spec of a run before any work; this module names the specs each
phase of a run uses.
"""

from __future__ import annotations

import ml_collections

from rxjax import crossbar
from rxjax import validate

# A config's `chip` block -> `crossbar.ChipSpec` (errors name the field).
chip_spec = validate.chip_spec


def retrain_spec(config: ml_collections.ConfigDict, **kwargs) -> crossbar.ChipSpec:
  """The chip re-training runs on: `chip_spec(config.chip, **kwargs)` with
  `config.retrain.gain_correction` (default "column": each layer's outputs
  get a per-column digital gain fitted when the chip is programmed, as
  real chips calibrate their readout; docs/training.md says why re-training
  needs it) and `config.retrain.adc_range` (default "fitted": each layer's
  ADC full scale picked by the error of its readings, which coarse ADCs
  need)."""
  return chip_spec(config.chip, **kwargs).replace(
      gain_correction=config.retrain.get("gain_correction", "none"),
      adc_range=config.retrain.get("adc_range", "calibrated"))


def txsim_specs(config) -> dict:
  """Cross-Ideal and Cross-NI (spec, update) pairs of a txsim config
  (`validate.txsim_plan`: errors name the config field)."""
  return validate.txsim_plan(config)
