"""Placement does not change the science (DESIGN 6, issue 17).

References: the same computation on one device. A subprocess with 4 CPU
devices (the device count is fixed when JAX starts) runs, on a 4-device
mesh and on a 1-device mesh of the same process:

* the whole job (`train_and_evaluate`: digital, ideal and non-ideal chips,
  re-training, 6 chips) on 4 devices against 1, every accuracy in
  summary.json;
* one chip programmed the product's way (`experiment.program_fn` on the
  run's mesh: its tiles split over the devices) against one device;
* 12 Monte-Carlo chips sharded (3 per device) and 7 (padded to 8), against
  the same chips one by one on one device;
* 3 data-parallel training steps (digital with a batch that needs padding,
  and TxSim's exact-programming step) against one device.

Two processes on localhost (`jax.distributed`, 2 CPU devices each) are in
`multiprocess_test.py`.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from rxjax import cli
from rxjax import distributed

ROOT = os.path.join(os.path.dirname(__file__), "..")

_FOUR = r'''
import json, os, sys, tempfile
import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import optax
sys.path.insert(0, os.getcwd())
from configs import lenet_mnist
from rxjax import distributed, experiment
assert jax.device_count() == 4, jax.devices()

def config(**kw):
  c = lenet_mnist.get_config()
  c.model, c.dataset, c.num_epochs, c.batch_size = "mlp", "digits", 1, 60
  c.chip.tile_size = 16
  c.eval.tile_sizes = (16,)
  c.eval.num_chips = 6  # 6 chips on 4 devices: padded to 8.
  c.eval.calibration_size = 64
  c.retrain.num_epochs, c.retrain.tile_size = 0, 16
  for k, v in kw.items():
    c[k] = v
  return c

out = {}
# The whole job (digital epoch, ideal and non-ideal chips, one re-training
# epoch, 6 chips) data-parallel on 4 devices and on 1.
workdirs = {}
for n in (4, 1):
  c = config(num_devices=n)
  c.retrain.num_epochs = 1
  workdirs[n] = tempfile.mkdtemp()
  out[f"summary{n}"] = experiment.train_and_evaluate(c, workdirs[n])
  with open(os.path.join(workdirs[n], "summary.json")) as f:
    out[f"digests{n}"] = {k: v["sha256"] for k, v in
                          json.load(f)["checkpoints"].items()}
out["summary"] = out["summary4"]
wd = workdirs[4]
# The job ran as train.py runs it (float32); the rest as the suite does.
jax.config.update("jax_enable_x64", True)

# 12 chips sharded over 4 devices (and 7, padded to 8) against one by one.
c = config(num_devices=4)
run4 = experiment.setup(c)
run1 = experiment.setup(config(num_devices=1))
fresh = experiment.init_variables(run4.model, run4.data.x_train, 0)
variables = experiment.load_latest(
    os.path.join(wd, "checkpoints", "digital"), fresh).variables
spec = experiment.chip_spec(c.chip)
key = jax.random.key(7)
sharded = experiment.evaluate_chips(run4, variables, spec, key=key, n=12)
odd = experiment.evaluate_chips(run4, variables, spec, key=key, n=7)
single = [experiment.evaluate_on_chip(run1, variables, spec,
                                      key=jax.random.fold_in(key, i))
          for i in range(12)]
out["chips"] = {"sharded": sharded["accuracies"], "odd": odd["accuracies"],
                "single": single}

# The product's programming of one chip (`experiment.program_fn` on the
# run's mesh: train.py's and eval.py's non-ideal evaluations and the
# re-training's chip) on 4 devices against 1.
def shard_maps(jaxpr, found):
  """(mesh size, global operand shape, per-device operand shape) of every
  shard_map in `jaxpr`, nested ones included."""
  for e in jaxpr.eqns:
    if e.primitive.name == "shard_map":
      found.append((e.params["mesh"].size, e.invars[0].aval.shape,
                    e.params["jaxpr"].invars[0].aval.shape))
  for sub in jax.extend.core.subjaxprs(jaxpr):
    shard_maps(sub, found)
  return found

one_chip = {}
for name, run in (("four", run4), ("one", run1)):
  fn = experiment.program_fn(run.model, spec, run.mesh)
  v, k = distributed.on_mesh((variables, key), run.mesh)
  chips = fn(v, run.calib, k)
  one_chip[name] = chips
  one_chip[name + "_shard_maps"] = shard_maps(
      jax.make_jaxpr(fn)(v, run.calib, k).jaxpr, [])
  one_chip[name + "_replicated"] = [
      c["chip"].g_eff.sharding.is_fully_replicated for c in chips.values()]
rel = lambda a, b: float(np.abs(np.asarray(a, np.float64) - np.asarray(b))
                         .max() / np.abs(np.asarray(b, np.float64)).max())
out["program"] = {
    "g_eff": max(rel(a["chip"].g_eff, b["chip"].g_eff) for a, b in zip(
        one_chip["four"].values(), one_chip["one"].values())),
    "dtype": str(next(iter(one_chip["one"].values()))["chip"].g_eff.dtype),
    "layers": len(one_chip["one"]),
    **{k: v for k, v in one_chip.items() if not k in ("four", "one")}}

# 3 training steps, 4 devices against 1.
def steps(run, spec, program, batch):
  opt = optax.sgd(0.05, momentum=0.9)
  step = experiment.train_step(run.model, opt, spec, program=program,
                               mesh=run.mesh)
  state = distributed.replicate(
      {"variables": fresh, "opt_state": opt.init(fresh["params"])},
      run.mesh)
  chips = distributed.replicate(jax.random.key(3), run.mesh)
  if spec is not None and not program:  # Re-training: programmed chips.
    chips = experiment.program_fn(run.model, spec, run.mesh)(
        *distributed.on_mesh((fresh, run.calib, chips), run.mesh))
  losses = []
  for i, (x, y) in enumerate(distributed.global_batches(
      run.mesh, run.data.x_train, run.data.y_train, batch, key_or_seed=1,
      multiple=distributed.gradient_blocks(4, run.mesh))):
    if i == 3:
      break
    state, new, loss, _ = step(state, chips, x, y)
    chips = chips if program else new
    losses.append(float(loss))
  leaves = jax.tree.leaves(state["variables"]["params"])
  return np.concatenate([np.ravel(np.asarray(l)) for l in leaves]), losses

txsim = experiment.chip_spec(c.chip, variation=False).replace(
    backward="transposed_read")
for name, spec_, program, batch in (("digital", None, False, 30),
                                    ("retrain", spec, False, 32),
                                    ("txsim", txsim, True, 32)):
  p4, l4 = steps(run4, spec_, program, batch)
  p1, l1 = steps(run1, spec_, program, batch)
  out[name] = {"max_abs": float(np.max(np.abs(p4 - p1))),
               "scale": float(np.max(np.abs(p1))),
               "changed": float(np.max(np.abs(p1 - np.concatenate(
                   [np.ravel(np.asarray(l)) for l in
                    jax.tree.leaves(fresh["params"])])))),
               "losses4": l4, "losses1": l1}
print("RESULT " + json.dumps(out))
'''


@pytest.fixture(scope="module")
def four_devices():
  env = dict(os.environ, JAX_NUM_CPU_DEVICES="4", PYTHONPATH=ROOT)
  proc = subprocess.run([sys.executable, "-c", _FOUR], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=1800)
  assert proc.returncode == 0, proc.stderr[-4000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
  return json.loads(line[-1][len("RESULT "):])


# Issue 17: 32 chips sharded over 2 CPU devices (16 each) on many small
# test batches, the loop that hung (docs/distributed.md), against the same
# chips on a 1-device mesh of the same process. XLA aborts a collective
# that waits more than 60 s (the flags below), so a hang fails the test
# within the subprocess timeout instead of stalling the suite.
_TWO = r'''
import json, os, sys
import jax
jax.config.update("jax_enable_x64", True)
sys.path.insert(0, os.getcwd())
from configs import lenet_mnist
from rxjax import experiment
assert jax.device_count() == 2, jax.devices()

def config(n):
  c = lenet_mnist.get_config()
  c.model, c.dataset, c.num_devices = "mlp", "digits", n
  c.chip.tile_size = 16
  c.eval.calibration_size = 64
  return c

run2, run1 = experiment.setup(config(2)), experiment.setup(config(1))
variables = experiment.init_variables(run2.model, run2.data.x_train, 0)
spec = experiment.chip_spec(config(2).chip)
key = jax.random.key(11)
out = {}
for name, run in (("two", run2), ("one", run1)):
  # batch_size 96: 6 test images per call on 16 chips a device, 60 calls.
  out[name] = experiment.evaluate_chips(run, variables, spec, key=key, n=32,
                                        batch_size=96)["accuracies"]
out["single"] = [experiment.evaluate_on_chip(
    run1, variables, spec, key=jax.random.fold_in(key, i)) for i in (0, 31)]
out["batches"] = -(-len(run2.data.y_test) // 6)
print("RESULT " + json.dumps(out))
'''


@pytest.mark.slow
def test_32_sharded_chips_on_two_devices_finish_and_equal_one_device():
  flags = [f for f in os.environ.get("XLA_FLAGS", "").split()
           if "collective" not in f]
  flags += ["--xla_cpu_collective_timeout_seconds=60",
            "--xla_cpu_collective_call_terminate_timeout_seconds=60"]
  env = dict(os.environ, JAX_NUM_CPU_DEVICES="2", PYTHONPATH=ROOT,
             XLA_FLAGS=" ".join(flags))
  proc = subprocess.run([sys.executable, "-c", _TWO], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-4000:]
  line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
  r = json.loads(line[-1][len("RESULT "):])
  assert r["batches"] >= 40  # Far more calls than XLA's 32 in flight.
  assert len(r["two"]) == len(r["one"]) == 32
  np.testing.assert_allclose(r["two"], r["one"], atol=1e-12)
  np.testing.assert_allclose([r["two"][0], r["two"][31]], r["single"],
                             atol=1e-12)
  assert len(set(r["one"])) > 1  # The chips differ: keys are per chip.


def _accuracies(summary):
  flat = {"fp32": summary["fp32"], "chips.mean": summary["chips"]["mean"]}
  flat.update({f"chips.{i}": a
               for i, a in enumerate(summary["chips"]["accuracies"])})
  for group in ("ideal", "nonideal", "retrained"):
    flat.update({f"{group}.{k}": v for k, v in summary[group].items()})
  return flat


@pytest.mark.slow
def test_job_on_four_devices_matches_one_device(four_devices):
  """Issue 17: 1 vs 4 devices, every accuracy in summary.json within 0.005.
  With the gradient blocks both runs train the same weights, bit for bit,
  digital and re-trained (their checkpoints' digests are equal); the
  evaluations then split the test images over 4 devices against 1."""
  four, one = four_devices["summary4"], four_devices["summary1"]
  assert four["devices"]["count"] == 4 and one["devices"]["count"] == 1
  a4, a1 = _accuracies(four), _accuracies(one)
  assert a4.keys() == a1.keys() and len(a4) == 2 + 6 + 3
  for k in a1:
    assert abs(a4[k] - a1[k]) <= 0.005, (k, a4, a1)
  assert a1["retrained.cross16"] > 0.5  # A network (chance 0.1).
  assert four_devices["digests4"] == four_devices["digests1"]


@pytest.mark.slow
def test_sharded_monte_carlo_chips_are_the_chips_one_by_one(four_devices):
  assert four_devices["summary"]["devices"] == {
      "count": 4, "platform": "cpu", "processes": 1}
  assert four_devices["summary"]["fp32"] > 0.5  # A network (chance 0.1).
  c = four_devices["chips"]
  assert len(c["sharded"]) == 12 and len(c["odd"]) == 7
  np.testing.assert_allclose(c["sharded"], c["single"], atol=1e-12)
  np.testing.assert_allclose(c["odd"], c["single"][:7], atol=1e-12)
  assert len(set(c["single"])) > 1  # The chips differ: keys are per chip.


@pytest.mark.slow
def test_product_programming_on_the_mesh_is_sharded_and_equals_one_device(
    four_devices):
  """`experiment.program_fn` with the run's mesh (what train.py and eval.py
  program every chip with) solves its tiles split over the 4 devices (the
  traced shard_map gives each device a quarter of the tile batch) and
  equals the one-device programming."""
  p = four_devices["program"]
  assert p["layers"] == 3
  assert p["dtype"] == "float32"
  assert p["g_eff"] <= 1e-6, p
  [(size, whole, share)] = p["four_shard_maps"]
  assert size == 4 and whole[0] % 4 == 0 and share[0] * 4 == whole[0], p
  assert whole[1:] == share[1:] == [16, 16]
  assert [s[0] for s in p["one_shard_maps"]] == [1]
  # Gathered once after the solve: every layer's read needs its whole chip.
  assert all(p["four_replicated"]), p


@pytest.mark.slow
@pytest.mark.parametrize("name", ["digital", "retrain"])
def test_blocked_data_parallel_steps_are_one_device_bit_for_bit(
    four_devices, name):
  # The gradient blocks (`grad_blocks` = 4, train_step): each device
  # differentiates its blocks alone and the blocks' gradients are added in
  # one fixed order, so 4 devices give one device's params exactly (the
  # digital batch of 30 is padded to 32 on both).
  r = four_devices[name]
  assert r["changed"] > 1e-3  # The steps moved the weights.
  assert r["max_abs"] == 0.0, r
  assert r["losses4"] == r["losses1"]


@pytest.mark.slow
def test_exact_programming_step_on_four_devices_equals_one_device(
    four_devices):
  # TxSim's exact-FCM step calibrates on the whole batch, so it is not
  # blocked: XLA's all-reduce sums its gradient, in another order on 4
  # devices (3e-8 measured; the model is float32).
  r = four_devices["txsim"]
  assert r["changed"] > 1e-3
  assert r["max_abs"] <= 1e-6 * r["scale"], r
  np.testing.assert_allclose(r["losses4"], r["losses1"], rtol=1e-6)


def test_mesh_from_num_devices_and_its_errors():
  import jax  # pylint: disable=g-import-not-at-top
  mesh = distributed.make_mesh()
  assert distributed.devices_info(mesh) == {
      "count": jax.device_count(), "platform": jax.devices()[0].platform,
      "processes": 1}
  assert distributed.make_mesh(1).devices.size == 1
  with pytest.raises(ValueError, match="`num_devices` must be an int in"):
    distributed.make_mesh(jax.device_count() + 1)
  with pytest.raises(ValueError, match="`num_devices`"):
    distributed.make_mesh(0)


def test_global_batches_cover_every_example_once_with_padding():
  x = np.arange(50, dtype=np.float32)[:, None]
  y = np.arange(50)
  mesh = distributed.make_mesh(1)
  seen = []
  for xb, yb in distributed.global_batches(mesh, x, y, 16, key_or_seed=3):
    xb, yb = np.asarray(xb), np.asarray(yb)
    assert xb.shape == (16, 1)
    real = yb >= 0
    np.testing.assert_array_equal(xb[real, 0], yb[real])
    seen += yb[real].tolist()
  assert sorted(seen) == list(range(50))
  padded = distributed.pad_rows(np.array([1, 2, 3]), 5)
  np.testing.assert_array_equal(padded, [1, 2, 3, 1, 2])
  np.testing.assert_array_equal(
      distributed.pad_rows(np.array([1, 2, 3]), 5, fill=-1),
      [1, 2, 3, -1, -1])


def test_cpu_devices_flag_env_and_default():
  assert cli.cpu_devices(None, {}) == cli.CPU_DEVICES_DEFAULT
  assert cli.cpu_devices(None, {"JAX_NUM_CPU_DEVICES": "3"}) is None
  assert cli.cpu_devices(2, {"JAX_NUM_CPU_DEVICES": "3"}) == 2
  assert cli.cpu_devices(0, {}) == len(os.sched_getaffinity(0))


def test_distributed_settings_are_checked_before_joining():
  assert distributed.initialize() is False  # One process.
  with pytest.raises(ValueError, match="host:port"):
    distributed.initialize(coordinator_address="localhost",
                           num_processes=2, process_id=0)
  with pytest.raises(ValueError, match="`distributed.process_id`"):
    distributed.initialize(coordinator_address="localhost:1",
                           num_processes=2, process_id=2)
  with pytest.raises(ValueError, match="need"):
    distributed.initialize(num_processes=2, process_id=1)


def test_pace_waits_for_the_step_depth_back():
  """`distributed.Pace(2)`: after step i is dispatched, every step up to
  i - 2 has been waited for, and no later one (issue 17: a loop that runs
  far ahead of XLA:CPU's devices hangs)."""
  waited = []

  class Step:

    def __init__(self, i):
      self.i = i

    def block_until_ready(self):
      waited.append(self.i)
      return self

  pace = distributed.Pace(2)
  for i in range(6):
    assert pace(Step(i)).i == i
    assert waited == list(range(max(0, i - 1))), (i, waited)
  with pytest.raises(ValueError, match="`depth` must be an int >= 0"):
    distributed.Pace(-1)
