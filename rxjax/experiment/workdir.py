"""A run's work directory: its config check, JSON files, metrics.

Everything a run computes is kept there: the config it ran with
(`config.json`, written once the config is valid; a different config
resumes or is refused by the rule in `rxjax.resume`), finished evaluations
(`results.json`, so a resumed run does not repeat them), metrics
(`rxjax.metrics`: one line per (phase, step), and TensorBoard scalars when
TensorFlow is installed) and the summary. Process 0 alone writes (DESIGN 6).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np

from rxjax import distributed
from rxjax import metrics as metrics_lib
from rxjax import resume
from rxjax.experiment import migration


class Workdir:
  """A run's directory: config check, metrics and results, atomically."""

  def __init__(self, path: str, config: ml_collections.ConfigDict):
    self.path = os.path.abspath(path)
    os.makedirs(self.path, exist_ok=True)
    self._check_config(config)
    # Process 0 alone writes (DESIGN 6). Every process reads results.json
    # to skip a finished evaluation: they agree, since each evaluation needs
    # all of them, so none can find one that the others have not finished.
    self.main = distributed.is_main()
    self._tb = _tensorboard(self.path) if self.main else None
    self._metrics = metrics_lib.MetricsFile(
        os.path.join(self.path, "metrics.jsonl")) if self.main else None
    # {phase: {"step", "sha256"}}: the checkpoints this run saved or
    # restored, recorded in summary.json.
    self.checkpoints = {}

  def _check_config(self, config):
    path = os.path.join(self.path, "config.json")
    mine = json.loads(config.to_json_best_effort())
    if os.path.exists(path):
      try:
        with open(path) as f:
          theirs = json.load(f)
      except (OSError, ValueError) as e:
        raise ValueError(f"{path} is unreadable ({e}); remove it or use "
                         "another --workdir") from e
      diff = migration.changed_fields(theirs, mine)
      if diff:
        # The resume rule (docs/configs.md): refused if a finished phase
        # would change; else the finished phases resume.
        resume.judge(self.path, diff)
        moved = (resume.supersede_results(self.path, diff)
                 if distributed.is_main() else None)
        print(f"  workdir: config changed ({', '.join(diff)}); finished "
              f"phases {resume.finished_phases(self.path) or 'none'} resume"
              + (f", old evaluations moved to {moved}" if moved else ""),
              flush=True)
        self.write_json("config.json", mine)
    else:
      self.write_json("config.json", mine)

  def write_json(self, name: str, value) -> str:
    path = os.path.join(self.path, name)
    return write_json(path, value) if distributed.is_main() else path

  def read_json(self, name: str, default=None):
    path = os.path.join(self.path, name)
    if not os.path.exists(path):
      return default
    try:
      with open(path) as f:
        return json.load(f)
    except (OSError, ValueError) as e:
      raise ValueError(
          f"{path} is unreadable ({type(e).__name__}: {e}); delete it to "
          "recompute what it held (the checkpoints are kept)") from e

  def log(self, step: int, phase: str, **values):
    """Appends one metrics line (and TensorBoard scalars when available)."""
    if not self.main:
      return
    record = {"step": int(step), "phase": phase, "time": time.time()}
    record.update({k: plain(v) for k, v in values.items()})
    self._metrics.append(record)  # Marks an older line of (phase, step).
    if self._tb is not None:
      for k, v in values.items():
        if isinstance(v, (int, float)):
          self._tb.scalar(f"{phase}/{k}", v, step)

  def supersede_metrics(self, match: Callable[[dict], bool]) -> None:
    """Marks the metrics lines `match` accepts as superseded (the lines of
    an epoch a killed run did not finish, redone on resume)."""
    if self.main:
      self._metrics.supersede(match)

  def result(self, name: str, compute: Callable[[], Any]):
    """A finished evaluation, computed once per work directory."""
    results = self.read_json("results.json", {})
    if name not in results:
      results[name] = plain(compute())
      self.write_json("results.json", results)
    return results[name]


def write_json(path: str, value) -> str:
  """Writes `value` as indented, key-sorted JSON to `path`, atomically (a
  killed run leaves the old file); returns `path`."""
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(value, f, indent=2, sort_keys=True)
    f.write("\n")
  os.replace(tmp, path)  # Atomic: a killed run leaves the old file.
  return path


def _tensorboard(path):
  try:
    from flax.metrics import tensorboard  # Needs TensorFlow.
    return tensorboard.SummaryWriter(os.path.join(path, "tensorboard"))
  except Exception:  # pylint: disable=broad-except
    return None


def plain(v):
  """`v` with arrays and tuples turned into lists: what JSON can hold."""
  if isinstance(v, dict):
    return {k: plain(x) for k, x in v.items()}
  if isinstance(v, (list, tuple)):
    return [plain(x) for x in v]
  if isinstance(v, (np.generic, np.ndarray, jax.Array)):
    return np.asarray(v).tolist()
  return v
