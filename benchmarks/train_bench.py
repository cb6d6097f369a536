"""Speed of training ON crossbars (TxSim mode) against digital training.

    python benchmarks/train_bench.py           # best of 3 (~4.5 min)
    python benchmarks/train_bench.py --quick   # best of 1 (~2 min)
    python benchmarks/train_bench.py --only retrain   # part 3 alone

Float32, on the CPU JAX finds (XLA uses every core), compilation excluded
(one warm-up call first), the best of several repeats. Everything times the
functions `experiment.train` runs: the jitted step of
`experiment.train_step` and the chip programming of `experiment.program_fn`.
The chip is TxSim's (`configs/lenet_mnist_txsim.py`, Cross-NI from
`experiment.txsim_specs`): 64 x 64 tiles, 100 kOhm - 1 MOhm ReRAM in
differential pairs, one analog slice, 8-bit inputs in one DAC cycle, 8-bit
ADCs, real wires, no variation; forward read on the chip, backward pass as
the transposed read, update through the device response (nu = 0.01, gamma =
5) after plain SGD. The digital reference is plain `optax.sgd` with the same
learning rate on the same model and batches.

1. LeNet-5, batch 128 (real MNIST digits), 10 consecutive steps on 10
   different batches, state and chips threaded from step to step:
   * digital: 10 steps / 10;
   * interpolated FCM (L = 10): one step that programs the chip exactly
     (every tile's `G_eff` solved in one batch, ADCs calibrated on the
     batch, inside the step's forward pass) and 9 steps that reprogram the
     chip with the stored distortion, / 10 (the cost per step amortized over
     one programming interval);
   * exact FCM: 10 programming steps, / 10.
   The ratios to digital are the targets (interpolated <= 3x, exact goal <=
   10x; TxSim reports 14x over native GPU training). To say what bounds
   them, the programming step is split into its `G_eff` solves (the extra
   cost of real wires: the same step with ideal wires, which skips the
   solve, subtracted) and the rest, and the interpolated step is timed
   alone.
2. The 784-256-128-10 MLP, batch 64: one epoch over the 4,000 bundled
   training digits (63 steps, the last one of 32), digital vs TxSim
   (interpolated, L = 10, a programming step every 10 steps as `train`
   does), seconds per epoch. For comparison: IBM aihwkit's analog
   training of this MLP, on this CPU, measured 5-8x its native torch training
   per epoch with one thread (14-35x with two).
3. RxNN re-training of LeNet-5 at batch 128 on the main job's re-training
   chip (`configs/lenet_mnist.py`: Cross64, 100 kOhm - 1 MOhm, 8-bit
   weights in 4 slices of 2-bit cells, differential pairs, 8-bit inputs
   through 1-bit DACs, 8-bit ADCs, column gain), Adam, one step each, the
   steps taken in turns (`common.in_turns`, so that a shared machine's
   drift reaches every side of a ratio alike): digital; straight-through
   (`retrain.backward`, the chip reprogrammed with the stored distortion,
   floating-point backward); "circuit" (the current weights' `G_eff`
   solved exactly in the step and differentiated); "circuit_interpolated"
   (the stored distortion, differentiated through the mapping). Goals:
   circuit <= 10x digital, straight-through <= 3x. To say what bounds the
   circuit step, its exact solves are timed alone (forward, and forward
   with their VJP), all tiles of the network in one batch; to say what
   bounds straight-through, its forward pass alone and the floor of the
   chip's read (`read_floor`: every multiply-accumulate of the network
   once per input cycle, weight slice and polarity, as one GEMM per layer,
   without the converters).

The last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import optax

import common  # benchmarks/common.py
from rxjax import (circuit, crossbar, data, experiment, models, optim,
                   periphery)
from rxjax import nn as rnn
from rxjax import validate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from configs import lenet_mnist, lenet_mnist_txsim  # noqa: E402

INTERVAL = 10  # L, steps between exact programmings (interpolated FCM).


def txsim_setup(config):
  """Cross-NI spec, the two optimizers and the chip key, as `train` has them.

  Returns:
    (spec, digital optimizer, txsim optimizer, chip key).
  """
  spec, update = experiment.txsim_specs(config)["cross_ni"]
  lr = config.learning_rate
  digital = optax.sgd(lr)
  txsim = optax.chain(optax.sgd(lr), optim.apply_device_response(
      update, spec.device, key=experiment.keys.update_key(config.seed)))
  chip_key = experiment.keys.chip_key(config.seed)
  return spec, digital, txsim, chip_key


def initial_state(model, opt, x, seed):
  """The training state `experiment.train` starts from: initial variables
  from `seed` and `opt`'s state for them."""
  variables = experiment.init_variables(model, x, seed)
  return {"variables": variables, "opt_state": opt.init(variables["params"])}


