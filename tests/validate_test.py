"""Configs checked before any work (issue 20), every chip field reachable
(issue 19 part 3).

References: the ranges documented in docs/configs.md and the specs'
dataclass fields (the round trip), `crossbar.ChipSpec()` defaults, the work
directory's absence (no work ran), the exit status and stderr of train.py.
"""

import dataclasses
import json
import math
import os
import subprocess
import sys
import time

from absl import flags
import hypothesis
from hypothesis import strategies as st
from ml_collections import config_flags
import pytest

from rxjax import circuit
from rxjax import crossbar
from rxjax import experiment
from rxjax import resume
from rxjax import validate

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from configs import lenet_mnist  # pylint: disable=g-import-not-at-top

ROOT = os.path.join(os.path.dirname(__file__), "..")
FAST = hypothesis.settings(max_examples=25, deadline=None)


def _set(config, dotted, value):
  *path, leaf = dotted.split(".")
  node = config
  for p in path:
    node = node[p]
  node[leaf] = value
  return config


def _refused(tmp_path, dotted, value, entry="train_and_evaluate"):
  """Runs the entry with one bad field; returns the error. Asserts that no
  work ran: it failed within a second and left no work directory."""
  config = _set(lenet_mnist.get_config(), dotted, value)
  workdir = tmp_path / "run"
  start = time.time()
  with pytest.raises(validate.ConfigError) as e:
    getattr(experiment, entry)(config, str(workdir))
  assert time.time() - start < 1.0
  assert not workdir.exists()
  assert e.value.field == dotted
  assert f"`{dotted}`" in str(e.value)
  return str(e.value)


# ---------------------------------------------------------------------------
# One test per case of issue 20.


@pytest.mark.parametrize("dotted,value,valid", [
    ("chip.adc_bits", -1, "int >= 0"),
    ("chip.r_min_ohm", 2e6, "< `chip.r_max_ohm`"),
    ("retrain.tile_size", -4, "int >= 1"),
    ("learning_rate", -0.01, "> 0"),
    ("batch_size", 0, "int >= 1"),
    ("seed", -1, "int >= 0"),
    ("dataset", "mnist_bundeld", "'mnist_bundled'"),
    ("eval.tile_sizes", (16, 0), "ints >= 1"),
    ("chip.pair_subtraction", "analogue", "'analog'"),
    ("chip.v_read", math.nan, "finite"),
])
def test_a_bad_field_fails_before_any_work_naming_it(tmp_path, dotted, value,
                                                     valid):
  message = _refused(tmp_path, dotted, value)
  assert valid in message and repr(value)[:6] in message


def test_a_bad_chip_field_fails_eval_before_any_work(tmp_path):
  _refused(tmp_path, "chip.adc_bits", -1, entry="evaluate")


def test_chip_tile_size_sets_the_retraining_and_monte_carlo_chips():
  """`--config.chip.tile_size=32` is read by train.py (issue 20, case 1)."""
  config = lenet_mnist.get_config()
  config.chip.tile_size = 32
  plan = validate.check(config)
  assert plan.retrain_size == 32
  for spec in (plan.retrain_spec, plan.chips_spec):
    assert spec.mapping.tile_rows == spec.mapping.tile_cols == 32
  assert plan.chips_spec.device.sigma == config.chip.sigma
  assert plan.retrain_spec.device.sigma == 0
  assert sorted(plan.eval_specs) == sorted(
      (m, s) for m in ("ideal", "nonideal") for s in (16, 32, 64))
  config.retrain.tile_size = 16  # An explicit value wins.
  assert validate.check(config).retrain_spec.mapping.tile_rows == 16


def test_unused_overrides_are_named_with_the_reason():
  config = lenet_mnist.get_config()  # adam
  unused = validate.unused_overrides(config, {"momentum": 0.5,
                                              "chip.adc_bits": 4})
  assert unused == {"momentum": "with optimizer 'adam'"}
  config.mode = "txsim"
  config.txsim = {"g_eff": "exact", "interval": 10, "aam_paths": 3,
                  "nu": 0.01, "gamma": 5.0}
  assert set(validate.unused_overrides(
      config, {"retrain.tile_size": 8, "chip.solver": "aam",
               "txsim.interval": 3})) == {
                   "retrain.tile_size", "chip.solver", "txsim.interval"}
  # eval.py reads the mode (which networks) and, in mode txsim, the device
  # updates the networks were trained with.
  assert validate.unused_overrides(
      config, {"mode": "txsim", "txsim.nu": 0.1, "txsim.interval": 3},
      entry="evaluate") == {"txsim.interval": "by eval.py"}


