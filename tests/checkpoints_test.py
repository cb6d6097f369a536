"""Checkpoints prove their integrity; a killed run loses nothing finished
(issue 20, case 4 and the metrics case).

References: the arrays that were saved (a restore gives exactly them or
refuses), the checksum file written before the kill, one line per
(phase, step).
"""

import json
import os
import shutil
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from rxjax import checkpoints as ckpt
from rxjax import data as data_lib
from rxjax import experiment
from rxjax import metrics as metrics_lib

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from configs import lenet_mnist  # pylint: disable=g-import-not-at-top


def _state():
  rng = np.random.default_rng(0)
  return {"variables": {"params": {
      "w": rng.normal(size=(32, 16)).astype(np.float32),
      "b": rng.normal(size=(16,)).astype(np.float32)}},
          "opt_state": {"count": np.asarray(7, np.int32),
                        "mu": rng.normal(size=(32, 16)).astype(np.float32)}}


def _manager(path):
  return ocp.CheckpointManager(
      str(path), options=ocp.CheckpointManagerOptions(max_to_keep=2,
                                                      create=True))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
  root = tmp_path_factory.mktemp("ckpt") / "phase"
  manager = _manager(root)
  state = _state()
  digest = ckpt.save(manager, 1, state)
  manager.close()
  return root, state, digest


