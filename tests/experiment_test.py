"""Experiments: resume, refusal of bad checkpoints and configs, metrics, chips.

References: an uninterrupted run (a resumed one must give the same numbers),
single-chip evaluations (the vmapped Monte-Carlo call must match them),
the config fields (chip_spec), `experiment.accuracy` of the restored
checkpoint (eval.py).
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from rxjax import data as data_lib
from rxjax import experiment
from rxjax import nn as rnn

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from configs import lenet_mnist  # pylint: disable=g-import-not-at-top

ROOT = os.path.join(os.path.dirname(__file__), "..")


def _config(**changes):
  """A seconds-long run: a small MLP on scikit-learn's 8x8 digits."""
  config = lenet_mnist.get_config()
  config.model = "mlp"
  config.dataset = "digits"
  config.num_epochs = 2
  config.batch_size = 64
  config.chip.tile_size = 16
  config.eval.tile_sizes = (16,)
  config.eval.num_chips = 0
  config.eval.calibration_size = 64
  config.retrain.num_epochs = 0
  config.retrain.tile_size = 16
  return _override(config, changes)


def _override(config, changes):
  """Sets dotted fields ("retrain.num_epochs") like command-line flags."""
  for k, v in changes.items():
    node = config
    *path, leaf = k.split(".")
    for p in path:
      node = node[p]
    node[leaf] = v
  return config


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  """One uninterrupted digital run (module-wide reference)."""
  workdir = str(tmp_path_factory.mktemp("full"))
  summary = experiment.train_and_evaluate(_config(), workdir)
  return workdir, summary


def _params(workdir, phase="digital"):
  config = _config()
  run = experiment.setup(config)
  fresh = experiment.init_variables(run.model, run.data.x_train, 0)
  steps = -(-len(run.data.x_train) // config.batch_size)
  opt = experiment.optimizer(config, steps, config.num_epochs,
                             config.learning_rate)
  manager = experiment.checkpoint_manager(experiment.Workdir(workdir, config),
                                          phase)
  state, epoch = experiment.restore_or(
      manager, {"variables": fresh, "opt_state": opt.init(fresh["params"])},
      phase)
  return state["variables"]["params"], epoch


def test_a_killed_run_resumes_to_the_same_numbers(finished, tmp_path,
                                                  monkeypatch):
  full_dir, full = finished
  workdir = str(tmp_path)
  real = data_lib.batches
  calls = {"n": 0}

  def dying(*args, **kwargs):
    for i, batch in enumerate(real(*args, **kwargs)):
      calls["n"] += 1
      if calls["n"] == 30:  # In epoch 2 (23 steps per epoch).
        raise KeyboardInterrupt
      yield batch

  monkeypatch.setattr(data_lib, "batches", dying)
  with pytest.raises(KeyboardInterrupt):
    experiment.train_and_evaluate(_config(), workdir)
  monkeypatch.setattr(data_lib, "batches", real)
  _, epoch = _params(workdir)
  assert epoch == 1  # Epoch 1 was saved; the one in progress was lost.
  resumed = experiment.train_and_evaluate(_config(), workdir)
  assert resumed["fp32"] == full["fp32"]
  a, _ = _params(workdir)
  b, _ = _params(full_dir)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)
  # The metrics file has one line per finished epoch and evaluation.
  lines = [json.loads(l) for l in open(os.path.join(workdir,
                                                     "metrics.jsonl"))]
  digital = [l for l in lines if l["phase"] == "digital"]
  assert [l["epoch"] for l in digital] == [1, 2]
  assert all({"step", "phase", "loss", "test_accuracy"} <= set(l)
             for l in digital)


def test_a_corrupt_checkpoint_is_refused(finished, tmp_path):
  import shutil
  workdir = str(tmp_path / "copy")
  shutil.copytree(finished[0], workdir)
  root = os.path.join(workdir, "checkpoints", "digital", "2")
  for dirpath, _, files in os.walk(root):
    for name in files:
      with open(os.path.join(dirpath, name), "wb") as f:
        f.write(b"garbage")
  with pytest.raises(ValueError, match="corrupt or does not match"):
    experiment.train_and_evaluate(_config(), workdir)


def test_a_different_config_in_the_same_workdir_is_refused(finished):
  with pytest.raises(ValueError, match="different config.*num_epochs"):
    experiment.train_and_evaluate(_config(num_epochs=3), finished[0])