def test_the_command_line_prints_one_line_and_writes_nothing(tmp_path):
  out = subprocess.run(
      [sys.executable, "train.py", "--config=configs/lenet_mnist.py",
       f"--workdir={tmp_path}/run", "--config.chip.adc_bits=-1"],
      cwd=ROOT, capture_output=True, text=True, timeout=120,
      env={**os.environ, "PYTHONPATH": ROOT})
  assert out.returncode == 2
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and "Traceback" not in out.stderr
  assert "`chip.adc_bits`" in lines[0] and "-1" in lines[0]
  assert ">= 0" in lines[0]
  assert not os.path.exists(tmp_path / "run")


def test_later_errors_print_one_line_too(tmp_path):
  out = subprocess.run(
      [sys.executable, "eval.py", "--config=configs/lenet_mnist.py",
       f"--workdir={tmp_path}/none"],
      cwd=ROOT, capture_output=True, text=True, timeout=120,
      env={**os.environ, "PYTHONPATH": ROOT})
  assert out.returncode == 1
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and "run train.py" in lines[0], out.stderr


def test_nonfinite_images_in_a_dataset_are_refused(monkeypatch):
  from rxjax import data as data_lib
  real = data_lib.load

  def poisoned(*args, **kwargs):
    d = real(*args, **kwargs)
    x = d.x_train.copy()
    x[3, 1, 1, 0] = math.nan
    return d._replace(x_train=x)

  monkeypatch.setattr(data_lib, "load", poisoned)
  config = lenet_mnist.get_config()
  config.dataset = "digits"
  with pytest.raises(ValueError, match=r"`digits.x_train`.*1 NaN.*"
                     r"\(3, 1, 1, 0\)"):
    experiment.setup(config)


def test_a_truncated_results_json_names_the_file(tmp_path):
  wd = experiment.Workdir(str(tmp_path), lenet_mnist.get_config())
  (tmp_path / "results.json").write_text('{"fp32": 0.9')
  with pytest.raises(ValueError, match="results.json is unreadable.*delete"):
    wd.result("fp32", lambda: 1.0)


# ---------------------------------------------------------------------------
# The resume rule.


def test_resume_rule_refuses_changes_to_finished_phases(tmp_path):
  path = str(tmp_path)
  os.makedirs(tmp_path / "checkpoints" / "digital" / "3")
  resume.judge(path, ["chip.adc_bits", "retrain.learning_rate"])  # Later.
  with pytest.raises(resume.ResumeError, match="num_epochs") as e:
    resume.judge(path, ["num_epochs", "chip.adc_bits"])
  assert e.value.fields == ["num_epochs"]
  assert "checkpoints/digital" in str(e.value)
  os.makedirs(tmp_path / "checkpoints" / "retrain" / "1")
  with pytest.raises(resume.ResumeError) as e:
    resume.judge(path, ["chip.adc_bits", "log_every_steps"])
  assert e.value.fields == ["chip.adc_bits"]
  # The finished digital training can be reused: the message says how.
  assert f"--config.mode=retrain --config.init_workdir={path}" in str(
      e.value)
  resume.judge(path, ["log_every_steps", "eval.batch_size"])  # Inert.


def test_an_accepted_change_keeps_the_old_evaluations(tmp_path):
  config = lenet_mnist.get_config()
  experiment.Workdir(str(tmp_path), config)
  os.makedirs(tmp_path / "checkpoints" / "digital" / "1")
  (tmp_path / "results.json").write_text('{"fp32": 0.5}')
  changed = lenet_mnist.get_config()
  changed.chip.adc_bits = 6
  experiment.Workdir(str(tmp_path), changed)
  assert not (tmp_path / "results.json").exists()
  kept = json.loads((tmp_path / "superseded" / "1" / "results.json"
                     ).read_text())
  assert kept == {"fp32": 0.5}
  stored = json.loads((tmp_path / "config.json").read_text())
  assert stored["chip"]["adc_bits"] == 6


