"""Two processes on localhost, `jax.distributed` (issue 17, DESIGN 6).

Reference: the same short LeNet-5 run (`train.py`, 1 epoch, re-training,
8 chips) as one process. The two-process job (2 CPU devices each, CPU
collectives over gloo, JAX's default on CPU) is killed once its first
checkpoint is on disk and started again: it must resume from that
checkpoint, finish, and report accuracies within 0.005 of the one-process
run. A process whose coordinator does not answer fails within its
`initialization_timeout`, naming the address.
"""

import json
import os
import signal
import subprocess
import sys
import time

import portpicker
import pytest

ROOT = os.path.join(os.path.dirname(__file__), "..")

# A short LeNet-5 job: one digital epoch at batch 128 (32 steps), one
# re-training epoch on Cross64, 8 chips with variation.
SHORT = ["--config=configs/lenet_mnist.py", "--config.num_epochs=1",
         "--config.batch_size=128", "--config.eval.tile_sizes=(64,)",
         "--config.eval.num_chips=8", "--config.retrain.num_epochs=1",
         "--config.log_every_steps=0", "--config.eval.calibration_size=64",
         # One device slice per weight and one DAC cycle per input: the
         # chip reads 32 times fewer crossbars (the placement is the test).
         "--config.chip.device_bits=8", "--config.chip.dac_bits=8"]


def _train(workdir, *flags, process=None, port=None, log=None):
  cmd = [sys.executable, "train.py", f"--workdir={workdir}", *SHORT, *flags]
  if process is not None:
    cmd += [f"--config.distributed.coordinator_address=localhost:{port}",
            "--config.distributed.num_processes=2",
            f"--config.distributed.process_id={process}",
            "--config.distributed.initialization_timeout=120",
            "--cpu_devices=2"]
  env = dict(os.environ, PYTHONPATH=ROOT)
  env.pop("JAX_NUM_CPU_DEVICES", None)
  return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log,
                          stderr=subprocess.STDOUT, text=True)


def _job(workdir, tmp, name):
  port = portpicker.pick_unused_port()
  logs = [open(tmp / f"{name}{i}.log", "w") for i in range(2)]
  return [_train(workdir, process=i, port=port, log=logs[i])
          for i in range(2)], logs


def _read(path):
  with open(path) as f:
    return f.read()


def _accuracies(summary):
  flat = {"fp32": summary["fp32"], "chips.mean": summary["chips"]["mean"]}
  for group in ("ideal", "nonideal", "retrained"):
    for k, v in summary[group].items():
      flat[f"{group}.{k}"] = v
  return flat


@pytest.mark.slow
def test_two_processes_resume_after_a_kill_and_match_one_process(tmp_path):
  ref_dir, job_dir = tmp_path / "one", tmp_path / "two"
  with open(tmp_path / "one.log", "w") as log:
    one = _train(ref_dir, "--cpu_devices=1", log=log)
    assert one.wait(timeout=900) == 0, _read(tmp_path / "one.log")[-3000:]

  procs, logs = _job(job_dir, tmp_path, "first")
  first = job_dir / "checkpoints" / "digital" / "1"
  deadline = time.time() + 600
  while not first.is_dir() and time.time() < deadline:
    assert all(p.poll() is None for p in procs), _read(
        tmp_path / "first0.log")[-3000:]
    time.sleep(0.5)
  assert first.is_dir(), "no first checkpoint within 600 s"
  for p in procs:
    p.send_signal(signal.SIGKILL)
    p.wait()
  assert not (job_dir / "summary.json").exists()

  procs, logs = _job(job_dir, tmp_path, "again")
  for i, p in enumerate(procs):
    assert p.wait(timeout=900) == 0, _read(tmp_path / f"again{i}.log")[-3000:]
  out0 = _read(tmp_path / "again0.log")
  assert "digital: resumed after epoch 1" in out0
  assert "digital: epoch 1/1" not in out0  # Not trained again.
  # Process 0 reports; process 1 prints nothing to stdout.
  assert "  devices:" not in _read(tmp_path / "again1.log")

  with open(ref_dir / "summary.json") as f:
    ref = json.load(f)
  with open(job_dir / "summary.json") as f:
    two = json.load(f)
  assert ref["devices"] == {"count": 1, "platform": "cpu", "processes": 1}
  assert two["devices"] == {"count": 4, "platform": "cpu", "processes": 2}
  a1, a2 = _accuracies(ref), _accuracies(two)
  assert a1.keys() == a2.keys()
  for k in a1:
    # Issue 17's bound. The gradient blocks (`grad_blocks`) make both jobs
    # train the same weights bit for bit, the re-training included (which
    # turned last-bit differences into other ADC codes, and moved this row
    # by up to 0.008, before the blocks).
    assert abs(a1[k] - a2[k]) <= 0.005, (k, a1[k], a2[k])
  assert len(two["chips"]["accuracies"]) == 8
  assert a1["retrained.cross64"] > 0.5  # A network (chance 0.1).
  # One writer: every epoch's metrics line once.
  lines = [json.loads(l) for l in open(job_dir / "metrics.jsonl")]
  assert [l["phase"] for l in lines if "epoch" in l].count("retrain") == 1


def test_unreachable_coordinator_fails_fast_naming_the_address(tmp_path):
  port = portpicker.pick_unused_port()  # Nobody listens there.
  cmd = [sys.executable, "train.py", f"--workdir={tmp_path}", *SHORT,
         f"--config.distributed.coordinator_address=localhost:{port}",
         "--config.distributed.num_processes=2",
         "--config.distributed.process_id=1",
         "--config.distributed.initialization_timeout=3"]
  start = time.time()
  proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0
  assert f"localhost:{port}" in proc.stderr
  assert "could not join" in proc.stderr
  # 3 s of waiting, plus Python and JAX start-up on a busy machine.
  assert time.time() - start < 60