def _check_chip(config):
  """Fails loudly if the config no longer describes the issue's chip."""
  spec = experiment.txsim_specs(config)["cross_ni"][0]
  m, d = spec.mapping, spec.device
  assert (m.tile_rows, m.tile_cols) == (64, 64), (m.tile_rows, m.tile_cols)
  assert m.signed == "differential" and m.weight_bits is None, m
  assert d.device_bits is None and d.sigma == 0.0, d
  assert spec.dac.input_bits == 8 and spec.dac.dac_bits == 8, spec.dac
  assert spec.adc.bits == 8, spec.adc
  assert spec.backward == "transposed_read", spec.backward
  return spec


def lenet(config, repeats):
  """LeNet-5 at batch 128: digital, interpolated and exact steps (seconds)."""
  d = data.load(config.dataset, seed=config.seed)
  n = 128 * INTERVAL
  xs = jnp.asarray(d.x_train[:n]).reshape((INTERVAL, 128) + d.x_train.shape[1:])
  ys = jnp.asarray(d.y_train[:n]).reshape(INTERVAL, 128)
  model = models.get("lenet5", num_classes=d.num_classes)
  spec, digital_opt, txsim_opt, chip_key = txsim_setup(config)
  digital_step = experiment.train_step(model, digital_opt)
  txsim_step = experiment.train_step(model, txsim_opt, spec)
  exact_step = experiment.train_step(model, txsim_opt, spec, program=True)
  ideal_spec = spec.replace(wires=circuit.Wires.ideal())  # No G_eff solve.
  exact_no_solve = experiment.train_step(model, txsim_opt, ideal_spec,
                                         program=True)
  digital0 = initial_state(model, digital_opt, xs[0], config.seed)
  txsim0 = initial_state(model, txsim_opt, xs[0], config.seed)

  def digital(state):
    for i in range(INTERVAL):
      state, _, loss, _ = digital_step(state, None, xs[i], ys[i])
    return state, loss

  def interpolated(state):
    state, chips, loss, _ = exact_step(state, chip_key, xs[0], ys[0])
    for i in range(1, INTERVAL):
      state, chips, loss, _ = txsim_step(state, chips, xs[i], ys[i])
    return state, chips, loss

  def exact(state, step=exact_step):
    for i in range(INTERVAL):
      state, chips, loss, _ = step(state, chip_key, xs[i], ys[i])
    return state, chips, loss

  chips0 = exact_step(txsim0, chip_key, xs[0], ys[0])[1]

  def steps_only(state):
    chips = chips0
    for i in range(INTERVAL):
      state, chips, loss, _ = txsim_step(state, chips, xs[i], ys[i])
    return state, chips, loss

  t = {}
  t["digital"] = common.best(digital, digital0, repeats=repeats) / INTERVAL
  t["interpolated"] = common.best(interpolated, txsim0,
                                   repeats=repeats) / INTERVAL
  t["exact"] = common.best(exact, txsim0, repeats=repeats) / INTERVAL
  t["txsim_step"] = common.best(steps_only, txsim0,
                                 repeats=repeats) / INTERVAL
  t["exact_no_solve"] = common.best(
      functools.partial(exact, step=exact_no_solve), txsim0,
      repeats=repeats) / INTERVAL
  t["g_eff_solve"] = t["exact"] - t["exact_no_solve"]
  ms = {k: v * 1e3 for k, v in t.items()}
  interp_ratio = t["interpolated"] / t["digital"]
  exact_ratio = t["exact"] / t["digital"]
  print(f"LeNet-5 batch 128, per step: digital {ms['digital']:.2f} ms; txsim "
        f"interpolated (L = {INTERVAL}) {ms['interpolated']:.2f} ms "
        f"({interp_ratio:.2f}x, target <= 3x); exact {ms['exact']:.2f} ms "
        f"({exact_ratio:.2f}x, goal <= 10x; TxSim: 14x over native GPU)",
        flush=True)
  print(f"  exact step = {ms['g_eff_solve']:.2f} ms G_eff solves "
        f"({t['g_eff_solve'] / t['exact']:.0%}) + {ms['exact_no_solve']:.2f} "
        f"ms the rest (the same step with ideal wires: mapping, ADC "
        f"calibration, forward, backward, update); an interpolated step "
        f"alone {ms['txsim_step']:.2f} ms "
        f"({t['txsim_step'] / t['digital']:.2f}x digital)", flush=True)
  return {"interpolated_vs_digital": interp_ratio,
          "exact_vs_digital": exact_ratio,
          **{f"lenet_{k}_ms": v for k, v in ms.items()}}


