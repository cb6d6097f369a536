"""Configs checked whole before any work: every field, every spec a run needs.

Owns the config side of the edge (STYLE: configs stay at the edge):

* `CHIP_FIELDS`: every field of a config's `chip` block, the `crossbar.ChipSpec`
  field it sets, its unit and its valid range (docs/configs.md lists them).
* `chip_spec`: a `chip` block -> `crossbar.ChipSpec`, with errors that name the
  config field as the user types it (`chip.adc_bits`), not the spec field.
* `check`: a whole config -> the `Plan` of a run (every spec it will build:
  each evaluated tile size, the re-training chip, the Monte-Carlo chips, the
  TxSim chips and device updates), or a `ConfigError` naming the field, the
  value and the valid range. `train.py` and `eval.py` call it before they
  read data or touch the work directory.
* `unused_overrides`: command-line overrides of fields that the mode does not
  read (an error for train.py, a warning for eval.py).

It does not own the work directory, the resume rule (`rxjax.resume`) or the
checkpoints (`rxjax.checkpoints`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from typing import Any

from rxjax import _checks
from rxjax import circuit
from rxjax import circuit_grad
from rxjax import crossbar
from rxjax import data as data_lib
from rxjax import device as device_lib
from rxjax import mapping as mapping_lib
from rxjax import models
from rxjax import periphery

MODES = ("digital", "retrain", "txsim")
# `retrain.backward` (`rxjax.circuit_grad.BACKWARDS`; docs/training.md).
RETRAIN_BACKWARDS = circuit_grad.BACKWARDS
OPTIMIZERS = ("adam", "sgd")
G_EFF_MODES = ("exact", "interpolated", "aam", "none")
# Datasets that read `data_dir`; the others are bundled or generated.
_NEEDS_DATA_DIR = ("mnist_idx", "fashion_mnist_idx", "cifar10", "cifar100",
                   "image_folder")


class ConfigError(ValueError):
  """A config field out of its range; the message names the field as typed.

  Attributes:
    field: the dotted config field (`chip.adc_bits`).
  """

  def __init__(self, field: str, message: str):
    super().__init__(message)
    self.field = field


@dataclasses.dataclass(frozen=True)
class ChipField:
  """One `chip.<name>` config field.

  Attributes:
    name: the config field under `chip`.
    target: `(sub_spec, attribute)` of `crossbar.ChipSpec` it sets (sub_spec ""
      for a top-level ChipSpec field).
    unit: its unit ("" when dimensionless).
    valid: its valid range, as the docs and errors say it.
    bits: a bit count whose 0 means full precision (None in the spec).
  """
  name: str
  target: tuple[str, str]
  unit: str
  valid: str
  bits: bool = False


CHIP_FIELDS = (
    ChipField("tile_size", ("mapping", "tile_rows"), "cells",
              "int >= 1 (rows per tile; columns too unless tile_cols)"),
    ChipField("tile_cols", ("mapping", "tile_cols"), "cells",
              "None (square tiles) or int >= 1 (>= 2 with signed 'offset')"),
    ChipField("weight_bits", ("mapping", "weight_bits"), "bits",
              "int >= 0 (0: full precision)", bits=True),
    ChipField("signed", ("mapping", "signed"), "",
              "'differential' | 'offset'"),
    ChipField("weight_scale", ("mapping", "weight_scale"), "weight units",
              "None (max |w| per layer) or finite > 0"),
    ChipField("r_min_ohm", ("device", "r_min"), "ohm",
              "finite > 0 and < r_max_ohm"),
    ChipField("r_max_ohm", ("device", "r_max"), "ohm",
              "finite > r_min_ohm"),
    ChipField("device_bits", ("device", "device_bits"), "bits",
              "int >= 0 (0: analog device)", bits=True),
    ChipField("variation", ("device", "variation"), "",
              "'lognormal' | 'normal'"),
    ChipField("sigma", ("device", "sigma"), "fraction (sigma / mu)",
              "finite >= 0"),
    ChipField("write_noise", ("device", "write_noise"),
              "fraction of g_max - g_min", "finite >= 0"),
    ChipField("stuck_at_min", ("device", "stuck_at_min"), "probability",
              "[0, 1], stuck_at_min + stuck_at_max <= 1"),
    ChipField("stuck_at_max", ("device", "stuck_at_max"), "probability",
              "[0, 1], stuck_at_min + stuck_at_max <= 1"),
    ChipField("read_noise", ("device", "read_noise"), "fraction per read",
              "finite >= 0"),
    ChipField("r_row_ohm", ("wires", "r_row"), "ohm per cell segment",
              "finite >= 0"),
    ChipField("r_col_ohm", ("wires", "r_col"), "ohm per cell segment",
              "finite >= 0"),
    ChipField("r_source_ohm", ("wires", "r_source"), "ohm", "finite >= 0"),
    ChipField("r_sense_ohm", ("wires", "r_sense"), "ohm", "finite >= 0"),
    ChipField("r_source_backward_ohm", ("wires", "r_source_backward"), "ohm",
              "None (= r_source_ohm) or finite >= 0"),
    ChipField("r_sense_backward_ohm", ("wires", "r_sense_backward"), "ohm",
              "None (= r_sense_ohm) or finite >= 0"),
    ChipField("input_bits", ("dac", "input_bits"), "bits",
              "int >= 0 (0: full precision)", bits=True),
    ChipField("dac_bits", ("dac", "dac_bits"), "bits",
              "int >= 0 (0: one cycle)", bits=True),
    ChipField("v_read", ("dac", "v_read"), "volt", "finite > 0"),
    ChipField("dac_model", ("dac", "model"), "",
              "'ideal' | 'divider' | 'divider_exact'"),
    ChipField("dac_r_pd_ohm", ("dac", "r_pd"), "ohm", "finite > 0"),
    ChipField("dac_v_ref", ("dac", "v_ref"), "volt", "finite > v_read"),
    ChipField("dac_nominal_load", ("dac", "nominal_load"), "siemens",
              "None (a mid-state tile row) or finite >= 0"),
    ChipField("dac_calibration", ("dac", "calibration"), "",
              "'max' | 'percentile'"),
    ChipField("dac_percentile", ("dac", "percentile"), "percent",
              "(0, 100]"),
    ChipField("adc_bits", ("adc", "bits"), "bits",
              "int >= 0 (0: no quantization)", bits=True),
    ChipField("adc_calibration", ("adc", "calibration"), "",
              "'max' | 'percentile'"),
    ChipField("adc_percentile", ("adc", "percentile"), "percent",
              "(0, 100]"),
    ChipField("adc_nonlinearity", ("adc", "nonlinearity"), "",
              "finite, |alpha| <= 1"),
    ChipField("adc_offset_sigma", ("adc", "offset_sigma"),
              "fraction of full scale", "finite >= 0"),
    ChipField("adc_gain_sigma", ("adc", "gain_sigma"), "fraction",
              "finite >= 0"),
    ChipField("backward", ("", "backward"), "",
              "'straight_through' | 'transposed_read'"),
    ChipField("inputs", ("", "inputs"), "", "'signed' | 'non_negative'"),
    ChipField("solver", ("", "solver"), "", "'exact' | 'aam'"),
    ChipField("aam_paths", ("", "aam_paths"), "path families", "int >= 1"),
    ChipField("pair_subtraction", ("", "pair_subtraction"), "",
              "'digital' | 'analog'"),
)

_BY_TARGET = {f.target: f for f in CHIP_FIELDS}
_SUBSPECS = {"mapping": mapping_lib.MappingSpec,
             "device": device_lib.DeviceSpec, "wires": circuit.Wires,
             "dac": periphery.DACSpec, "adc": periphery.ADCSpec}


def chip_defaults() -> dict[str, Any]:
  """Each chip field's value that reproduces the `crossbar.ChipSpec()` default
  (bit counts: 0 for None); work directories written before a field existed
  resume at this value."""
  spec = crossbar.ChipSpec()
  out = {}
  for f in CHIP_FIELDS:
    sub, attr = f.target
    value = getattr(getattr(spec, sub) if sub else spec, attr)
    out[f.name] = 0 if f.bits and value is None else value
  out["tile_cols"] = None
  return out


def _bits(value, name):
  """Config bit counts: 0 means full precision (None in the specs)."""
  if value is None or (_checks.is_int(value) and value == 0):
    return None
  if not _checks.is_int(value) or value < 0:
    raise ConfigError(name, f"`{name}` must be an int >= 0 (0 = full "
                      f"precision), got {value!r}")
  return int(value)


def _rename(message: str, names: dict[str, str]) -> tuple[str, str | None]:
  """The spec's message with spec field names replaced by config fields."""
  first = None

  def sub(m):
    nonlocal first
    name = names.get(m.group(1))
    if name is None:
      return m.group(0)
    first = first or name
    return f"`{name}`"

  message = re.sub(r"`([\w.]+)`", sub, message)
  # "got r_min=2e6" and "mapping.signed='offset'" in the specs' messages.
  message = re.sub(r"(?<![\w.`])([\w.]+)=",
                   lambda m: names.get(m.group(1), m.group(1)) + "=", message)
  return message, first


