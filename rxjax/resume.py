"""The resume rule: which config changes a work directory accepts.

A work directory keeps the config it ran with (`config.json`). A rerun with
another config is judged phase by phase (docs/configs.md, "Resuming"):

* each training phase (a directory under `checkpoints/`) depends on some
  config fields (`depends`): the digital phase on the data, model, seed and
  training fields; re-training and the TxSim chip phases on those and on
  the chip, `retrain.*` / `txsim.*` and the calibration set;
* a change to a field that a phase with a checkpoint depends on is refused,
  naming the fields and the phase, and saying how to redo it or reuse the
  finished work;
* any other change is accepted: the finished phases resume, the later ones
  run with the new values, and the evaluations of the old config
  (`results.json`, `summary.json`, `eval.json`) move to `superseded/<n>/`
  (kept, not lost) to be recomputed, unless only fields that change no
  number (`INERT`) changed.

Owns `depends`, `finished_phases`, `judge` and `ResumeError`; the work
directory itself is `rxjax.experiment.Workdir`.
"""

from __future__ import annotations

import os
import shutil

# Fields that change no number a run computes (logging, batching of the test
# set), so a change keeps every result.
INERT = frozenset({"log_every_steps", "eval.batch_size"})
# What the digital training reads.
DIGITAL = frozenset({
    "model", "dataset", "data_dir", "image_size", "seed", "batch_size",
    "grad_blocks", "num_epochs", "optimizer", "learning_rate", "momentum",
    "weight_decay"})
# Files of finished evaluations, recomputed after an accepted change.
RESULTS = ("results.json", "summary.json", "eval.json")


class ResumeError(ValueError):
  """A rerun whose config would change a finished phase.

  Attributes:
    fields: the changed fields that block, sorted.
  """

  def __init__(self, message: str, fields):
    super().__init__(message)
    self.fields = sorted(fields)


def depends(phase: str, field: str) -> bool:
  """Whether training phase `phase` reads config field `field`."""
  if field in INERT:
    return False
  if field in DIGITAL:
    return True
  if phase == "digital":
    return False
  if phase == "retrain":
    return (field.startswith(("chip.", "retrain.")) or field in (
        "eval.calibration_size", "init_workdir"))
  if phase in ("cross_ideal", "cross_ni"):
    return field.startswith(("chip.", "txsim.")) or (
        field == "eval.calibration_size")
  return True  # A phase this rule does not know: every field.


def finished_phases(path: str) -> list[str]:
  """Phases with at least one checkpoint under `path/checkpoints`."""
  root = os.path.join(path, "checkpoints")
  if not os.path.isdir(root):
    return []
  out = []
  for phase in sorted(os.listdir(root)):
    d = os.path.join(root, phase)
    if os.path.isdir(d) and any(n.isdigit() for n in os.listdir(d)):
      out.append(phase)
  return out


def normalize(config: dict) -> dict:
  """Derived fields resolved (`retrain.tile_size` None: `chip.tile_size`),
  so a config that spells a value out and one that derives it compare
  equal."""
  retrain = config.get("retrain")
  chip = config.get("chip")
  if isinstance(retrain, dict) and isinstance(chip, dict) and retrain.get(
      "tile_size") is None:
    retrain["tile_size"] = chip.get("tile_size")
  return config


def judge(path: str, changed) -> None:
  """Raises `ResumeError` when a changed field changes a finished phase.

  Args:
    path: the work directory.
    changed: dotted fields whose values differ from its `config.json`.
  """
  blocked = {}
  for phase in finished_phases(path):
    fields = sorted(f for f in changed if depends(phase, f))
    if fields:
      blocked[phase] = fields
  if not blocked:
    return
  fields = sorted({f for fs in blocked.values() for f in fs})
  what = "; ".join(f"checkpoints/{p} was trained with the old "
                   f"{', '.join(fs)}" for p, fs in blocked.items())
  remedy = ("use another --workdir, or the old values to resume, or delete "
            + " and ".join(f"{path}/checkpoints/{p}" for p in blocked)
            + " to redo that training here")
  if "digital" not in blocked and "digital" in finished_phases(path):
    remedy += (f"; to reuse its finished digital training elsewhere: "
               f"--workdir=NEW --config.mode=retrain "
               f"--config.init_workdir={path}")
  raise ResumeError(
      f"--workdir {path} holds a run with a different config (fields "
      f"{', '.join(sorted(changed))}): {what}; {remedy}", fields)


def supersede_results(path: str, changed) -> str | None:
  """Moves the evaluation files to `path/superseded/<n>/` after an accepted
  change (unless every changed field is `INERT`); returns that folder."""
  if all(f in INERT for f in changed):
    return None
  present = [n for n in RESULTS + ("config.json",)
             if os.path.exists(os.path.join(path, n))]
  if not present:
    return None
  root = os.path.join(path, "superseded")
  os.makedirs(root, exist_ok=True)
  n = 1 + max([int(d) for d in os.listdir(root) if d.isdigit()] + [0])
  dest = os.path.join(root, str(n))
  os.makedirs(dest)
  for name in present:
    if name == "config.json":
      shutil.copy2(os.path.join(path, name), os.path.join(dest, name))
    else:
      os.replace(os.path.join(path, name), os.path.join(dest, name))
  return dest