def mlp(config, repeats):
  """The 784-256-128-10 MLP, batch 64: seconds per epoch, digital vs txsim."""
  d = data.load(config.dataset, seed=config.seed)
  batch_size = 64
  model = models.get("mlp", num_classes=d.num_classes)
  n_params = models.count_params(model, d.x_train.shape[1:])
  assert n_params == 235_146, n_params  # 784-256-128-10.
  spec, digital_opt, txsim_opt, chip_key = txsim_setup(config)
  digital_step = experiment.train_step(model, digital_opt)
  txsim_step = experiment.train_step(model, txsim_opt, spec)
  exact_step = experiment.train_step(model, txsim_opt, spec, program=True)
  exact_no_solve = experiment.train_step(
      model, txsim_opt, spec.replace(wires=circuit.Wires.ideal()),
      program=True)
  batches = list(data.batches(
      d.x_train, d.y_train, batch_size,
      key_or_seed=experiment.keys.epoch_key(config.seed, 0)))
  assert len(batches) == math.ceil(len(d.x_train) / batch_size)
  digital0 = initial_state(model, digital_opt, d.x_train, config.seed)
  txsim0 = initial_state(model, txsim_opt, d.x_train, config.seed)

  def digital(state):
    for x, y in batches:
      state, _, loss, _ = digital_step(state, None, x, y)
    return state, loss

  def txsim(state):
    chips = None
    for i, (x, y) in enumerate(batches):
      if i % INTERVAL == 0:
        state, chips, loss, _ = exact_step(state, chip_key, x, y)
      else:
        state, chips, loss, _ = txsim_step(state, chips, x, y)
    return state, chips, loss

  chips0 = exact_step(txsim0, chip_key, *batches[0])[1]

  def steps_only(state):
    chips = chips0
    for x, y in batches:
      state, chips, loss, _ = txsim_step(state, chips, x, y)
    return state, chips, loss

  n_programs = math.ceil(len(batches) / INTERVAL)
  t_digital = common.best(digital, digital0, repeats=repeats)
  t_txsim = common.best(txsim, txsim0, repeats=repeats)
  t_steps = common.best(steps_only, txsim0, repeats=repeats)
  x0, y0 = batches[0]
  t_solve = (common.best(exact_step, txsim0, chip_key, x0, y0,
                          repeats=repeats)
             - common.best(exact_no_solve, txsim0, chip_key, x0, y0,
                            repeats=repeats))
  ratio = t_txsim / t_digital
  print(f"MLP 784-256-128-10 batch 64, one epoch ({len(batches)} steps on "
        f"{len(d.x_train)} digits): txsim {t_txsim:.3f} s, digital "
        f"{t_digital:.3f} s ({ratio:.1f}x; aihwkit on this CPU: 5-8x its "
        f"native torch with one thread, 14-35x with two)", flush=True)
  print(f"  txsim epoch ~ {n_programs} G_eff solves x {t_solve:.3f} s + "
        f"{len(batches)} interpolated steps {t_steps:.3f} s "
        f"({t_steps / t_digital:.1f}x the digital epoch)", flush=True)
  return {"mlp_txsim_epoch_s": t_txsim, "mlp_digital_epoch_s": t_digital,
          "mlp_txsim_vs_digital": ratio, "mlp_g_eff_solve_s": t_solve,
          "mlp_txsim_steps_epoch_s": t_steps}


