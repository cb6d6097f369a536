"""Experiments: train, re-train and evaluate networks on crossbars (RxNN VII).

This package is the edge where configs become specs (STYLE: configs stay at
the edge). One concern per module:

* `specs`: a config's blocks -> chip specs (`chip_spec`, `retrain_spec`,
  `txsim_specs`; every field checked in `rxjax.validate`, which also builds
  every spec of a run before any work).
* `workdir`: the run's directory (`Workdir`): the config it ran with,
  finished evaluations, metrics, atomic JSON.
* `migration`: what changed between a directory's config.json and the
  config a run starts with (fields added since, placement fields).
* `keys`: every key a run draws from, derived from `config.seed` (the
  chip a run trains on: `keys.chip_key`).
* `progress`: progress lines with rate and ETA.
* `run`: what every phase shares (`Setup`: model, data, calibration
  images, mesh).
* `training`: the optimizer, the jitted `train_step` and the epoch loop
  `train` (checkpoints every epoch, resumed from the latest).
* `evaluation`: accuracy digitally, on one chip and over Monte-Carlo chip
  instances; the energy of a network on its chip.
* `loading`: the networks of finished phases, from their checkpoints.
* `workflows`: `train_and_evaluate` (what `train.py` runs: digital
  training, evaluation on Cross-ideal and non-ideal chips of several tile
  sizes, RxNN re-training on one chip, evaluation again, a Monte-Carlo
  study, the summary; or TxSim's three trainings) and `evaluate` (what
  `eval.py` runs: the network(s) the config's mode produced, from their
  checkpoints).
* `tables`: the Markdown tables they print.

Everything a run computes is kept in its work directory: the config it ran
with (`config.json`, written once the config is valid; a different config
resumes or is refused by the rule in `rxjax.resume`), checkpoints with their
checksums (`rxjax.checkpoints`), finished evaluations (`results.json`, so a
resumed run does not repeat them), metrics (`rxjax.metrics`: one line per
(phase, step)) and the summary, which names the checkpoints it came from.
"""

from rxjax.experiment import keys
from rxjax.experiment.evaluation import (accuracy, chip_energy, clear_compiled,
                                         evaluate_chips, evaluate_on_chip,
                                         program_fn)
from rxjax.experiment.loading import Loaded, load_latest
from rxjax.experiment.progress import Progress
from rxjax.experiment.run import Setup, init_variables, setup
from rxjax.experiment.specs import chip_spec, retrain_spec, txsim_specs
from rxjax.experiment.tables import table
from rxjax.experiment.training import (checkpoint_manager, optimizer,
                                       restore_or, train, train_step)
from rxjax.experiment.workdir import Workdir
from rxjax.experiment.workflows import evaluate, train_and_evaluate

__all__ = [
    "Loaded", "Progress", "Setup", "Workdir", "accuracy", "checkpoint_manager",
    "chip_energy", "chip_spec", "clear_compiled", "evaluate", "evaluate_chips",
    "evaluate_on_chip", "init_variables", "keys", "load_latest", "optimizer",
    "program_fn", "restore_or", "retrain_spec", "setup", "table", "train",
    "train_and_evaluate", "train_step", "txsim_specs",
]