def test_a_failed_early_run_does_not_block_the_fixed_rerun(tmp_path):
  bad = lenet_mnist.get_config()
  bad.retrain.tile_size = -4
  with pytest.raises(validate.ConfigError):
    experiment.train_and_evaluate(bad, str(tmp_path))
  assert not (tmp_path / "config.json").exists()


# ---------------------------------------------------------------------------
# Every chip field from the config (and the command line) to the spec.


# A valid non-default value of every chip field, and what the spec holds.
_VALUES = {
    "tile_size": (8, 8), "tile_cols": (12, 12), "weight_bits": (4, 4),
    "signed": ("offset", "offset"), "weight_scale": (0.5, 0.5),
    "r_min_ohm": (50e3, 50e3), "r_max_ohm": (2e6, 2e6),
    "device_bits": (0, None), "variation": ("normal", "normal"),
    "sigma": (0.2, 0.2), "write_noise": (0.01, 0.01),
    "stuck_at_min": (0.01, 0.01), "stuck_at_max": (0.02, 0.02),
    "read_noise": (0.03, 0.03), "r_row_ohm": (2.0, 2.0),
    "r_col_ohm": (3.0, 3.0), "r_source_ohm": (50.0, 50.0),
    "r_sense_ohm": (60.0, 60.0), "r_source_backward_ohm": (70.0, 70.0),
    "r_sense_backward_ohm": (80.0, 80.0), "input_bits": (6, 6),
    "dac_bits": (2, 2), "v_read": (0.2, 0.2), "dac_model": ("divider",
                                                          "divider"),
    "dac_r_pd_ohm": (5e3, 5e3), "dac_v_ref": (0.6, 0.6),
    "dac_nominal_load": (1e-4, 1e-4),
    "dac_calibration": ("percentile", "percentile"),
    "dac_percentile": (99.5, 99.5), "adc_bits": (6, 6),
    "adc_calibration": ("percentile", "percentile"),
    "adc_percentile": (99.9, 99.9), "adc_nonlinearity": (0.1, 0.1),
    "adc_offset_sigma": (0.01, 0.01), "adc_gain_sigma": (0.02, 0.02),
    "backward": ("transposed_read", "transposed_read"),
    "inputs": ("signed", "signed"), "solver": ("aam", "aam"),
    "aam_paths": (2, 2), "pair_subtraction": ("analog", "analog"),
}


def test_every_spec_field_has_a_documented_config_field():
  targets = {f.target for f in validate.CHIP_FIELDS}
  for sub, kind in (("mapping", crossbar.mapping_lib.MappingSpec),
                    ("device", crossbar.device_lib.DeviceSpec),
                    ("wires", circuit.Wires),
                    ("dac", crossbar.periphery.DACSpec),
                    ("adc", crossbar.periphery.ADCSpec)):
    for field in dataclasses.fields(kind):
      assert (sub, field.name) in targets, (sub, field.name)
  for field in dataclasses.fields(crossbar.ChipSpec):
    # gain_correction and adc_range are the re-training's readout
    # calibration, set by `retrain.gain_correction` / `retrain.adc_range`
    # (documented with the retrain fields below).
    if field.name not in ("mapping", "device", "wires", "dac", "adc",
                          "gain_correction", "adc_range"):
      assert ("", field.name) in targets, field.name
  chip = lenet_mnist.chip_config()
  docs = open(os.path.join(ROOT, "docs", "configs.md")).read()
  source = open(os.path.join(ROOT, "configs", "lenet_mnist.py")).read()
  assert sorted(chip.keys()) == sorted(f.name for f in validate.CHIP_FIELDS)
  assert sorted(_VALUES) == sorted(chip.keys())
  for f in validate.CHIP_FIELDS:
    assert f"`chip.{f.name}`" in docs
    assert f"chip.{f.name} = " in source
  config = lenet_mnist.get_config()
  for dotted in ([k for k in config.keys() if k not in ("chip", "eval",
                                                         "retrain")]
                 + [f"{b}.{k}" for b in ("eval", "retrain")
                    for k in config[b].keys()]):
    assert f"`{dotted}`" in docs, dotted