def _equal(a, b):
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  return len(la) == len(lb) and all(
      np.asarray(x).dtype == np.asarray(y).dtype
      and np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def test_a_checkpoint_restores_verified(saved):
  root, state, digest = saved
  manager = _manager(root)
  restored, got = ckpt.restore(manager, 1, _state())
  assert got == digest == ckpt.digest(state)
  assert _equal(restored, state)
  # Without a template (what eval.py does): the same checksum.
  _, got = ckpt.restore(manager, 1)
  assert got == digest


def test_overwritten_bytes_anywhere_are_refused_or_restore_exactly(
    saved, tmp_path):
  """64 bytes overwritten at 8 places of every file of the checkpoint."""
  root, state, _ = saved
  step = os.path.join(root, "1")
  files = [os.path.relpath(os.path.join(d, n), step)
           for d, _, names in os.walk(step) for n in names
           if n != ckpt.DIGEST_FILE]
  rng = np.random.default_rng(1)
  refused = exact = 0
  for name in files:
    size = os.path.getsize(os.path.join(step, name))
    for offset in sorted({0, max(size - 64, 0)} | set(
        rng.integers(0, max(size, 1), 6).tolist())):
      copy = tmp_path / f"c{refused + exact}"
      shutil.copytree(root, copy)
      with open(copy / "1" / name, "r+b") as f:
        f.seek(offset)
        f.write(rng.integers(0, 256, 64, dtype=np.uint8).tobytes())
      manager = _manager(copy)
      try:
        restored, _ = ckpt.restore(manager, 1, _state())
      except ckpt.CheckpointError as e:
        assert str(copy / "1") in str(e) and "delete" in str(e)
        refused += 1
      else:
        assert _equal(restored, state), (name, offset)
        exact += 1
      finally:
        manager.close()
      shutil.rmtree(copy)
  assert refused > 0  # The test is not vacuous.


def test_bytes_overwritten_inside_the_array_data_are_caught_by_the_checksum(
    tmp_path):
  """The issue's case: orbax decompresses the overwritten data into wrong
  numbers without an error; the checksum refuses them."""
  big = {"w": np.random.default_rng(2).normal(size=(256, 256)).astype(
      np.float32)}
  manager = _manager(tmp_path / "p")
  ckpt.save(manager, 1, big)
  manager.close()
  step = tmp_path / "p" / "1"
  data = max((os.path.join(d, n) for d, _, ns in os.walk(step) for n in ns),
             key=os.path.getsize)  # The chunk holding w's bytes.
  with open(data, "r+b") as f:
    f.seek(os.path.getsize(data) // 2)
    f.write(np.random.default_rng(3).integers(0, 256, 64, np.uint8).tobytes())
  manager = _manager(tmp_path / "p")
  with pytest.raises(ckpt.CheckpointError, match="do not match the checksum"):
    ckpt.restore(manager, 1, big)
  # Without the checksum file: orbax alone restores the wrong numbers.
  os.remove(step / ckpt.DIGEST_FILE)
  restored, digest = ckpt.restore(manager, 1, big)
  assert digest is None and not np.array_equal(restored["w"], big["w"])
  manager.close()


def test_metrics_file_keeps_one_current_line_per_phase_and_step(tmp_path):
  path = str(tmp_path / "metrics.jsonl")
  m = metrics_lib.MetricsFile(path)
  m.append({"phase": "a", "step": 1, "loss": 2.0})
  m.append({"phase": "a", "step": 2, "loss": 1.0})
  with open(path, "a") as f:
    f.write('{"phase": "a", "st')  # A write cut short by a kill.
  m = metrics_lib.MetricsFile(path)
  m.append({"phase": "a", "step": 2, "loss": 0.5})  # Redone.
  lines = [json.loads(l) for l in open(path)]
  current = [(l["phase"], l["step"], l["loss"]) for l in lines
             if not l.get("superseded")]
  assert current == [("a", 1, 2.0), ("a", 2, 0.5)]
  assert [l["loss"] for l in lines if l.get("superseded")] == [1.0]


def _config():
  config = lenet_mnist.get_config()
  config.model = "mlp"
  config.dataset = "digits"
  config.num_epochs = 2
  config.batch_size = 64
  config.log_every_steps = 5
  config.chip.tile_size = 16
  config.eval.tile_sizes = (16,)
  config.eval.num_chips = 0
  config.eval.calibration_size = 32
  config.retrain.num_epochs = 0
  for name in ("r_row_ohm", "r_col_ohm", "r_source_ohm", "r_sense_ohm"):
    config.chip[name] = 0.0  # No circuit solve: the test is about files.
  return config


@pytest.mark.slow
def test_a_killed_run_resumes_losing_nothing_finished(tmp_path, monkeypatch):
  workdir = str(tmp_path)
  real = data_lib.batches
  calls = {"n": 0}

  def dying(*args, **kwargs):
    for batch in real(*args, **kwargs):
      calls["n"] += 1
      if calls["n"] == 35:  # Epoch 2, step 12 of 23: after two logs.
        raise KeyboardInterrupt
      yield batch

  monkeypatch.setattr(data_lib, "batches", dying)
  with pytest.raises(KeyboardInterrupt):
    experiment.train_and_evaluate(_config(), workdir)
  monkeypatch.setattr(data_lib, "batches", real)
  first = os.path.join(workdir, "checkpoints", "digital", "1")
  digest_before = json.load(open(os.path.join(first, ckpt.DIGEST_FILE)))
  summary = experiment.train_and_evaluate(_config(), workdir)
  # Epoch 1 was kept, not redone: the same checkpoint, the same checksum.
  assert json.load(open(os.path.join(first, ckpt.DIGEST_FILE))) == (
      digest_before)
  lines = [json.loads(l) for l in open(os.path.join(workdir,
                                                    "metrics.jsonl"))]
  current = [l for l in lines if not l.get("superseded")]
  keys = [(l["phase"], l["step"]) for l in current]
  assert len(keys) == len(set(keys))  # No duplicate (phase, step).
  assert [l["epoch"] for l in current if l["phase"] == "digital"] == [1, 2]
  steps = [l["step"] for l in current if l["phase"] == "digital/steps"]
  assert steps == [5, 10, 15, 20, 28, 33, 38, 43]  # 23 steps per epoch.
  assert any(l.get("superseded") for l in lines)  # The redone steps.
  # The summary names the checkpoint its numbers came from; eval.py too.
  assert summary["checkpoints"]["digital"]["step"] == 2
  result = experiment.evaluate(_config(), workdir)
  assert result["checkpoint"] == {"phase": "digital",
                                  **summary["checkpoints"]["digital"]}
  assert result["fp32"] == summary["fp32"]
  # A rerun that changes only what comes after the digital training resumes
  # it (not retrained: same checksum) and keeps the old evaluations.
  changed = _config()
  changed.chip.adc_bits = 4
  again = experiment.train_and_evaluate(changed, workdir)
  assert again["checkpoints"]["digital"] == summary["checkpoints"]["digital"]
  old = json.load(open(os.path.join(workdir, "superseded", "1",
                                    "summary.json")))
  assert old["nonideal"] == summary["nonideal"]
  lines = [json.loads(l) for l in open(os.path.join(workdir,
                                                    "metrics.jsonl"))]
  assert [l["epoch"] for l in lines if l["phase"] == "digital"
          and not l.get("superseded")] == [1, 2]
  changed.num_epochs = 3  # Would change the finished digital phase.
  with pytest.raises(ValueError, match="num_epochs.*checkpoints/digital"):
    experiment.train_and_evaluate(changed, workdir)
  # A checkpoint whose arrays no longer match its checksum is refused by
  # train.py (which would otherwise print the cached summary) and eval.py.
  last = os.path.join(workdir, "checkpoints", "digital", "2",
                      ckpt.DIGEST_FILE)
  record = json.load(open(last))
  record["sha256"] = "0" * 64
  json.dump(record, open(last, "w"))
  changed_back = _config()
  changed_back.chip.adc_bits = 4
  for entry in (experiment.train_and_evaluate, experiment.evaluate):
    with pytest.raises(ckpt.CheckpointError, match="digital/2 is corrupt"):
      entry(changed_back, workdir)


def test_a_diverged_training_stops_before_its_checkpoint(tmp_path):
  """A NaN loss is never checkpointed nor reported as an accuracy."""
  config = _config()
  config.optimizer, config.learning_rate, config.momentum = "sgd", 1e30, 0.0
  run = experiment.setup(config)
  wd = experiment.Workdir(str(tmp_path), config)
  with pytest.raises(FloatingPointError, match="digital.*epoch 1.*diverged"):
    experiment.train(config, run, wd, phase="digital", epochs=1,
                     learning_rate=config.learning_rate)
  assert not os.path.exists(tmp_path / "checkpoints" / "digital" / "1")


def test_nonfinite_weights_in_a_checkpoint_are_refused(tmp_path):
  fresh = {"params": {"w": np.ones((3, 2), np.float32)}}
  state = {"variables": {"params": {"w": np.full((3, 2), np.nan,
                                                 np.float32)}}}
  manager = _manager(tmp_path / "digital")
  ckpt.save(manager, 1, state)
  manager.close()
  with pytest.raises(ValueError, match=r"digital/1\).*6 NaN.*diverged"):
    experiment.load_latest(str(tmp_path / "digital"), fresh)
