"""The networks of finished phases, loaded from their checkpoints: what mode
"retrain" starts from and what `evaluate` (eval.py) evaluates. Each load is
checked against the config's model and its checksum (`rxjax.checkpoints`)
and says which checkpoint it came from, for eval.json and summary.json."""

from __future__ import annotations

import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from rxjax import checkpoints as ckpt
from rxjax import distributed
from rxjax import finite
from rxjax import resume
from rxjax.experiment.run import Setup, init_variables
from rxjax.experiment.workdir import Workdir


class Loaded(NamedTuple):
  """A network restored from a checkpoint directory's newest step."""
  variables: dict
  step: int
  sha256: str  # The checkpoint's checksum (`rxjax.checkpoints`).


def load_latest(path: str, fresh) -> Loaded | None:
  """The variables of the newest checkpoint under `path`, or None.

  Checked against `fresh` (the config's model): a checkpoint of another
  model, or one that cannot be read, raises a ValueError naming it; one
  with non-finite weights too.
  """
  if not os.path.isdir(path):
    return None
  manager = ocp.CheckpointManager(path)
  step = manager.latest_step()
  try:
    if step is None:
      return None
    restored, digest = ckpt.restore(manager, step)  # Checksum verified.
  finally:
    manager.close()
  variables = jax.tree.map(jnp.asarray, dict(restored["variables"]))
  if (jax.tree.structure(variables) != jax.tree.structure(fresh)
      or jax.tree.map(jnp.shape, variables) != jax.tree.map(jnp.shape,
                                                            fresh)):
    raise ckpt.CheckpointError(f"checkpoint {path}/{step} does not match "
                               "the model of this config")
  finite.check("variables", variables, f"weights of checkpoint {path}/{step}",
               "the training that wrote it diverged: train again with a "
               "lower learning rate, or delete that step directory to use "
               "the previous checkpoint")
  return Loaded(variables, int(step), digest)


def digital_source(config, workdir: str) -> str:
  """The digital checkpoint directory that mode "retrain" starts from.

  Raises:
    FileNotFoundError: it has no checkpoint (checked before any work).
  """
  source = config.init_workdir or workdir
  path = os.path.join(os.path.abspath(source), "checkpoints", "digital")
  if "digital" not in resume.finished_phases(os.path.abspath(source)):
    raise FileNotFoundError(
        f"mode 'retrain' needs a digital checkpoint: {path} has none (set "
        "--config.init_workdir to the work directory of a digital run)")
  return path


def load_digital(config, run: Setup, wd: Workdir):
  """The digital network mode "retrain" starts from, replicated over the
  run's mesh; recorded in `wd.checkpoints["digital"]`."""
  path = digital_source(config, wd.path)
  fresh = init_variables(run.model, run.data.x_train, config.seed)
  found = load_latest(path, fresh)
  if found is None:
    raise FileNotFoundError(
        f"mode 'retrain' needs a digital checkpoint: {path} has none (set "
        "--config.init_workdir to the work directory of a digital run)")
  wd.checkpoints["digital"] = {"path": path, "step": found.step,
                               "sha256": found.sha256}
  return distributed.replicate(found.variables, run.mesh)


# The checkpoint phase(s) whose networks each mode produces, as eval.py
# evaluates them.
EVAL_PHASES = {"digital": ("digital",), "retrain": ("retrain",),
               "txsim": ("digital", "cross_ideal", "cross_ni")}


def load_phase(wd: str, phase: str, fresh, mode: str):
  """(variables, "phase (epoch n)", {"phase", "step", "sha256"}) of a
  phase's latest checkpoint; a clear error naming the directory when it has
  none."""
  path = os.path.join(wd, "checkpoints", phase)
  found = load_latest(path, fresh)
  if found is None:
    there = sorted(p for p in os.listdir(os.path.join(wd, "checkpoints"))
                   if os.path.isdir(os.path.join(wd, "checkpoints", p)))
    raise FileNotFoundError(
        f"mode {mode!r} evaluates the {phase!r} network, but {path} holds no "
        f"checkpoint (this work directory has: {', '.join(there) or 'none'}); "
        "run train.py with this config and --workdir first, or set "
        "--config.mode to the mode the directory was trained in")
  network = f"{phase} (epoch {found.step})"
  print(f"  loaded {network} from {path}", flush=True)
  return found.variables, network, {"phase": phase, "step": found.step,
                                    "sha256": found.sha256}