def chip_spec(chip, *, tile_size: int | None = None,
              variation: bool = True, prefix: str = "chip") -> crossbar.ChipSpec:
  """The `crossbar.ChipSpec` of a config's `chip` block.

  Args:
    chip: the block (fields in `CHIP_FIELDS`, documented in
      `configs/lenet_mnist.py` and docs/configs.md). Fields it lacks take
      `chip_defaults()`.
    tile_size: overrides `chip.tile_size` (the rows, and the columns unless
      `chip.tile_cols` is set).
    variation: False sets the process variation to 0 (the "non-ideal
      without variation" evaluations and re-training).
    prefix: the block's dotted name in error messages.

  Raises:
    ConfigError: a field out of range; the message names `prefix.<field>`.
  """
  defaults = chip_defaults()
  get = lambda name: chip.get(name, defaults[name]) if hasattr(
      chip, "get") else defaults[name]
  values = {}
  for f in CHIP_FIELDS:
    value = get(f.name)
    if f.bits:
      value = _bits(value, f"{prefix}.{f.name}")
    values[f.target] = value
  if tile_size is not None:
    values[("mapping", "tile_rows")] = tile_size
  if values[("mapping", "tile_cols")] is None:
    values[("mapping", "tile_cols")] = values[("mapping", "tile_rows")]
  if not variation:
    values[("device", "sigma")] = 0.0
  parts = {}
  for sub, kind in _SUBSPECS.items():
    kwargs = {attr: v for (s, attr), v in values.items() if s == sub}
    names = {attr: f"{prefix}.{_BY_TARGET[(sub, attr)].name}"
             for attr in kwargs}
    if sub == "mapping" and tile_size is not None:
      names["tile_rows"] = f"tile size {tile_size} (of {prefix}.tile_size)"
    parts[sub] = _build(kind, kwargs, names)
  top = {attr: v for (s, attr), v in values.items() if s == ""}
  names = {attr: f"{prefix}.{_BY_TARGET[('', attr)].name}" for attr in top}
  for (sub, attr), f in _BY_TARGET.items():
    if sub:
      names[f"{sub}.{attr}"] = f"{prefix}.{f.name}"
  return _build(crossbar.ChipSpec, {**parts, **top}, names)