def test_a_workdir_from_before_a_field_existed_resumes_at_its_old_value(
    tmp_path):
  # config.json written before `chip.pair_subtraction` (and the chip fields
  # of every other ChipSpec field) existed, with a finished re-training that
  # reads them.
  from rxjax import validate
  stored = json.loads(_config().to_json_best_effort())
  old = ("tile_size", "r_min_ohm", "r_max_ohm", "device_bits", "weight_bits",
         "signed", "sigma", "r_row_ohm", "r_col_ohm", "r_source_ohm",
         "r_sense_ohm", "input_bits", "dac_bits", "dac_model", "adc_bits",
         "inputs")
  stored["chip"] = {k: v for k, v in stored["chip"].items() if k in old}
  stored["retrain"]["tile_size"] = 16  # Spelled out before it was derived.
  with open(tmp_path / "config.json", "w") as f:
    json.dump(stored, f)
  os.makedirs(tmp_path / "checkpoints" / "retrain" / "1")
  experiment.Workdir(str(tmp_path), _config())  # "digital": what it ran.
  assert not (tmp_path / "superseded").exists()  # Nothing changed.
  for field, value in (("pair_subtraction", "analog"),
                       ("adc_calibration", "percentile")):
    changed = _config()
    changed.chip[field] = value
    with pytest.raises(ValueError, match=f"chip.{field}"):
      experiment.Workdir(str(tmp_path), changed)
  assert validate.chip_spec(_config().chip) == experiment.chip_spec(
      validate.chip_defaults() | {"tile_size": 16, "inputs": "non_negative"})


def test_eval_restores_the_checkpoint_and_writes_eval_json(finished):
  workdir, summary = finished
  result = experiment.evaluate(_config(), workdir)
  assert result["fp32"] == summary["fp32"]
  assert result["ideal"]["cross16"] == summary["ideal"]["cross16"]
  # Energy per image of the same chips, in both files (rxjax.energy).
  for mode in ("ideal", "nonideal"):
    e, e_train = (result["energy"][mode]["cross16"],
                  summary["energy"][mode]["cross16"])
    assert set(e) >= {"j_per_image", "breakdown_j_per_image", "s_per_image",
                      "area_mm2"}
    assert e["j_per_image"] == pytest.approx(e_train["j_per_image"],
                                             rel=1e-6)
    assert e["j_per_image"] == pytest.approx(sum(
        v for k, v in e["breakdown_j_per_image"].items()
        if k not in ("buffer_read", "buffer_write")), rel=1e-12)
  with open(os.path.join(workdir, "eval.json")) as f:
    assert json.load(f)["fp32"] == summary["fp32"]
  assert summary["fp32"] > 0.8  # Digits are easy even for a small MLP.


def test_missing_workdir_for_eval_and_retrain_is_a_clear_error(tmp_path):
  with pytest.raises(FileNotFoundError, match="run train.py"):
    experiment.evaluate(_config(), str(tmp_path / "none"))
  with pytest.raises(FileNotFoundError, match="digital checkpoint"):
    experiment.train_and_evaluate(
        _config(mode="retrain", init_workdir=str(tmp_path / "none")),
        str(tmp_path / "new"))


def test_monte_carlo_chips_in_one_call_match_single_chips(finished):
  config = _config()
  run = experiment.setup(config)
  params, _ = _params(finished[0])
  variables = {"params": params}
  spec = experiment.chip_spec(config.chip)
  key = jax.random.key(5)
  chips = experiment.evaluate_chips(run, variables, spec, key=key, n=3)
  single = [experiment.evaluate_on_chip(run, variables, spec,
                                        key=jax.random.fold_in(key, i))
            for i in range(3)]
  np.testing.assert_allclose(chips["accuracies"], single)
  assert chips["mean"] == pytest.approx(np.mean(single))


def test_retraining_on_the_chip_runs_the_chip_forward(finished, tmp_path):
  config = _config(mode="retrain", init_workdir=finished[0])
  config.retrain.num_epochs = 1
  summary = experiment.train_and_evaluate(config, str(tmp_path))
  assert summary["retrained"]["cross16"] > 0.5  # Chance is 0.1.
  lines = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  assert [l["phase"] for l in lines if "epoch" in l] == ["retrain"]
  # eval.py in mode "retrain" evaluates the re-trained network (the one
  # training evaluated on the same non-ideal chip), and says so.
  result = experiment.evaluate(config, str(tmp_path))
  assert result["network"] == "retrain (epoch 1)"
  assert result["nonideal"]["cross16"] == summary["retrained"]["cross16"]
  # This directory holds no digital network: mode "digital" says what it
  # has instead of evaluating something else.
  with pytest.raises(FileNotFoundError, match="has: retrain"):
    experiment.evaluate(_config(), str(tmp_path))


