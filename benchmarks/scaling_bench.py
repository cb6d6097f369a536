"""Scale-out speed: the pipeline on n devices against one, in turns (issue 17).

    python benchmarks/scaling_bench.py            # all of it
    python benchmarks/scaling_bench.py --quick    # ResNet-18, 8 chips

On a CPU host the script exposes `--devices` CPU devices (default 2, one
per core of the 2-core machine it was written on; set before JAX starts);
on a GPU or TPU host it uses every accelerator the host has. It times, in
turns (`common.in_turns`: one call of each side per round, so both see the
same phases of a shared machine), the same work on a mesh of all those
devices and on a mesh of one:

1. programming ResNet-50 (every 64 x 64 tile, exact `G_eff`, one slice per
   differential pair: ~12,500 tiles; `rxjax.nn.program(mesh=)` shards the
   tile axis of its one batched solve);
2. 32 LeNet-5 chip instances with process variation, programmed and read
   on the 1,000 test digits (`experiment.evaluate_chips`: the chip axis
   sharded);
3. a digital and a TxSim (forward and backward on the chip, interpolated
   FCM) LeNet-5 training step at batch 256, data-parallel
   (`experiment.train_step(mesh=)`).

It prints the device kind and absolute rates (tiles solved per second,
chip instances per second, images per second of non-ideal inference,
training images per second) and ends with one JSON line: {"devices",
"platform", "device_kind", "program_resnet50_speedup", "mc32_speedup",
"train_step_speedup": {"digital", "txsim"}, ...rates}. Speed-ups are
one-device time over n-device time (1.0 where the host has one device).
"""

import argparse
import json
import os
import sys
import time


def _parse():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--devices", type=int, default=2,
                      help="CPU devices to expose on a CPU host")
  parser.add_argument("--quick", action="store_true",
                      help="ResNet-18 and 8 chips (a smoke run)")
  parser.add_argument("--repeats", type=int, default=2,
                      help="rounds in turns per measurement (after warm-up)")
  parser.add_argument("--only", nargs="*",
                      default=["program", "chips", "train"],
                      choices=["program", "chips", "train"])
  return parser.parse_args()