def read_floor(model, variables, x, chips, spec):
  """What one read of every layer must compute, as bare kernels.

  Each multiply-accumulate of the network is done once per input pass,
  input cycle, weight slice and polarity (RxNN V-A: bit-serial inputs,
  sliced weights, differential pairs), over the layer's own fan-in and
  fan-out (no tile padding): per layer one GEMM `[C Q R, K] @ [K, S P F]`
  (`R` the layer's input rows: batch x output positions) of random input
  bits with random conductances.

  Returns:
    `(products, args, macs, digital_macs)`: a jitted function of `args`
    that computes the products (reduced by a max over each row, which XLA
    cannot fold into the GEMM), the products' multiply-accumulates and the
    digital layers' (`R K F`). The ADCs, the shift-and-add and the DAC's
    bit extraction are left out: a lower bound of the read on this CPU.
  """
  _, inter = model.apply(variables, x, capture_intermediates=True,
                         mutable=["intermediates"])
  inter = inter["intermediates"]
  c = periphery.n_cycles(spec.dac) * spec.periphery.inputs.n_passes
  d = spec.device
  key = jax.random.key(0)
  args, macs, digital_macs = [], 0, 0
  for name in sorted(chips):
    chip = chips[name]["chip"]
    g, s, p = chip.g.shape[:3]
    assert g == 1, (name, chip.g.shape)  # One conv group (LeNet-5).
    rows = math.prod(inter[name]["__call__"][0].shape[:-1])
    k_in, f = chip.fan_in, chip.fan_out
    key, kb, kg = jax.random.split(key, 3)
    bits = jax.random.bernoulli(kb, 0.5, (c, rows, k_in)).astype(jnp.float32)
    cond = jax.random.uniform(kg, (k_in, s * p * f), jnp.float32, d.g_min,
                              d.g_max)
    args.append((bits, cond))
    macs += c * rows * k_in * s * p * f
    digital_macs += rows * k_in * f

  def products(args):
    return [(b.reshape(-1, b.shape[-1]) @ g).max(-1) for b, g in args]

  return jax.jit(products), args, macs, digital_macs