def test_chip_spec_reads_every_field():
  config = _config()
  config.chip.adc_bits = 0
  config.chip.dac_bits = 2
  config.chip.r_row_ohm = 2.5
  config.chip.pair_subtraction = "analog"
  spec = experiment.chip_spec(config.chip, tile_size=32, variation=False)
  assert spec.pair_subtraction == "analog"
  assert spec.mapping.tile_rows == spec.mapping.tile_cols == 32
  assert spec.adc.bits is None and spec.dac.dac_bits == 2
  assert spec.wires.r_row == 2.5 and spec.device.sigma == 0.0
  assert spec.device.r_min == config.chip.r_min_ohm
  assert experiment.retrain_spec(config).gain_correction == "column"
  config.retrain.gain_correction = "none"
  assert experiment.retrain_spec(config).gain_correction == "none"
  config.retrain.gain_correction = "row"
  with pytest.raises(ValueError, match="gain_correction"):
    experiment.retrain_spec(config)
  assert experiment.retrain_spec(
      lenet_mnist.get_config()).adc_range == "fitted"
  config.retrain.gain_correction = "none"
  config.retrain.adc_range = "max"
  with pytest.raises(ValueError, match="adc_range"):
    experiment.retrain_spec(config)
  config.chip.weight_bits = -1
  with pytest.raises(ValueError, match="chip.weight_bits"):
    experiment.chip_spec(config.chip)


