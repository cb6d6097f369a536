"""The workflows a config's mode runs: `train_and_evaluate` (train.py) and
`evaluate` (eval.py), with TxSim's training of one network digitally, on
Cross-Ideal and on Cross-NI from one init."""

from __future__ import annotations

import os
import time

import ml_collections

from rxjax import distributed
from rxjax import plots
from rxjax import validate
from rxjax.experiment import keys
from rxjax.experiment import loading
from rxjax.experiment.evaluation import (accuracy, chip_energy, evaluate_chips,
                                         evaluate_on_chip, print_energy)
from rxjax.experiment.run import Setup, init_variables, setup
from rxjax.experiment.specs import txsim_specs
from rxjax.experiment.tables import table, txsim_table
from rxjax.experiment.training import train
from rxjax.experiment.workdir import Workdir, write_json


def xla_flags() -> str:
  """The `XLA_FLAGS` this process compiled with, as `summary.json` and
  `eval.json` record them: the same seed and config give the same bits
  only under the same flags (an LLVM optimization level, for one, changes
  the float32 rounding of a training step; docs/distributed.md)."""
  return " ".join(os.environ.get("XLA_FLAGS", "").split())


def _cross(size):
  """The name results use for a tile size: `cross64`."""
  return f"cross{size}"


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict:
  """`train.py`: the run a config describes; returns the summary.

  mode "digital": trains in floating point for `num_epochs`; then, for each
  of `eval.tile_sizes`, evaluates the network on the Cross-ideal chip and on
  the non-ideal chip without variation; re-trains for `retrain.num_epochs`
  on the non-ideal chip of `retrain.tile_size` (if > 0) and evaluates it
  again; finally evaluates the final network over `eval.num_chips` chip
  instances with variation. mode "retrain": starts from the final digital
  checkpoint of `init_workdir` (or of this work directory) and runs only
  the re-training and its evaluations.

  Writes `summary.json` (accuracies as fractions) and prints a Markdown
  table.
  """
  start = time.time()
  # Every field and every spec the run needs, before data or work directory
  # (config.json is written only once the config is valid).
  plan = validate.check(config)
  if config.mode == "retrain":
    loading.digital_source(config, workdir)  # Exists before any work.
  run = setup(config)
  wd = Workdir(workdir, config)
  print(f"  data: {run.data.name}, {len(run.data.y_train)} train / "
        f"{len(run.data.y_test)} test images; model: {config.model}",
        flush=True)
  seed = config.seed
  if config.mode == "txsim":
    return _txsim(config, run, wd, start)
  if config.mode == "digital":
    variables = train(config, run, wd, phase="digital",
                      epochs=config.num_epochs,
                      learning_rate=config.learning_rate)
  else:  # "retrain" (validate.check knows the modes).
    variables = loading.load_digital(config, run, wd)
  summary = {"fp32": wd.result("fp32", lambda: accuracy(
      run.model, variables, run.data, None, mesh=run.mesh))}
  summary["ideal"], summary["nonideal"] = {}, {}
  summary["energy"] = {"ideal": {}, "nonideal": {}}
  for size in config.eval.tile_sizes:
    name = _cross(size)
    for mode in ("ideal", "nonideal"):
      spec = plan.eval_specs[(mode, size)]
      energy = {}
      summary[mode][name] = wd.result(f"{mode}/{name}", lambda: (
          evaluate_on_chip(run, variables, spec,
                           key=keys.eval_chip_key(seed, size), energy=energy)))
      print(f"  {mode} {name}: {summary[mode][name]:.4f}", flush=True)
      summary["energy"][mode][name] = wd.result(
          f"energy/{mode}/{name}", lambda: energy or chip_energy(
              run, variables, spec, key=keys.eval_chip_key(seed, size)))
      print_energy(mode, name, summary["energy"][mode][name])
      wd.log(0, f"eval/{mode}/{name}", accuracy=summary[mode][name])
  final = variables
  size = plan.retrain_size  # retrain.tile_size, or chip.tile_size.
  spec = plan.retrain_spec
  if config.retrain.num_epochs > 0:
    final = train(config, run, wd, phase="retrain",
                  epochs=config.retrain.num_epochs,
                  learning_rate=config.retrain.learning_rate, spec=spec,
                  init=variables, backward=plan.retrain_backward)
    energy = {}
    summary["retrained"] = {_cross(size): wd.result(
        f"retrained/{_cross(size)}", lambda: evaluate_on_chip(
            run, final, spec, key=keys.eval_chip_key(seed, size),
            energy=energy))}
    print(f"  retrained {_cross(size)}: "
          f"{summary['retrained'][_cross(size)]:.4f}", flush=True)
    summary["energy"]["retrained"] = {_cross(size): wd.result(
        f"energy/retrained/{_cross(size)}", lambda: energy or chip_energy(
            run, final, spec, key=keys.eval_chip_key(seed, size)))}
    print_energy("retrained", _cross(size),
                  summary["energy"]["retrained"][_cross(size)])
  if config.eval.num_chips > 0:
    chips_spec = plan.chips_spec
    summary["chips"] = wd.result("chips", lambda: evaluate_chips(
        run, final, chips_spec, key=keys.monte_carlo_key(seed),
        n=config.eval.num_chips, batch_size=config.eval.batch_size))
    summary["chips"]["tile_size"] = size
    summary["chips"]["network"] = ("retrained" if
                                   config.retrain.num_epochs > 0 else
                                   "digital")
  summary["checkpoints"] = wd.checkpoints  # What the numbers came from.
  summary["devices"] = distributed.devices_info(run.mesh)
  summary["xla_flags"] = xla_flags()
  summary["seconds"] = time.time() - start
  wd.write_json("summary.json", summary)
  print(table(summary))
  print(f"  wrote {os.path.join(wd.path, 'summary.json')} "
        f"({summary['seconds']:.0f} s)")
  return summary