def _build(kind, kwargs, names):
  try:
    return kind(**kwargs)
  except (TypeError, ValueError) as e:
    message, field = _rename(str(e), names)
    raise ConfigError(field or next(iter(names.values())), message) from None


# ---------------------------------------------------------------------------
# Scalar fields.


def _int(config, name, low, *, none_ok=False):
  value = _get(config, name)
  if value is None and none_ok:
    return None
  if not (_checks.is_int(value) and value >= low):
    what = f"None or an int >= {low}" if none_ok else f"an int >= {low}"
    raise ConfigError(name, f"`{name}` must be {what}, got {value!r}")
  return int(value)


def _float(config, name, *, low=None, high=None, low_open=False,
           high_open=False):
  value = _get(config, name)
  lo = "" if low is None else f"{'>' if low_open else '>='} {low}"
  hi = "" if high is None else f"{'<' if high_open else '<='} {high}"
  what = "a finite number" + (f" {lo}" if lo else "") + (
      f" and {hi}" if lo and hi else f" {hi}" if hi else "")
  try:
    x = _checks.as_finite_float(name, value, what)
  except ValueError as e:
    raise ConfigError(name, str(e)) from None
  bad = (low is not None and (x < low or (low_open and x == low))) or (
      high is not None and (x > high or (high_open and x == high)))
  if bad:
    raise ConfigError(name, f"`{name}` must be {what}, got {value!r}")
  return x


def _choice(config, name, choices):
  value = _get(config, name)
  if value not in choices:
    raise ConfigError(name, f"`{name}` must be one of "
                      f"{', '.join(map(repr, choices))}, got {value!r}")
  return value