def test_a_mistyped_override_fails_loudly(tmp_path):
  out = subprocess.run(
      [sys.executable, "train.py", "--config=configs/lenet_mnist.py",
       f"--workdir={tmp_path}", "--config.num_epoch=1"],
      cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert out.returncode == 2
  # One line, no traceback, with ml_collections' suggestion.
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
  assert "--config.num_epoch=1" in lines[0] and '"num_epochs"' in lines[0]
  assert not os.path.exists(tmp_path / "config.json")


def _txsim_config(**changes):
  from configs import lenet_mnist_txsim
  config = lenet_mnist_txsim.get_config()
  config.model = "mlp"
  config.num_epochs = 1
  config.batch_size = 64
  return _override(config, changes)


def test_txsim_with_every_non_ideality_off_is_digital_sgd(tmp_path):
  """Ideal chip, ideal device updates: the same numbers as digital SGD."""
  from rxjax import crossbar, device
  config = _txsim_config(dataset="digits")
  run = experiment.setup(config)
  wd = experiment.Workdir(str(tmp_path), config)
  digital = experiment.train(config, run, wd, phase="a", epochs=1,
                             learning_rate=config.learning_rate)
  on_chip = experiment.train(
      config, run, wd, phase="b", epochs=1,
      learning_rate=config.learning_rate,
      spec=crossbar.ChipSpec.ideal(backward="transposed_read"),
      update=device.UpdateSpec.ideal(), program_every=1)
  for a, b in zip(jax.tree.leaves(on_chip), jax.tree.leaves(digital)):
    # Float32 rounding of the weight -> conductance -> weight round trips
    # and of the chip reads over 23 steps (measured ~1e-6 of each leaf's
    # scale). The chip is programmed and calibrated on every batch, so no
    # input clips at the DAC range.
    assert np.abs(a - b).max() <= 1e-5 * np.abs(b).max()


def test_eval_of_a_txsim_workdir_evaluates_the_networks_trained_on_chips(
    tmp_path):
  """eval.py on a txsim directory: the Cross-Ideal and Cross-NI networks
  on their chips beside the digital one, the numbers training reported
  for them (summary.json), and which checkpoint each came from."""
  config = _txsim_config(dataset="digits")
  config.txsim.g_eff = "none"  # Ideal wires: no G_eff solves (speed).
  summary = experiment.train_and_evaluate(config, str(tmp_path))
  result = experiment.evaluate(config, str(tmp_path))
  assert result["networks"] == {p: f"{p} (epoch 1)" for p in
                                ("digital", "cross_ideal", "cross_ni")}
  for name in ("digital", "cross_ideal", "cross_ni"):
    assert result[name] == summary[name], name
  with open(tmp_path / "eval.json") as f:
    assert json.load(f)["cross_ni"] == summary["cross_ni"]


@pytest.mark.parametrize("chip", [False, True])
def test_gradient_blocks_give_the_whole_batch_mean_gradient(chip):
  """A step differentiated in 4 blocks (`grad_blocks`, the default) moves
  the weights as the whole batch's mean gradient does (`grad_blocks=0`:
  one `jax.grad` of the mean loss), digital and re-training on a chip
  (straight-through), with padding rows (label -1) that count for
  nothing: their inputs are changed and nothing changes."""
  import optax
  config = _config()
  run = experiment.setup(config)
  spec = experiment.chip_spec(config.chip) if chip else None
  opt = optax.sgd(1.0)  # The update is the gradient.
  x = np.asarray(run.data.x_train[:40])
  y = np.asarray(run.data.y_train[:40]).copy()
  y[-6:] = -1  # Padding rows.
  variables = experiment.init_variables(run.model, x, 0)
  state = {"variables": variables, "opt_state": opt.init(variables["params"])}
  chips = (rnn.program(run.model, variables, x, spec, key=jax.random.key(2))
           if chip else None)
  whole = experiment.train_step(run.model, opt, spec, grad_blocks=0)(
      state, chips, x, y)
  x_other = x.copy()
  x_other[-6:] = 0.5  # What padding rows hold must not matter.
  step = experiment.train_step(run.model, opt, spec, grad_blocks=4)
  blocked = step(state, chips, x_other, y)
  np.testing.assert_allclose(float(blocked[2]), float(whole[2]), rtol=1e-6)
  assert float(blocked[3]) == float(whole[3])  # Accuracy of the 34 rows.
  moved = 0.0
  for a, b, w in zip(jax.tree.leaves(blocked[0]["variables"]["params"]),
                     jax.tree.leaves(whole[0]["variables"]["params"]),
                     jax.tree.leaves(variables["params"])):
    step_b, step_w = np.asarray(a) - w, np.asarray(b) - w
    np.testing.assert_allclose(step_b, step_w, rtol=1e-4,
                               atol=1e-6 * np.abs(step_w).max())
    moved = max(moved, float(np.abs(step_w).max()))
  assert moved > 1e-3
  with pytest.raises(ValueError, match="gradient blocks"):
    step(state, chips, x[:38], y[:38])  # 38 rows do not split into 4.


def test_the_programming_step_equals_program_then_step():
  """TxSim's exact FCM step (`program=True`: programs inside its forward
  pass) gives the loss, weights and chips of `nn.program` followed by the
  interpolated step (whose stored distortion is then exact), forward and
  backward through the chip's wires."""
  import optax
  from rxjax import periphery
  config = _txsim_config(dataset="digits")
  run = experiment.setup(config)
  spec = experiment.txsim_specs(config)["cross_ni"][0]
  # Full-precision converters: with 8-bit ones a rounding difference (jit
  # against eager, or the refresh's g * G_eff / g) can move an ADC code, and
  # the next layer's calibration with it. Wires as on TxSim's chip.
  spec = spec.replace(dac=periphery.DACSpec.ideal(),
                      adc=periphery.ADCSpec.ideal())
  opt = optax.sgd(0.1)  # The device response is tested on its own.
  x = run.data.x_train[:32].astype(np.float64)
  y = run.data.y_train[:32]
  variables = jax.tree.map(lambda a: a.astype(np.float64),
                           experiment.init_variables(run.model, x, 0))
  state = {"variables": variables, "opt_state": opt.init(variables["params"])}
  key = jax.random.key(9)
  chips = rnn.program(run.model, variables, x, spec, key=key)
  want = experiment.train_step(run.model, opt, spec)(state, chips, x, y)
  got = experiment.train_step(run.model, opt, spec, program=True)(
      state, key, x, y)
  assert abs(float(got[2]) - float(want[2])) <= 1e-12 * abs(float(want[2]))
  for a, b in zip(jax.tree.leaves(got[0]), jax.tree.leaves(want[0])):
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
  for a, b in zip(jax.tree.leaves(got[1]), jax.tree.leaves(want[1])):
    if not jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
      np.testing.assert_allclose(a, b, rtol=1e-10, atol=0)


def test_txsim_training_on_bundled_mnist_learns(tmp_path):
  """Smoke test: Cross-NI training (chip forward and backward, device
  updates with nu = 0.01, gamma = 5) on 1,500 bundled MNIST digits learns,
  well above chance."""
  import dataclasses
  config = _txsim_config(batch_size=32, learning_rate=0.1)
  config.txsim.interval = 25
  run = experiment.setup(config)
  d = run.data
  run = dataclasses.replace(run, data=d._replace(
      x_train=d.x_train[:1500], y_train=d.y_train[:1500],
      x_test=d.x_test[:500], y_test=d.y_test[:500]))
  wd = experiment.Workdir(str(tmp_path), config)
  spec, update = experiment.txsim_specs(config)["cross_ni"]
  experiment.train(config, run, wd, phase="cross_ni", epochs=1,
                   learning_rate=config.learning_rate, spec=spec,
                   update=update, program_every=config.txsim.interval)
  from rxjax import plots
  metrics = plots.read_metrics(str(tmp_path / "metrics.jsonl"))
  (acc,) = metrics["cross_ni"]["test_accuracy"]
  assert acc > 0.5  # On the chip; chance is 0.1.
  # 47 steps, running means every 25 (config.log_every_steps): 1 line.
  steps = metrics["cross_ni/steps"]
  assert steps["step"] == [25]
  assert steps["loss"][0] < np.log(10)  # Below chance-level cross-entropy.


def test_read_metrics_keeps_the_last_line_per_step(tmp_path):
  """A resumed run logs some steps twice; a killed write leaves half a
  line: the reader keeps the later value and skips the broken line."""
  from rxjax import plots
  path = tmp_path / "metrics.jsonl"
  lines = [{"step": 25, "phase": "a/steps", "loss": 2.0},
           {"step": 50, "phase": "a/steps", "loss": 1.5},
           {"step": 25, "phase": "a/steps", "loss": 1.9},  # Resumed.
           {"step": 63, "phase": "a", "epoch": 1, "test_accuracy": 0.9}]
  text = "".join(json.dumps(l) + "\n" for l in lines) + '{"step": 5'
  path.write_text(text)
  metrics = plots.read_metrics(str(path))
  assert metrics["a/steps"] == {"step": [25, 50], "loss": [1.9, 1.5]}
  assert metrics["a"] == {"step": [63], "epoch": [1],
                          "test_accuracy": [0.9]}
  png = plots.training_curves(str(tmp_path), {"a": "A"})
  assert os.path.getsize(png) > 0


@pytest.mark.parametrize("name,arg,model,dataset", [
    ("lenet_mnist_txsim", None, "lenet5", "mnist_bundled"),
    ("mlp_mnist_txsim", None, "mlp", "mnist_bundled"),
    ("resnet20_txsim", None, "resnet20", "mnist_bundled"),
    ("resnet20_txsim", "cifar10", "resnet20", "cifar10")])
def test_txsim_configs_build_tx_sims_chip(name, arg, model, dataset):
  """Each TxSim config builds TxSim V's chip and device (64x64 tiles,
  100 kOhm - 1 MOhm analog devices, nu = 0.01, gamma = 5) for its network."""
  import importlib
  from rxjax import circuit
  config = importlib.import_module(f"configs.{name}").get_config(arg)
  assert (config.model, config.dataset) == (model, dataset)
  specs = experiment.txsim_specs(config)
  spec, update = specs["cross_ni"]
  assert spec.mapping.tile_rows == spec.mapping.tile_cols == 64
  assert spec.device.g_max == pytest.approx(1 / 100e3)
  assert spec.device.g_min == pytest.approx(1 / 1e6)
  assert spec.device.device_bits is None and spec.device.sigma == 0
  assert spec.backward == "transposed_read"
  assert (update.nu, update.gamma) == (0.01, 5.0)
  ideal, ideal_update = specs["cross_ideal"]
  assert ideal.wires == circuit.Wires.ideal() and ideal_update.nu == 0
  config.txsim.g_eff = "aam"
  assert experiment.txsim_specs(config)["cross_ni"][0].solver == "aam"
  config.txsim.g_eff = "spice"
  with pytest.raises(ValueError, match="txsim.g_eff"):
    experiment.txsim_specs(config)


def test_resnet20_config_refuses_an_unknown_argument():
  from configs import resnet20_txsim
  with pytest.raises(ValueError, match="cifar10"):
    resnet20_txsim.get_config("imagenet")