def main():
  args = _parse()
  import jax  # pylint: disable=g-import-not-at-top
  # Set before the first computation starts the CPU client; ignored by
  # GPU / TPU hosts, whose default backend is the accelerator.
  if "JAX_NUM_CPU_DEVICES" not in os.environ:
    jax.config.update("jax_num_cpu_devices", args.devices)
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
  from benchmarks import common  # pylint: disable=g-import-not-at-top
  from configs import lenet_mnist  # pylint: disable=g-import-not-at-top
  from rxjax import crossbar, distributed, experiment, models  # pylint: disable=g-import-not-at-top
  from rxjax import device as device_lib  # pylint: disable=g-import-not-at-top
  from rxjax import mapping as mapping_lib  # pylint: disable=g-import-not-at-top
  from rxjax import nn as rnn  # pylint: disable=g-import-not-at-top

  devices = jax.devices()
  n = len(devices)
  everything = distributed.make_mesh(n)
  one = distributed.make_mesh(1)
  kind = devices[0].device_kind
  print(f"# scaling_bench: {n} x {kind} ({devices[0].platform}) against 1,"
        f" jax {jax.__version__}, {os.cpu_count()} CPUs, float32",
        flush=True)
  result = {"devices": n, "platform": devices[0].platform,
            "device_kind": kind}
  meshes = {f"{n} devices": everything, "1 device": one}

  busy = {}  # cores busy per measurement: the floor a core count sets

  def turns(calls, what):
    timed = common.in_turns(calls, repeats=args.repeats)
    busy[what] = {name: round(b, 2) for name, (_, b) in timed.items()}
    return {name: t for name, (t, _) in timed.items()}

  def speedup(t):
    return round(t["1 device"] / t[f"{n} devices"], 3)

  if "program" in args.only:
    name = "resnet18" if args.quick else "resnet50"
    model = models.get(name, num_classes=1000)
    x = jnp.zeros((1, 32, 32, 3), jnp.float32)  # Tiles depend on weights.
    variables = experiment.init_variables(model, x, 0)
    spec = crossbar.ChipSpec(mapping=mapping_lib.MappingSpec(weight_bits=8),
                         device=device_lib.DeviceSpec(device_bits=8))
    key = jax.random.key(0)
    calls = {}
    for label, mesh in meshes.items():
      fn = jax.jit(lambda v, x, k, mesh=mesh: rnn.program(
          model, v, x, spec, key=k, mesh=mesh, train=False))
      calls[label] = (fn, (distributed.replicate(variables, mesh),
                           distributed.replicate(x, mesh),
                           distributed.replicate(key, mesh)))
    start = time.perf_counter()
    chips = jax.block_until_ready(calls["1 device"][0](
        *calls["1 device"][1]))
    print(f"  {name}: first call (compile + solve) "
          f"{time.perf_counter() - start:.1f} s", flush=True)
    tiles = sum(int(np.prod(c.g.shape[:-2])) for c in jax.tree.leaves(
        chips, is_leaf=lambda c: isinstance(c, crossbar.Chip))
                if isinstance(c, crossbar.Chip))
    t = turns(calls, "program")
    result[f"program_{name}_speedup"] = speedup(t)
    result["tiles"] = tiles
    result["tiles_per_s"] = round(tiles / t[f"{n} devices"], 1)
    print(f"\n## Programming {name} ({tiles} tiles of 64 x 64, exact G_eff)"
          "\n| devices | s | tiles/s |\n|---|---|---|")
    for label in meshes:
      print(f"| {label} | {t[label]:.2f} | {tiles / t[label]:.0f} |")

  if "chips" in args.only or "train" in args.only:
    config = lenet_mnist.get_config()
    run = experiment.setup(config)
    variables = experiment.init_variables(run.model, run.data.x_train, 0)
    spec = experiment.chip_spec(config.chip)

  if "chips" in args.only:
    chips_n = 8 if args.quick else 32
    images = len(run.data.y_test)
    calls = {}
    for label, mesh in meshes.items():
      r = experiment.Setup(run.model, run.data, run.calib, mesh)
      v = distributed.replicate(variables, mesh)
      calls[label] = (lambda r=r, v=v: experiment.evaluate_chips(
          r, v, spec, key=jax.random.key(1), n=chips_n)["mean"], ())
    stdout, sys.stdout = sys.stdout, open(os.devnull, "w")
    try:  # evaluate_chips prints its progress.
      t = turns(calls, "chips")
    finally:
      sys.stdout = stdout
    result[f"mc{chips_n}_speedup"] = speedup(t)
    result["chips_per_s"] = round(chips_n / t[f"{n} devices"], 2)
    result["nonideal_images_per_s"] = round(
        chips_n * images / t[f"{n} devices"], 1)
    print(f"\n## {chips_n} LeNet-5 chips with variation on {images} test "
          "digits (programmed and read)\n| devices | s | chips/s | "
          "images/s |\n|---|---|---|---|")
    for label in meshes:
      print(f"| {label} | {t[label]:.2f} | {chips_n / t[label]:.2f} | "
            f"{chips_n * images / t[label]:.0f} |")

  if "train" in args.only:
    batch = 256
    opt = optax.sgd(0.01)
    txsim = spec.replace(backward="transposed_read")
    x_host = run.data.x_train[:batch]
    y_host = run.data.y_train[:batch]
    speedups, rates = {}, {}
    print(f"\n## LeNet-5 training step, batch {batch}, data-parallel\n"
          "| step | devices | ms | images/s |\n|---|---|---|---|")
    for step_name, step_spec in (("digital", None), ("txsim", txsim)):
      calls = {}
      for label, mesh in meshes.items():
        step = experiment.train_step(run.model, opt, step_spec, mesh=mesh)
        state = distributed.replicate(
            {"variables": variables,
             "opt_state": opt.init(variables["params"])}, mesh)
        chips = None
        if step_spec is not None:
          chips = experiment.program_fn(run.model, step_spec)(
              state["variables"], run.calib, key=jax.random.key(2))
          chips = distributed.on_mesh(chips, mesh)
        share = distributed.process_share(batch, mesh)
        x, y = distributed.shard_batch(mesh, x_host[share], y_host[share],
                                       global_rows=batch)
        calls[label] = (step, (state, chips, x, y))
      t = turns(calls, step_name)
      speedups[step_name] = speedup(t)
      rates[step_name] = round(batch / t[f"{n} devices"], 1)
      for label in meshes:
        print(f"| {step_name} | {label} | {t[label] * 1e3:.1f} | "
              f"{batch / t[label]:.0f} |")
    result["train_step_speedup"] = speedups
    result["train_images_per_s"] = rates
  # Cores busy (CPU time over wall time) of each side: on a CPU host a
  # one-device side that already keeps every core busy leaves n devices
  # nothing to gain.
  result["cores_busy"] = busy
  print(json.dumps(result))


if __name__ == "__main__":
  main()
