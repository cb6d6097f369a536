"""Speed of networks on crossbars against native Flax, as ratios in one run.

    python benchmarks/inference_bench.py           # everything (~11-15 min)
    python benchmarks/inference_bench.py --quick   # 10 chips, fewer repeats

Float32, the best of several repeats after a warm-up (compilation excluded);
the two sides of each target ratio are timed in turns
(`common.best_interleaved`), so that the VM's drifting speed reaches both.

1. LeNet-5 (28 x 28) and ResNet-20 (32 x 32 x 3) at batch 256, chip
   programmed once (`rxjax.nn.program`), against `model.apply` jitted:
   * one slice, full-precision converters (analog devices and weights,
     `input_bits` / ADC `bits` None, ideal DAC), default ReRAM wires and 10%
     variation: the read is linear, so every layer runs as a native matmul /
     convolution with its folded `W_eff` (target <= 1.5x; RxNN: 2.5x over
     Caffe);
   * the default chip (8-bit weights in four 2-bit slices, 8 input cycles
     through 1-bit DACs, 8-bit ADCs), reported.
2. LeNet-5 (untrained weights: the accuracy printed is chance; this is a
   timing) on 100 chip instances (one-slice full-precision chip), each
   programmed (exact `G_eff` of every tile), calibrated on 256 images and
   evaluated on 1,000 test digits: one jitted call, vmapped over the chips
   (the digits in sub-batches of 50), against a Python loop calling the
   jitted single-chip function (target >= 5x). Also timed: the exact solves
   of all chips' tiles alone, which bound what any batching can gain.

The last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np

import common  # benchmarks/common.py
from rxjax import circuit, crossbar, data, device, models, periphery
from rxjax import nn as rnn


def one_slice_spec(inputs="signed") -> crossbar.ChipSpec:
  """One analog slice per device, full-precision converters, real wires."""
  return crossbar.ChipSpec(
      mapping=dataclasses.replace(crossbar.ChipSpec().mapping, weight_bits=None),
      device=dataclasses.replace(crossbar.ChipSpec().device, device_bits=None),
      dac=periphery.DACSpec.ideal(), adc=periphery.ADCSpec.ideal(),
      inputs=inputs)


def overhead(name, shape, repeats):
  model = models.get(name, num_classes=10)
  x = jax.random.uniform(jax.random.key(0), (256,) + shape, jnp.float32)
  variables = jax.jit(model.init)(jax.random.key(1), x[:1])
  calls = {"native": (jax.jit(model.apply), (variables, x))}
  for label, spec in (("one_slice", one_slice_spec()),
                      ("default", crossbar.ChipSpec())):
    # Weights and inputs are arguments, as for `model.apply`: closed over,
    # they become constants that XLA folds at compile time (13-19 s of
    # "constant folding" alarms per network in the run at b03a67f).
    chips = jax.jit(lambda v, x, k: rnn.program(model, v, x, spec, key=k))(
        variables, x, jax.random.key(2))
    run = jax.jit(lambda v, c, x, spec=spec: rnn.apply(model, v, c, x, spec))
    calls[label] = (run, (variables, chips, x))
  # Native and one slice in turns (their ratio is the target); the default
  # chip, 20-150x slower, on its own.
  t = common.best_interleaved(
      {k: calls[k] for k in ("native", "one_slice")}, repeats=repeats)
  fn, fn_args = calls["default"]
  t["default"] = common.best(fn, *fn_args, repeats=max(1, repeats // 2))
  native = t["native"]
  out = {"native_ms": native * 1e3}
  for label in ("one_slice", "default"):
    out[f"{label}_ms"] = t[label] * 1e3
    out[f"{label}_overhead"] = t[label] / native
  print(f"{name} batch 256: native {native * 1e3:.2f} ms; one slice "
        f"{out['one_slice_ms']:.2f} ms ({out['one_slice_overhead']:.2f}x); "
        f"default chip {out['default_ms']:.1f} ms "
        f"({out['default_overhead']:.1f}x)", flush=True)
  return out


def monte_carlo(n_chips, repeats, sub_batch=50):
  model = models.get("lenet5", num_classes=10)
  d = data.load("mnist_bundled")
  x_test, y_test = jnp.asarray(d.x_test), jnp.asarray(d.y_test)
  calib = jnp.asarray(d.x_train[:256])
  variables = jax.jit(model.init)(jax.random.key(1), calib[:1])
  spec = one_slice_spec(inputs="non_negative")
  args = (variables, calib, x_test, y_test)  # Arguments, not constants.
  program = lambda key, v, calib: rnn.program(model, v, calib, spec, key=key)
  program_many = jax.vmap(program, in_axes=(0, None, None))

  def one(key, v, calib, x, y):
    chips = program(key, v, calib)
    return jnp.mean(jnp.argmax(rnn.apply(model, v, chips, x, spec), -1) == y)

  def many(keys, v, calib, x, y):
    # All chips at once, the test digits in sub-batches so that every chip's
    # activations stay small (one jitted call).
    chips = program_many(keys, v, calib)
    def part(xy):
      out = jax.vmap(lambda c: rnn.apply(model, v, c, xy[0], spec))(chips)
      return jnp.sum(jnp.argmax(out, -1) == xy[1], axis=-1)
    xs = x.reshape((-1, sub_batch) + x.shape[1:])
    return jnp.sum(jax.lax.map(part, (xs, y.reshape(-1, sub_batch))),
                   axis=0) / y.shape[0]

  keys = jax.random.split(jax.random.key(3), n_chips)
  single = jax.jit(one)
  batched = jax.jit(many)
  loop = lambda keys: jnp.stack([single(k, *args) for k in keys])
  t = common.best_interleaved({"vmap": (batched, (keys, *args)),
                                "loop": (loop, (keys,))}, repeats=repeats)
  t_vmap, t_loop = t["vmap"], t["loop"]
  acc_v, acc_l = batched(keys, *args), loop(keys)
  agree = float(jnp.max(jnp.abs(acc_v - acc_l)))
  # What no batching can remove: every chip's tiles need their own exact
  # solve, and the solve is as fast one chip at a time as all at once.
  chips = jax.jit(program_many)(keys, variables, calib)
  layers = [c for c in jax.tree.leaves(
      chips, is_leaf=lambda a: isinstance(a, crossbar.Chip))
            if isinstance(c, crossbar.Chip)]
  gs = jnp.concatenate([c.g.reshape((-1,) + c.g.shape[-2:]) for c in layers])
  solve = jax.jit(lambda g: circuit.effective_conductance(g, spec.wires))
  t_solve = common.best(solve, gs, repeats=max(1, repeats // 2))
  print(f"LeNet-5 x {n_chips} chips on 1000 digits: vmapped {t_vmap:.2f} s, "
        f"loop {t_loop:.2f} s ({t_loop / t_vmap:.2f}x); accuracy "
        f"{float(acc_v.mean()):.4f} +- {float(acc_v.std()):.4f}, max "
        f"|vmap - loop| {agree:.1e}; the {gs.shape[0]} tiles' exact solves "
        f"alone {t_solve:.2f} s: no vmapped call can beat the loop by more "
        f"than {t_loop / t_solve:.2f}x", flush=True)
  return {"vmap_s": t_vmap, "loop_s": t_loop, "speedup": t_loop / t_vmap,
          "solve_s": t_solve, "speedup_bound": t_loop / t_solve,
          "accuracy_mean": float(acc_v.mean())}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true")
  args = parser.parse_args()
  repeats = 3 if args.quick else 7
  print(f"devices: {jax.devices()}", flush=True)
  lenet = overhead("lenet5", (28, 28, 1), repeats)
  resnet = overhead("resnet20", (32, 32, 3), repeats)
  mc = monte_carlo(10 if args.quick else 100, 2)
  result = {"lenet_overhead": lenet["one_slice_overhead"],
            "resnet20_overhead": resnet["one_slice_overhead"],
            "mc100_speedup_vs_loop": mc["speedup"],
            "mc100_speedup_bound": mc["speedup_bound"],
            "lenet_default_overhead": lenet["default_overhead"],
            "resnet20_default_overhead": resnet["default_overhead"],
            "mc_chips": 10 if args.quick else 100}
  print(json.dumps(result))


if __name__ == "__main__":
  main()