def _get(config, dotted):
  node = config
  for part in dotted.split("."):
    node = node[part]
  return node


def _has(config, dotted) -> bool:
  node = config
  for part in dotted.split("."):
    if not hasattr(node, "keys") or part not in node.keys():
      return False
    node = node[part]
  return True


# ---------------------------------------------------------------------------
# The whole config.


@dataclasses.dataclass(frozen=True)
class Plan:
  """Every spec a run builds, made before any work.

  Attributes:
    eval_specs: `{(mode, size): ChipSpec}` for "ideal" / "nonideal" and each of
      `eval.tile_sizes` (train.py) or `chip.tile_size` (eval.py).
    retrain_size: tile size re-trained for and used for the chip study.
    retrain_spec: the re-training chip (no variation), or None.
    chips_spec: the Monte-Carlo chip (with variation), or None.
    txsim: `{name: (ChipSpec, UpdateSpec)}` of a txsim run, else empty.
    retrain_backward: `retrain.backward`, the re-training gradient.
  """
  eval_specs: dict
  retrain_size: int
  retrain_spec: crossbar.ChipSpec | None
  chips_spec: crossbar.ChipSpec | None
  txsim: dict
  retrain_backward: str = "straight_through"


def retrain_tile_size(config) -> int:
  """`retrain.tile_size`, or `chip.tile_size` when it is None."""
  size = config.retrain.get("tile_size") if _has(config, "retrain") else None
  return config.chip.tile_size if size is None else size


def _readout(config) -> tuple[str, str]:
  """Re-training's per-column readout gain and ADC range fit
  (docs/training.md), checked; the Monte-Carlo chips of a re-trained
  network get them too."""
  values = []
  for field, valid in (("gain_correction", crossbar.GAIN_CORRECTIONS),
                       ("adc_range", crossbar.ADC_RANGES)):
    value = config.retrain.get(field, valid[0])
    if value not in valid:
      raise ConfigError(f"retrain.{field}", f"`retrain.{field}` must be "
                        f"{' or '.join(map(repr, valid))}, got {value!r}")
    values.append(value)
  return tuple(values)