def retrain(repeats):
  """LeNet-5 at batch 128 re-training steps on the main job's chip, in
  turns: digital, straight-through, circuit, circuit_interpolated."""
  config = lenet_mnist.get_config()
  spec = validate.check(config).retrain_spec
  assert spec.mapping.tile_rows == 64 and spec.gain_correction == "column"
  d = data.load(config.dataset, seed=config.seed)
  x, y = jnp.asarray(d.x_train[:128]), jnp.asarray(d.y_train[:128])
  model = models.get("lenet5", num_classes=d.num_classes)
  opt = optax.adam(config.retrain.learning_rate)
  state = initial_state(model, opt, x, config.seed)
  chip_key = jax.random.fold_in(jax.random.key(config.seed), 1_000_003)
  program = experiment.program_fn(model, spec)
  chips = program(state["variables"], jnp.asarray(d.x_train[:256]),
                  key=chip_key)
  steps = {
      "digital": (experiment.train_step(model, opt), (state, None, x, y)),
      "straight_through": (experiment.train_step(model, opt, spec),
                           (state, chips, x, y))}
  for backward in ("circuit", "circuit_interpolated"):
    steps[backward] = (experiment.train_step(model, opt, spec,
                                             backward=backward),
                       (state, chips, x, y))
  # What bounds "circuit": the exact solves of the step's conductances,
  # alone (all layers' tiles in one batch), and with their VJP.
  tiles = jnp.concatenate([
      c.g.reshape(-1, 64, 64) for c in jax.tree.leaves(
          chips, is_leaf=lambda a: isinstance(a, crossbar.Chip))
      if isinstance(c, crossbar.Chip)])
  solve = jax.jit(lambda g: circuit.effective_conductance(g, spec.wires))
  solve_vjp = jax.jit(lambda g: jax.vjp(
      lambda a: circuit.effective_conductance(a, spec.wires), g)[1](g)[0])
  steps["solve"] = (solve, (tiles,))
  steps["solve_and_vjp"] = (solve_vjp, (tiles,))
  # What bounds straight-through: its forward pass alone (the refresh and
  # the chip's reads) against the digital forward pass.
  forward = jax.jit(lambda v, c, x: rnn.apply(model, v, c, x, spec,
                                              refresh=True)[0])
  steps["straight_through_forward"] = (forward, (state["variables"], chips,
                                                 x))
  steps["digital_forward"] = (jax.jit(model.apply), (state["variables"], x))
  products, floor_args, floor_macs, digital_macs = read_floor(
      model, state["variables"], x, chips, spec)
  steps["read_floor"] = (products, (floor_args,))
  timed = common.in_turns(steps, repeats=repeats)
  ms = {k: t * 1e3 for k, (t, _) in timed.items()}
  cores = {k: c for k, (_, c) in timed.items()}
  ratio = {k: ms[k] / ms["digital"] for k in ms}
  print(f"LeNet-5 batch 128 re-training steps on the main job's chip "
        f"(Cross64, 4 slices, 8-bit converters; {tiles.shape[0]} tiles of "
        f"64 x 64), in turns:", flush=True)
  goals = {"straight_through": "<= 3x", "circuit": "<= 10x"}
  for k in ("digital", "straight_through", "circuit",
            "circuit_interpolated", "solve", "solve_and_vjp",
            "digital_forward", "straight_through_forward",
            "read_floor"):
    goal = f", goal {goals[k]}" if k in goals else ""
    print(f"  {k}: {ms[k]:.1f} ms ({ratio[k]:.2f}x digital{goal}; "
          f"{cores[k]:.2f} cores busy)", flush=True)
  # Flops: the digital step's from XLA's cost analysis (it has no loops);
  # the exact solves' from the sweep's count in
  # `circuit.effective_conductance`'s docstring, 2.7 M N^3 + 2 M^2 N^2 per
  # tile (64 x 64: the sweep is the method "auto" picks).
  digital_flops = steps["digital"][0].lower(
      *steps["digital"][1]).compile().cost_analysis()
  digital_flops = (digital_flops[0] if isinstance(digital_flops, list)
                   else digital_flops)["flops"]
  solve_flops = tiles.shape[0] * (2.7 * 64**4 + 2 * 64**4)
  print(f"  flops: digital step {digital_flops / 1e9:.2f} GFLOP (XLA cost "
        f"analysis); the {tiles.shape[0]} tiles' exact solves "
        f"{solve_flops / 1e9:.1f} GFLOP forward "
        f"({solve_flops / digital_flops:.0f}x the digital step), before "
        "their VJP", flush=True)
  print(f"  read floor: {floor_macs / 1e9:.2f} G multiply-accumulates per "
        f"read of the network (every MAC x input cycles x slices x "
        f"polarities, no tile padding) against the digital forward pass's "
        f"{digital_macs / 1e9:.3f} G", flush=True)
  return {"retrain_tiles": int(tiles.shape[0]),
          "retrain_read_floor_gmac": floor_macs / 1e9,
          "retrain_digital_gflop": digital_flops / 1e9,
          "retrain_solve_gflop": solve_flops / 1e9,
          **{f"retrain_{k}_ms": v for k, v in ms.items()},
          **{f"retrain_{k}_vs_digital": v for k, v in ratio.items()
             if k != "digital"},
          **{f"retrain_{k}_cores": v for k, v in cores.items()}}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--quick", action="store_true",
                      help="best of 1 instead of 3 after the warm-up")
  parser.add_argument("--only", choices=("txsim", "retrain"),
                      help="run parts 1-2 (txsim) or part 3 (retrain) only")
  args = parser.parse_args()
  start = time.perf_counter()
  config = lenet_mnist_txsim.get_config()
  _check_chip(config)
  print(f"devices: {jax.devices()}; float32", flush=True)
  repeats = 1 if args.quick else 3
  result = {}
  if args.only != "retrain":
    lenet_out = lenet(config, repeats)
    mlp_out = mlp(config, repeats)
    result = {
        "interpolated_vs_digital": lenet_out.pop("interpolated_vs_digital"),
        "exact_vs_digital": lenet_out.pop("exact_vs_digital"),
        "mlp_txsim_epoch_s": mlp_out.pop("mlp_txsim_epoch_s"),
        "mlp_digital_epoch_s": mlp_out.pop("mlp_digital_epoch_s"),
        **mlp_out, **lenet_out}
  if args.only != "txsim":
    result.update(retrain(3 if args.quick else 7))
  result = {
      **result,
      "quick": args.quick,
      "machine": f"{os.cpu_count()}-core {jax.devices()[0].platform}",
      "seconds": time.perf_counter() - start}
  print(json.dumps({k: round(v, 4) if isinstance(v, float) else v
                    for k, v in result.items()}))


if __name__ == "__main__":
  main()