def _txsim_accuracy(config, run: Setup, variables, spec) -> float:
  """A network trained on a chip, evaluated on that chip (forward reads;
  the backward pass does not matter here)."""
  return evaluate_on_chip(
      run, variables, spec.replace(backward="straight_through"),
      key=keys.chip_key(config.seed))


def _txsim(config, run: Setup, wd: Workdir, start: float) -> dict:
  """TxSim: digital, Cross-Ideal and Cross-NI training from one init."""
  t = config.txsim
  every = t.interval if t.g_eff == "interpolated" else 1
  summary = {}
  digital = train(config, run, wd, phase="digital", epochs=config.num_epochs,
                  learning_rate=config.learning_rate)
  summary["digital"] = wd.result("digital", lambda: accuracy(
      run.model, digital, run.data, None, mesh=run.mesh))
  for name, (spec, update) in txsim_specs(config).items():
    variables = train(config, run, wd, phase=name, epochs=config.num_epochs,
                      learning_rate=config.learning_rate, spec=spec,
                      update=update, program_every=every)
    summary[name] = wd.result(name, lambda: _txsim_accuracy(
        config, run, variables, spec))
    print(f"  {name}: {summary[name]:.4f}", flush=True)
  summary["checkpoints"] = wd.checkpoints
  summary["devices"] = distributed.devices_info(run.mesh)
  summary["xla_flags"] = xla_flags()
  summary["seconds"] = time.time() - start
  wd.write_json("summary.json", summary)
  if wd.main:
    curves = plots.training_curves(
        wd.path, {"digital": "digital", "cross_ideal": "Cross-Ideal",
                  "cross_ni": "Cross-NI"},
        title=f"{config.model} trained on crossbars (TxSim): nu = {t.nu}, "
        f"gamma = {t.gamma}, G_eff {t.g_eff}")
    print(f"  wrote {curves}")
  print(txsim_table(summary))
  print(f"  wrote {os.path.join(wd.path, 'summary.json')} "
        f"({summary['seconds']:.0f} s)")
  return summary


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """`eval.py`: the network(s) the config's mode produced, from the latest
  checkpoints of the work directory.

  mode "digital": the digital network; mode "retrain": the re-trained one
  (both as fp32, ideal, non-ideal and over `eval.num_chips` chips). mode
  "txsim": the digital network in fp32 and the networks trained on the
  Cross-Ideal and Cross-NI chips, each on its own chip, as
  `"digital"`, `"cross_ideal"` and `"cross_ni"` (as in summary.json).
  `"network"` / `"networks"` and `"checkpoint"` / `"checkpoints"` (step and
  checksum) say which checkpoint each came from. Writes `eval.json` and
  prints a Markdown table.
  """
  start = time.time()
  plan = validate.check(config, entry="evaluate")
  wd = os.path.abspath(workdir)
  if not os.path.isdir(os.path.join(wd, "checkpoints")):
    raise FileNotFoundError(
        f"{wd}/checkpoints does not exist: run train.py with this "
        "--workdir first")
  run = setup(config)
  fresh = init_variables(run.model, run.data.x_train, config.seed)
  loaded = {phase: loading.load_phase(wd, phase, fresh, config.mode)
            for phase in loading.EVAL_PHASES[config.mode]}
  if config.mode == "txsim":
    variables = loaded["digital"][0]
    result = {"networks": {p: n for p, (_, n, _) in loaded.items()},
              "checkpoints": {p: c for p, (_, _, c) in loaded.items()},
              "digital": accuracy(run.model, variables, run.data, None,
                                  mesh=run.mesh)}
    for name, (spec, _) in txsim_specs(config).items():
      result[name] = _txsim_accuracy(config, run, loaded[name][0], spec)
      print(f"  {name}: {result[name]:.4f}", flush=True)
    return _write_eval(wd, run, result, start, txsim_table)
  (variables, network, checkpoint), = loaded.values()
  variables = distributed.replicate(variables, run.mesh)
  seed = config.seed
  size = config.chip.tile_size
  name = _cross(size)
  result = {"network": network, "checkpoint": checkpoint,
            "fp32": accuracy(run.model, variables, run.data, None,
                             mesh=run.mesh)}
  result["energy"] = {}
  for mode in ("ideal", "nonideal"):
    spec = plan.eval_specs[(mode, size)]
    energy = {}
    result[mode] = {name: evaluate_on_chip(run, variables, spec,
                                           key=keys.eval_chip_key(seed, size),
                                           energy=energy)}
    print(f"  {mode} {name}: {result[mode][name]:.4f}", flush=True)
    result["energy"][mode] = {name: energy}
    print_energy(mode, name, energy)
  if config.eval.num_chips > 0:
    result["chips"] = evaluate_chips(
        run, variables, plan.chips_spec,
        key=keys.monte_carlo_key(seed), n=config.eval.num_chips,
        batch_size=config.eval.batch_size)
    result["chips"]["tile_size"] = size
  return _write_eval(wd, run, result, start, table)


def _write_eval(wd: str, run: Setup, result: dict, start: float,
                tabulate) -> dict:
  """Adds the devices and the seconds to `result`, writes it as eval.json
  (process 0) and prints it as `tabulate` makes it a table."""
  result["devices"] = distributed.devices_info(run.mesh)
  result["xla_flags"] = xla_flags()
  result["seconds"] = time.time() - start
  path = os.path.join(wd, "eval.json")
  if distributed.is_main():
    write_json(path, result)
  print(tabulate(result))
  print(f"  wrote {path} ({result['seconds']:.0f} s)")
  return result