@pytest.mark.parametrize("name", sorted(_VALUES))
def test_every_chip_field_round_trips_from_config_to_spec(name):
  value, want = _VALUES[name]
  chip = lenet_mnist.chip_config()
  chip[name] = value
  if name == "pair_subtraction":
    chip.signed = "differential"
  spec = validate.chip_spec(chip)
  field = next(f for f in validate.CHIP_FIELDS if f.name == name)
  sub, attr = field.target
  assert getattr(getattr(spec, sub) if sub else spec, attr) == want
  # Every other field keeps the value of the unchanged config.
  base = validate.chip_spec(lenet_mnist.chip_config())
  for other in validate.CHIP_FIELDS:
    s, a = other.target
    if other.name == name or (name == "tile_size" and a == "tile_cols"):
      continue
    assert getattr(getattr(spec, s) if s else spec, a) == getattr(
        getattr(base, s) if s else base, a), other.name


def test_every_chip_field_is_settable_on_the_command_line():
  path = os.path.join(ROOT, "configs", "lenet_mnist.py")
  argv = ["prog", f"--config={path}"] + [
      f"--config.chip.{k}={v}" for k, (v, _) in _VALUES.items()]
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, "", flag_values=fv,
                                  lock_config=True, sys_argv=argv)
  fv(argv)
  for k, (v, _) in _VALUES.items():
    assert fv.config.chip[k] == v, k


def test_chip_defaults_are_the_spec_defaults():
  """An old config.json without the new fields resumes at what it ran."""
  chip = {k: v for k, v in validate.chip_defaults().items()}
  assert validate.chip_spec(chip) == crossbar.ChipSpec()


# ---------------------------------------------------------------------------
# Properties: out-of-range and non-finite values for every config field.

_INT_FIELDS = {"batch_size": 1, "num_epochs": 0, "seed": 0,
               "log_every_steps": 0, "eval.num_chips": 0,
               "eval.batch_size": 1, "eval.calibration_size": 1,
               "retrain.num_epochs": 0, "chip.tile_size": 1,
               "chip.aam_paths": 1}
_FLOAT_FIELDS = {"learning_rate": (0, True), "retrain.learning_rate": (0, True),
                 "weight_decay": (0, False), "chip.sigma": (0, False),
                 "chip.write_noise": (0, False), "chip.read_noise": (0, False),
                 "chip.r_row_ohm": (0, False), "chip.r_col_ohm": (0, False),
                 "chip.r_source_ohm": (0, False),
                 "chip.r_sense_ohm": (0, False), "chip.v_read": (0, True),
                 "chip.dac_r_pd_ohm": (0, True),
                 "chip.adc_offset_sigma": (0, False),
                 "chip.adc_gain_sigma": (0, False),
                 "chip.r_min_ohm": (0, True)}
_BITS = ["chip.weight_bits", "chip.device_bits", "chip.input_bits",
         "chip.dac_bits", "chip.adc_bits"]


@FAST
@hypothesis.given(st.sampled_from(sorted(_INT_FIELDS)),
                  st.integers(-2**40, -1))
def test_property_int_fields_below_range_name_the_field(dotted, below):
  value = _INT_FIELDS[dotted] + below
  config = _set(lenet_mnist.get_config(), dotted, value)
  with pytest.raises(validate.ConfigError) as e:
    validate.check(config)
  assert e.value.field == dotted and str(value) in str(e.value)


@FAST
@hypothesis.given(st.sampled_from(_BITS), st.integers(-2**40, -1))
def test_property_negative_bit_counts_name_the_field(dotted, value):
  config = _set(lenet_mnist.get_config(), dotted, value)
  with pytest.raises(validate.ConfigError) as e:
    validate.check(config)
  assert e.value.field == dotted


@FAST
@hypothesis.given(st.sampled_from(sorted(_FLOAT_FIELDS)),
                  st.one_of(st.just(math.nan), st.just(math.inf),
                            st.just(-math.inf),
                            st.floats(-1e30, -1e-30)))
def test_property_float_fields_out_of_range_name_the_field(dotted, value):
  config = _set(lenet_mnist.get_config(), dotted, value)
  with pytest.raises(validate.ConfigError) as e:
    validate.check(config)
  assert e.value.field == dotted


@FAST
@hypothesis.given(st.floats(allow_nan=False, allow_infinity=False,
                            min_value=1e-12, max_value=1e3))
def test_property_valid_learning_rates_pass(lr):
  config = _set(lenet_mnist.get_config(), "learning_rate", lr)
  validate.check(config)