def check(config, *, entry: str = "train_and_evaluate") -> Plan:
  """Checks every field of `config` and builds every spec the run needs.

  Args:
    config: a `configs/*.py` config.
    entry: "train_and_evaluate" (train.py) or "evaluate" (eval.py).

  Returns:
    The `Plan`.

  Raises:
    ConfigError: the first bad field; the message names it as typed, its
      value and its valid range.
  """
  mode = _choice(config, "mode", MODES)
  if config.model not in models.NAMES:
    raise ConfigError("model", f"`model` must be one of "
                      f"{', '.join(models.NAMES)}, got {config.model!r}")
  _choice(config, "dataset", data_lib.NAMES)
  data_dir = config.get("data_dir")
  if config.dataset in _NEEDS_DATA_DIR:
    if not data_dir or not os.path.isdir(data_dir):
      raise ConfigError("data_dir", f"`data_dir` must be the directory of "
                        f"the {config.dataset!r} files, got {data_dir!r}"
                        + ("" if not data_dir else " (not a directory)"))
  if "image_size" in config:
    _int(config, "image_size", 1)
  seed = _int(config, "seed", 0)
  if seed >= 2**31:
    raise ConfigError("seed", f"`seed` must be an int in [0, 2**31), got "
                      f"{seed!r}")
  _int(config, "batch_size", 1)
  _int(config, "num_epochs", 0)
  optimizer = _choice(config, "optimizer", OPTIMIZERS)
  _float(config, "learning_rate", low=0, low_open=True)
  if optimizer == "sgd" or "momentum" in config:
    _float(config, "momentum", low=0, high=1, high_open=True)
  _float(config, "weight_decay", low=0)
  _int(config, "log_every_steps", 0)
  if "grad_blocks" in config:
    _int(config, "grad_blocks", 0)
  _int(config, "eval.num_chips", 0)
  _int(config, "eval.batch_size", 1)
  _int(config, "eval.calibration_size", 1)
  if mode == "retrain" and entry == "train_and_evaluate":
    init = config.get("init_workdir")
    if init is not None and not isinstance(init, str):
      raise ConfigError("init_workdir", "`init_workdir` must be None or a "
                        f"directory, got {init!r}")
  _int(config, "chip.tile_size", 1)
  base = chip_spec(config.chip)  # Every chip field, at its own tile size.
  num_chips = config.eval.num_chips
  if entry == "evaluate" and mode == "txsim":  # Each network on its chip.
    return Plan({}, config.chip.tile_size, None, None, txsim_plan(config))
  if entry == "evaluate":
    size = config.chip.tile_size
    eval_specs = {(m, size): _eval_spec(config, m, size)
                  for m in ("ideal", "nonideal")}
    chips = base
    if mode == "retrain":
      # The re-trained network on the chips training evaluated it on: its
      # readout calibration is part of how those chips are programmed.
      gain, adc_range = _readout(config)
      eval_specs[("nonideal", size)] = eval_specs[("nonideal", size)].replace(
          gain_correction=gain, adc_range=adc_range)
      chips = base.replace(gain_correction=gain, adc_range=adc_range)
    return Plan(eval_specs, size, None,
                chips if num_chips > 0 else None, {})
  if mode == "txsim":
    return Plan({}, config.chip.tile_size, None, None, txsim_plan(config))
  sizes = config.eval.tile_sizes
  if isinstance(sizes, int) or not hasattr(sizes, "__iter__") or not len(
      sizes) or not all(_checks.is_int(s) and s >= 1 for s in sizes):
    raise ConfigError("eval.tile_sizes", "`eval.tile_sizes` must be a "
                      f"non-empty tuple of ints >= 1, got {sizes!r}")
  eval_specs = {}
  for size in sizes:
    for m in ("ideal", "nonideal"):
      eval_specs[(m, size)] = _eval_spec(config, m, size,
                                         field="eval.tile_sizes")
  _int(config, "retrain.num_epochs", 0)
  _float(config, "retrain.learning_rate", low=0, low_open=True)
  _int(config, "retrain.tile_size", 1, none_ok=True)
  size = retrain_tile_size(config)
  retrain = _sized(config, size, False, "retrain.tile_size")
  chips = _sized(config, size, True, "retrain.tile_size")
  gain, adc_range = _readout(config)
  retrain = retrain.replace(gain_correction=gain, adc_range=adc_range)
  if config.retrain.num_epochs > 0:
    chips = chips.replace(gain_correction=gain, adc_range=adc_range)
  backward = retrain_backward(config)
  if backward != "straight_through" and retrain.backward != "straight_through":
    raise ConfigError(
        "retrain.backward", f"`retrain.backward` = {backward!r} has its own "
        "input gradient (the chip's W_eff): it needs `chip.backward` = "
        f"'straight_through', got {retrain.backward!r}")
  return Plan(eval_specs, size,
              retrain if config.retrain.num_epochs > 0 else None,
              chips if num_chips > 0 else None, {}, backward)


def retrain_backward(config) -> str:
  """`retrain.backward` (default "straight_through"), checked."""
  value = (config.retrain.get("backward", "straight_through")
           if _has(config, "retrain") else "straight_through")
  if value not in RETRAIN_BACKWARDS:
    raise ConfigError(
        "retrain.backward", "`retrain.backward` must be one of "
        f"{', '.join(repr(v) for v in RETRAIN_BACKWARDS)}, got {value!r}")
  return value


def _sized(config, size, variation, field):
  try:
    return chip_spec(config.chip, tile_size=size, variation=variation)
  except ConfigError as e:
    if e.field.startswith("tile size"):
      raise ConfigError(field, f"`{field}` = {size!r}: {e}") from None
    raise


def _eval_spec(config, mode, size, field="chip.tile_size"):
  from rxjax import nn as rnn  # pylint: disable=g-import-not-at-top
  return rnn.mode_spec(mode, _sized(config, size, False, field))


def txsim_plan(config) -> dict:
  """Cross-Ideal and Cross-NI `(ChipSpec, UpdateSpec)` of a txsim config.

  Raises:
    ConfigError: a bad `txsim.*` or `chip.*` field.
  """
  g_eff = _choice(config, "txsim.g_eff", G_EFF_MODES)
  _int(config, "txsim.interval", 1)
  paths = _int(config, "txsim.aam_paths", 1)
  spec = chip_spec(config.chip).replace(backward="transposed_read")
  if g_eff == "none":
    spec = spec.replace(wires=circuit.Wires.ideal())
  elif g_eff == "aam":
    spec = spec.replace(solver="aam", aam_paths=paths)
  t = config.txsim
  try:
    update = device_lib.UpdateSpec(nu=t.nu, gamma=t.gamma)
  except ValueError as e:
    message, field = _rename(str(e), {"nu": "txsim.nu",
                                      "gamma": "txsim.gamma"})
    raise ConfigError(field or "txsim.nu", message) from None
  if spec.dac.model == "divider_exact":
    raise ConfigError("chip.dac_model", "`chip.dac_model` = "
                      "'divider_exact' is forward-only; TxSim reads "
                      "backwards through the chip: use 'divider' or 'ideal'")
  return {"cross_ideal": (spec.cross_ideal(), device_lib.UpdateSpec.ideal()),
          "cross_ni": (spec, update)}


# ---------------------------------------------------------------------------
# Fields a mode does not read.


def unused_fields(config, entry: str = "train_and_evaluate"
                  ) -> dict[str, str]:
  """`{dotted field: why}` of the fields this entry and mode never read."""
  mode = config.mode
  unused = {}

  def add(fields, why):
    for f in fields:
      unused.setdefault(f, why)

  if config.get("optimizer") == "adam":
    add(["momentum"], "with optimizer 'adam'")
  if config.get("dataset") not in _NEEDS_DATA_DIR:
    add(["data_dir"], f"by dataset {config.get('dataset')!r}")
  if config.get("dataset") != "image_folder":
    add(["image_size"], f"by dataset {config.get('dataset')!r}")
  chip = config.chip
  if chip.get("solver", "exact") != "aam":
    add(["chip.aam_paths"], "unless chip.solver is 'aam'")
  if chip.get("dac_calibration", "max") != "percentile":
    add(["chip.dac_percentile"], "unless chip.dac_calibration is "
        "'percentile'")
  if chip.get("adc_calibration", "max") != "percentile":
    add(["chip.adc_percentile"], "unless chip.adc_calibration is "
        "'percentile'")
  if chip.get("dac_model", "ideal") == "ideal":
    add(["chip.dac_r_pd_ohm", "chip.dac_v_ref", "chip.dac_nominal_load"],
        "with chip.dac_model 'ideal'")
  training = ["batch_size", "grad_blocks", "num_epochs", "optimizer",
              "learning_rate", "momentum", "weight_decay",
              "log_every_steps", "mode",
              "init_workdir", "eval.tile_sizes", "retrain.num_epochs",
              "retrain.learning_rate", "retrain.tile_size",
              "retrain.backward"]
  if entry == "evaluate":
    # eval.py reads `mode` (which network it evaluates), and in mode txsim
    # the chips and device updates the networks were trained with.
    add([f for f in training if f != "mode"],
        "by eval.py (it evaluates at chip.tile_size)")
    if mode == "txsim":
      add(["eval.num_chips", "chip.backward", "chip.solver",
           "chip.aam_paths"], "by eval.py in mode 'txsim'")
      add(["txsim.interval"], "by eval.py")
      if config.txsim.g_eff != "aam":
        add(["txsim.aam_paths"], "unless txsim.g_eff is 'aam'")
    else:
      add([f"txsim.{k}" for k in config.get("txsim", {})],
          f"by eval.py in mode {mode!r}")
    return unused
  if mode != "retrain":
    add(["init_workdir"], f"in mode {mode!r}")
  if mode == "retrain":
    add(["num_epochs", "learning_rate"], "in mode 'retrain' (no digital "
        "training)")
  if mode == "txsim":
    add(["eval.tile_sizes", "eval.num_chips", "retrain.num_epochs",
         "retrain.learning_rate", "retrain.tile_size", "retrain.backward"],
        "in mode 'txsim'")
    add(["chip.backward", "chip.solver", "chip.aam_paths"],
        "in mode 'txsim' (txsim.g_eff sets it)")
    t = config.txsim
    if t.g_eff != "interpolated":
      add(["txsim.interval"], "unless txsim.g_eff is 'interpolated'")
    if t.g_eff != "aam":
      add(["txsim.aam_paths"], "unless txsim.g_eff is 'aam'")
  elif config.retrain.num_epochs == 0:
    add(["retrain.learning_rate", "retrain.backward"],
        "with retrain.num_epochs 0")
  return unused


def unused_overrides(config, overrides, entry="train_and_evaluate"
                     ) -> dict[str, str]:
  """`{field: why}` of the overridden fields (`--config.<field>=`) that the
  run ignores."""
  unused = unused_fields(config, entry)
  return {k: unused[k] for k in sorted(overrides) if k in unused}
