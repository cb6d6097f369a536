"""RxNN figures 12(a), 14 and 15 for LeNet-5 and the CIFAR ConvNet, on crossbars.

    python benchmarks/rxnn_study.py              # full run, docs/figures
    python benchmarks/rxnn_study.py --quick      # smoke run, WORKDIR/figures
    python benchmarks/rxnn_study.py --data_dir ~/data/cifar-10-batches-py

RxNN (Jain et al., section VIII) reports three application-level findings:
accuracy loss grows with the crossbar size (fig. 12a: Cross16 < Cross32 <
Cross64), limited precision and device / circuit non-idealities each cost
accuracy (fig. 14: FP32 -> Cross-ideal -> non-ideal -> with variation), and
re-training on the chip recovers part of the loss (fig. 15). This script
measures the same three things for the two small networks of its Table I,
on what runs here:

* LeNet-5 ("lenet5") on the 5,000 bundled MNIST digits (4,000 train / 1,000
  test), trained digitally with `configs/lenet_mnist.py`.
* The CIFAR ConvNet ("convnet", Caffe's cifar10_quick) on CIFAR-10 when
  `--data_dir` holds the python batches, otherwise on the same bundled MNIST
  digits (1 x 28 x 28 inputs; the ConvNet needs >= 8 px). It has ~20x
  LeNet's MACs and, because ip2 reads ip1's signed outputs, two input
  passes, so it is tested on 300 test images, calibrated on 128, and has no
  6-bit / 4-bit-ADC rows (the table says so).

Chips (`experiment.chip_spec` of the config's chip block): the papers'
ReRAM (100 kOhm - 1 MOhm, 2-bit cells, 8-bit weights, inputs and calibrated
ADCs, r_row 1 / r_col 4.6 / r_source = r_sense 100 ohm). On it LeNet loses
almost nothing, so every sweep is repeated with a 10x lower-resistance
device (10 kOhm - 100 kOhm), where the IR drops are 10x larger relative to
the devices.

1. Fig. 12a: test accuracy against the tile size {16, 32, 64, 128}: fp32,
   Cross-ideal (precision only), non-ideal without variation for both
   devices.
2. Fig. 14 at 64 x 64: fp32; precision only (8-bit chip, RxNN's 6-bit
   "Cross6", a 4-bit ADC); + wires; + 10 % process variation (mean over a
   few chip instances), for both devices.
3. Fig. 15: RxNN re-training (chip forward, fp32 backward, digital update;
   `experiment.train` with the chip's spec) on the non-ideal chip with the
   largest loss: without the per-column gain correction (rxjax's old
   re-training) at the config's learning rate, and with it (the config's
   `retrain.gain_correction`, the default) at that rate and a 5x smaller
   one; accuracy on that chip before, with the gain correction alone, and
   after, and the re-trained network in fp32. Several seeds and more chips:
   `benchmarks/retrain_study.py` (docs/training.md).
4. For LeNet, how the chip's logits relate to the fp32 ones (least-squares
   gain and residual): the IR drops mostly scale the outputs down, which
   argmax ignores and cross-entropy does not.

Everything is kept in `--workdir` (one `experiment.Workdir` per network:
checkpoints, `results.json`), so a rerun resumes and reuses finished
evaluations; the persistent XLA cache there makes reruns skip most
compilation (compiling a 128 x 128 chip's programming takes ~70 s, running
it ~4 s). Outputs: `rxnn_study.md` (tables), `rxnn_study.csv` (one row per
measurement), `rxnn_size.png` and `rxnn_nonidealities.png` in `--out`
(default docs/figures; `WORKDIR/figures` with --quick).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import shlex
import sys
import time

# One OpenBLAS thread, as in characterize.py: a busy-waiting pool is slow on
# a shared 2-core machine. Must be set before numpy / jaxlib load it.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from configs import lenet_mnist  # noqa: E402
from rxjax import data as data_lib  # noqa: E402
from rxjax import experiment  # noqa: E402
from rxjax import nn as rnn  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Device:
  tag: str  # Short name used in result keys.
  label: str
  r_min: float  # ohm
  r_max: float  # ohm


PAPER = Device("paper", "ReRAM 100k-1M ohm", 100e3, 1e6)
LOW_R = Device("lowr", "low-R 10k-100k ohm", 10e3, 100e3)
DEVICES = (PAPER, LOW_R)
FIG14_SIZE = 64


@dataclasses.dataclass(frozen=True)
class Plan:
  """One network's study and its budget knobs."""
  model: str
  title: str  # Network name in tables and plots.
  dataset: str
  data_dir: str | None
  epochs: int  # Digital training epochs.
  test_size: int  # Test images evaluated (0: all).
  calibration_size: int  # Training images that calibrate the chips.
  inputs: str  # chip.inputs: "non_negative" (one pass) or "signed".
  devices: tuple[Device, ...]  # Device ranges of the sweeps.
  sizes: tuple[int, ...]  # Tile sizes of fig. 12a.
  ideal_sizes: tuple[int, ...]  # Tile sizes with a Cross-ideal point.
  num_chips: int  # Chip instances with variation (fig. 14; 0: skip).
  precision_rows: bool  # Fig. 14's 6-bit and 4-bit-ADC Cross-ideal rows.
  retrain_epochs: int
  retrain_size: int  # Training images used for re-training (0: all).
  # Learning rates re-trained with besides the config's (Adam, cosine).
  retrain_extra_lrs: tuple[float, ...] = ()
  # Logit gain and residual distortion of every non-ideal chip (fig. 12a).
  logit_diagnostics: bool = False


def plans(args) -> list[Plan]:
  q = args.quick
  # Every LeNet crossbar input is a pixel or a ReLU output: one input pass.
  lenet = Plan(
      model="lenet5", title="LeNet-5", dataset="mnist_bundled",
      data_dir=None, epochs=2 if q else 15, test_size=200 if q else 0,
      calibration_size=256, inputs="non_negative", devices=DEVICES,
      sizes=(16, 64) if q else (16, 32, 64, 128),
      ideal_sizes=(64,) if q else (16, 32, 64, 128),
      num_chips=2 if q else 4, precision_rows=True,
      retrain_epochs=1 if q else 2, retrain_size=256 if q else 0,
      retrain_extra_lrs=(1e-4,), logit_diagnostics=True)
  # The ConvNet's ip2 reads ip1's outputs, which have no ReLU (as in the
  # Caffe prototxt): signed inputs, two passes, twice LeNet's read cost per
  # MAC; with ~20x LeNet's MACs it is tested on a subset.
  cifar = args.data_dir is not None
  convnet = Plan(
      model="convnet", title="ConvNet",
      dataset="cifar10" if cifar else "mnist_bundled",
      data_dir=args.data_dir, epochs=(1 if q else (8 if cifar else 5)),
      test_size=50 if q else 300, calibration_size=32 if q else 128,
      inputs="signed", devices=(LOW_R,) if q else DEVICES,
      sizes=(64,) if q else (16, 32, 64, 128), ideal_sizes=(64,),
      num_chips=0 if q else 2, precision_rows=False, retrain_epochs=1,
      retrain_size=64 if q else 640, retrain_extra_lrs=() if q else (1e-4,))
  return [lenet, convnet]


def network_config(plan: Plan, seed: int = 0):
  """`configs/lenet_mnist.py` with this network, data, epochs and seed."""
  config = lenet_mnist.get_config()
  config.seed = seed
  config.model = plan.model
  config.dataset = plan.dataset
  config.data_dir = plan.data_dir
  config.num_epochs = plan.epochs
  config.eval.calibration_size = plan.calibration_size
  config.chip.inputs = plan.inputs
  config.eval.tile_sizes = tuple(plan.sizes)
  config.eval.num_chips = plan.num_chips
  config.retrain.num_epochs = plan.retrain_epochs
  # Fig. 15 passes every re-training's chip (its readout calibration
  # included) explicitly; the work directory's config keeps the field at
  # its old value, so that directories written before it existed resume.
  config.retrain.adc_range = "calibrated"
  return config


def chip_block(config, device: Device, **bits):
  """The config's chip block with `device`'s range and optional bit counts."""
  chip = config.chip.copy_and_resolve_references()
  chip.r_min_ohm, chip.r_max_ohm = device.r_min, device.r_max
  for name, value in bits.items():
    setattr(chip, name, value)
  return chip


def describe_common(config) -> str:
  c = config.chip
  return (f"{c.signed} pairs of {c.device_bits}-bit cells holding "
          f"{c.weight_bits}-bit weights, {c.input_bits}-bit inputs through "
          f"{c.dac_bits}-bit DACs ({c.dac_model}), {c.adc_bits}-bit ADCs "
          f"calibrated on training images; wires r_row "
          f"{c.r_row_ohm:g} / r_col {c.r_col_ohm:g} ohm per cell, r_source "
          f"{c.r_source_ohm:g} / r_sense {c.r_sense_ohm:g} ohm; variation "
          f"sigma {c.sigma:g} (lognormal) where stated")


# ---------------------------------------------------------------------------
# One network.


class Network:
  """Trains (or resumes) one network and evaluates it on chips, cached."""

  def __init__(self, plan: Plan, args, seed: int, times: dict, used: set):
    self.plan, self.times, self.used, self.seed = plan, times, used, seed
    self.config = network_config(plan, seed)
    self.wd = experiment.Workdir(
        os.path.join(args.workdir, ("quick_" if args.quick else "")
                     + plan.model + ("_cifar10" if plan.data_dir else "")
                     + (f"_s{seed}" if seed else "")),
        self.config)
    self.run = experiment.setup(self.config)
    data = self.run.data
    n_test = len(data.y_test)
    if plan.test_size and plan.test_size < n_test:
      idx = np.sort(np.random.default_rng(0).choice(
          n_test, plan.test_size, replace=False))
      data = data._replace(x_test=data.x_test[idx], y_test=data.y_test[idx])
      self.run = dataclasses.replace(self.run, data=data)
    self.n_test, self.n_test_all = len(data.y_test), n_test
    self.data_name = data.name
    self.key = jax.random.key(self.config.seed)
    print(f"\n== {plan.title}, seed {seed}, on {data.name}: "
          f"{len(data.y_train)} train, "
          f"{self.n_test} of {n_test} test images; work dir {self.wd.path}",
          flush=True)
    self.variables = self.timed(self.times_key("train"), lambda: (
        experiment.train(self.config, self.run, self.wd, phase="digital",
                         epochs=plan.epochs,
                         learning_rate=self.config.learning_rate)))

  def timed(self, name, fn):
    t = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t
    self.times.setdefault(name, dt)  # The first (computing) run's time.
    self.used.add(name)
    return out

  def times_key(self, name):
    return f"{self.plan.model}" + (f"_s{self.seed}" if self.seed else "") \
        + f"/{name}"

  def result(self, name: str, compute):
    """`compute()` once per work directory; prints value and time."""
    name = f"{name}@test{self.n_test}"
    computed = []

    def once():
      computed.append(True)
      return compute()

    t = time.perf_counter()
    value = self.wd.result(name, once)
    dt = time.perf_counter() - t
    if computed:
      self.times[self.times_key(name)] = dt
    self.used.add(self.times_key(name))
    shown = value["mean"] if isinstance(value, dict) else value
    print(f"  {name}: {shown:.4f} "
          f"({f'{dt:.1f} s' if computed else 'cached'})", flush=True)
    return value

  def spec(self, device, size, *, mode="nonideal", variation=False, **bits):
    return rnn.mode_spec(mode, experiment.chip_spec(
        chip_block(self.config, device, **bits), tile_size=size,
        variation=variation))

  def fp32(self, variables=None, name="fp32"):
    v = self.variables if variables is None else variables
    return self.result(name, lambda: experiment.accuracy(
        self.run.model, v, self.run.data, None))

  def on_chip(self, name, spec, size, variables=None):
    v = self.variables if variables is None else variables
    return self.result(name, lambda: experiment.evaluate_on_chip(
        self.run, v, spec,
        key=experiment.keys.eval_chip_key(self.config.seed, size)))

  def on_chips(self, name, spec, size):
    return self.result(name, lambda: experiment.evaluate_chips(
        self.run, self.variables, spec,
        # One Monte-Carlo study per tile size: its own salt beside the
        # main job's one.
        key=jax.random.fold_in(self.key,
                               experiment.keys.MONTE_CARLO_SALT + size),
        n=self.plan.num_chips, batch_size=self.config.eval.batch_size))

  def logit_gain(self, name, spec, size) -> dict:
    """How the chip's logits relate to the fp32 ones, on the test images.

    `gain` is the least-squares scale of the chip's logits onto the fp32
    logits (`<l_chip, l_fp32> / <l_fp32, l_fp32>`), `residual` the relative
    norm of what that scale does not explain. Accuracy sees only the
    residual (argmax ignores a common scale); the cross-entropy re-training
    minimizes sees both.
    """
    def compute():
      model, run = self.run.model, self.run
      # The calibration batch as an argument: a constant would be folded.
      chips = jax.jit(lambda v, x, k: rnn.program(model, v, x, spec, key=k))(
          self.variables, run.calib,
          experiment.keys.eval_chip_key(self.config.seed, size))
      chip_fn = jax.jit(lambda v, c, x: rnn.apply(model, v, c, x, spec))
      digital_fn = jax.jit(model.apply)
      num = den = res = 0.0
      chip_l, fp_l = [], []
      for x, _ in data_lib.batches(run.data.x_test, run.data.y_test,
                                   self.config.eval.batch_size,
                                   key_or_seed=0, shuffle=False):
        chip_l.append(np.asarray(chip_fn(self.variables, chips, x)))
        fp_l.append(np.asarray(digital_fn(self.variables, x)))
      lc, lf = np.concatenate(chip_l), np.concatenate(fp_l)
      num, den = float(np.sum(lc * lf)), float(np.sum(lf * lf))
      gain = num / den
      res = float(np.linalg.norm(lc - gain * lf) / np.linalg.norm(gain * lf))
      return {"gain": gain, "residual": res, "mean": gain}
    return self.result(name, compute)

  def retrain(self, device, size, learning_rate=None, gain="none",
              adc_range="calibrated", backward="straight_through"):
    plan = self.plan
    run = self.run
    if plan.retrain_size and plan.retrain_size < len(run.data.y_train):
      # The first `retrain_size` images of the (already shuffled) train split.
      data = run.data._replace(x_train=run.data.x_train[:plan.retrain_size],
                               y_train=run.data.y_train[:plan.retrain_size])
      run = dataclasses.replace(run, data=data)
    n = len(run.data.y_train)
    phase = (f"retrain_{device.tag}_cross{size}_n{n}_e{plan.retrain_epochs}")
    lr = self.config.retrain.learning_rate
    if learning_rate is not None and learning_rate != lr:
      phase += f"_lr{learning_rate:g}"
      lr = learning_rate
    if gain != "none":
      phase += f"_gain{gain}"
    if adc_range != "calibrated":
      phase += f"_adc{adc_range}"
    if backward != "straight_through":
      phase += f"_bw{backward}"
    spec = self.spec(device, size).replace(gain_correction=gain,
                                           adc_range=adc_range)
    variables = self.timed(self.times_key(phase), lambda: experiment.train(
        self.config, run, self.wd, phase=phase, epochs=plan.retrain_epochs,
        learning_rate=lr, spec=spec, init=self.variables, backward=backward))
    return phase, n, variables


# ---------------------------------------------------------------------------
# The study.


def row(net: Network, figure, step, chip, acc, fp32, *, tile="", device="",
        variation="", n_chips=1, std=None):
  return {
      "network": net.plan.title, "seed": net.seed, "data": net.data_name,
      "figure": figure,
      "step": step, "chip": chip, "tile_size": tile, "device": device,
      "variation": variation, "n_chips": n_chips,
      "test_images": net.n_test, "accuracy": acc,
      "std": "" if std is None else std,
      "delta_vs_fp32_pp": 100 * (acc - fp32), "logit_gain": "",
      "logit_residual": ""}


def study(net: Network, backwards=("straight_through",),
          fig15=None) -> list[dict]:
  """One seed's rows. `fig15`: (device tag, tile size) re-trained on; None:
  the non-ideal chip of fig. 12a with the largest loss."""
  plan, rows = net.plan, []
  fp32 = net.fp32()
  rows.append(row(net, "12a/14", "fp32", "none (digital, float32)", fp32,
                  fp32))
  # Fig. 12a: accuracy against tile size.
  for size in plan.ideal_sizes:
    acc = net.on_chip(f"ideal/cross{size}",
                      net.spec(PAPER, size, mode="ideal"), size)
    rows.append(row(net, "12a", "Cross-ideal (precision only)",
                    f"Cross{size}-ideal: 8-bit chip, no wires, no variation",
                    acc, fp32, tile=size, device="any", variation=0))
  for device in plan.devices:
    for size in plan.sizes:
      acc = net.on_chip(f"nonideal/{device.tag}/cross{size}",
                        net.spec(device, size), size)
      rows.append(row(net, "12a", f"non-ideal, {device.label}",
                      f"Cross{size}, {device.label}, wires on, no variation",
                      acc, fp32, tile=size, device=device.label,
                      variation=0))
      if plan.logit_diagnostics:
        d = net.logit_gain(f"logits/{device.tag}/cross{size}",
                           net.spec(device, size), size)
        rows[-1].update(logit_gain=d["gain"], logit_residual=d["residual"])
  # Fig. 14: non-idealities one at a time at 64 x 64.
  size = FIG14_SIZE
  steps = [("Cross-ideal, 8-bit chip", {}, "8-bit weights / inputs / ADC")]
  if plan.precision_rows:
    steps += [("Cross6-ideal (RxNN's 6-bit)",
               dict(weight_bits=6, input_bits=6, adc_bits=6),
               "6-bit weights / inputs / ADC"),
              ("Cross-ideal, 4-bit ADC", dict(adc_bits=4),
               "8-bit weights / inputs, 4-bit ADC")]
  for step, bits, what in steps:
    suffix = "".join(f"_{k[0]}{v}" for k, v in sorted(bits.items()))
    acc = net.on_chip(f"ideal/cross{size}{suffix}",
                      net.spec(PAPER, size, mode="ideal", **bits), size)
    rows.append(row(net, "14", step,
                    f"Cross{size}-ideal: {what}; no wires, no variation",
                    acc, fp32, tile=size, device="any", variation=0))
  sigma = net.config.chip.sigma
  for device in plan.devices:
    acc = net.on_chip(f"nonideal/{device.tag}/cross{size}",
                      net.spec(device, size), size)
    rows.append(row(net, "14", f"+ wires, {device.label}",
                    f"Cross{size}, {device.label}, wires on, no variation",
                    acc, fp32, tile=size, device=device.label, variation=0))
    if not plan.num_chips:
      continue
    chips = net.on_chips(f"chips/{device.tag}/cross{size}/n{plan.num_chips}",
                         net.spec(device, size, variation=True), size)
    rows.append(row(
        net, "14", f"+ {100 * sigma:g}% variation, {device.label}",
        f"Cross{size}, {device.label}, wires on, sigma {sigma:g}; mean +- "
        f"std over {chips['n']} chip instances", chips["mean"], fp32,
        tile=size, device=device.label, variation=sigma, n_chips=chips["n"],
        std=chips["std"]))
  # Fig. 15: re-train on the non-ideal chip with the largest loss.
  if plan.retrain_epochs > 0:
    sweep = [(r["accuracy"], -int(r["tile_size"]), r) for r in rows
             if r["figure"] == "12a" and r["step"].startswith("non-ideal")]
    _, _, worst = min(sweep, key=lambda t: t[:2])
    if fig15 is not None:
      worst = next(r for r in rows if r["figure"] == "12a"
                   and r["step"].startswith("non-ideal")
                   and r["device"] == next(d.label for d in DEVICES
                                           if d.tag == fig15[0])
                   and int(r["tile_size"]) == fig15[1])
    device = next(d for d in DEVICES if d.label == worst["device"])
    size = int(worst["tile_size"])
    rows.append(row(net, "15", "before re-training (worst chip)",
                    worst["chip"], worst["accuracy"], fp32, tile=size,
                    device=device.label, variation=0))
    # The readout calibration alone (no re-training), fitted when the chip
    # is programmed: the per-column gain (`ChipSpec.gain_correction`), then
    # with the fitted ADC ranges too (`ChipSpec.adc_range`): the default.
    default = lenet_mnist.get_config().retrain
    gain, adc_range = default.gain_correction, default.adc_range
    for r in dict.fromkeys(("calibrated", adc_range)):
      spec = net.spec(device, size).replace(gain_correction=gain,
                                            adc_range=r)
      acc = net.on_chip(f"nonideal/{device.tag}/cross{size}/gain_{gain}"
                        + ("" if r == "calibrated" else f"_adc{r}"),
                        spec, size)
      rows.append(row(net, "15", f"{gain} gain, {r} ADC ranges, no "
                      "re-training", f"{worst['chip']}; {gain} gain"
                      f" and {r} ADC ranges fitted at programming",
                      acc, fp32, tile=size, device=device.label,
                      variation=0))
    lrs = (net.config.retrain.learning_rate,) + plan.retrain_extra_lrs
    # Without the correction (rxjax's old re-training) at the config's rate;
    # with the default calibration (gain and fitted ADC ranges) at it with
    # every backward (`retrain.backward`), and straight-through at the
    # smaller rates. (The per-column gain alone is in retrain_study.py.)
    runs = ([("none", "calibrated", lrs[0], "straight_through")]
            + [(gain, adc_range, lrs[0], b) for b in backwards]
            + [(gain, adc_range, lr, "straight_through") for lr in lrs[1:]])
    for g, r, lr, b in runs:
      phase, n, variables = net.retrain(device, size, lr, gain=g,
                                        adc_range=r, backward=b)
      what = f"lr {lr:g}, gain {g}, {r} ADC ranges, {b} backward"
      how = (f"{plan.retrain_epochs} epoch(s) on {n} training images "
             f"({plan.retrain_epochs * -(-n // net.config.batch_size)} "
             f"steps), Adam lr {lr:g} cosine, gain correction {g}, {r} ADC "
             f"ranges, {b} backward, chip programmed and calibrated exactly "
             "each epoch")
      acc = net.on_chip(f"{phase}/nonideal",
                        net.spec(device, size).replace(gain_correction=g,
                                                       adc_range=r),
                        size, variables=variables)
      rows.append(row(net, "15", f"after RxNN re-training, {what}",
                      f"{worst['chip']}; re-trained {how}", acc, fp32,
                      tile=size, device=device.label, variation=0))
      acc = net.fp32(variables, name=f"{phase}/fp32")
      rows.append(row(net, "15", f"re-trained ({what}) network, fp32",
                      "none (digital); the network re-trained for "
                      f"{worst['chip']}", acc, fp32))
  return rows


# ---------------------------------------------------------------------------
# Seeds.

# What one measurement is, whichever seed made it.
KEY = ("network", "figure", "step", "chip", "tile_size", "device",
       "variation")


def aggregate(rows: list[dict]) -> list[dict]:
  """One row per measurement: mean and sample std (ddof 1) over its seeds.

  `rows` holds every seed's rows; the result keeps their first order.
  `accuracy`, `delta_vs_fp32_pp` and the logit gain / residual become means
  over seeds, `seed_std` the sample standard deviation of the accuracy (""
  with one seed), `per_seed` the seeds' accuracies and `std` (the spread
  over chip instances within a seed, fig. 14's variation rows) its mean.
  """
  groups: dict[tuple, list[dict]] = {}
  for r in rows:
    groups.setdefault(tuple(r[k] for k in KEY), []).append(r)
  out = []
  for rs in groups.values():
    acc = np.array([r["accuracy"] for r in rs], dtype=np.float64)
    a = dict(rs[0])
    a.update(
        seed="mean", seeds=" ".join(str(r["seed"]) for r in rs),
        n_seeds=len(rs), accuracy=float(acc.mean()),
        seed_std=float(acc.std(ddof=1)) if len(rs) > 1 else "",
        per_seed=" / ".join(f"{x:.4f}" for x in acc),
        delta_vs_fp32_pp=float(np.mean([r["delta_vs_fp32_pp"] for r in rs])))
    for k in ("std", "logit_gain", "logit_residual"):
      if rs[0][k] != "":
        a[k] = float(np.mean([r[k] for r in rs]))
    out.append(a)
  return out


# ---------------------------------------------------------------------------
# Outputs.


def fmt(r, fp32, digits=4):
  """`mean +- seed std (change from fp32 in points)` of an aggregated row."""
  s = f"{r['accuracy']:.{digits}f}"
  if r["seed_std"] != "":
    s += f" +- {r['seed_std']:.{digits}f}"
  return s + f" ({100 * (r['accuracy'] - fp32):+.1f})"


def recovered(r, before, fp32):
  """The share of `before`'s loss against fp32 that row `r` wins back."""
  loss = fp32 - before["accuracy"]
  if loss <= 0:
    return "-"
  return f"{100 * (r['accuracy'] - before['accuracy']) / loss:.0f}%"


def firsts(nets):
  """One network per plan (the first seed's): titles, data, config."""
  seen = {}
  for net in nets:
    seen.setdefault(net.plan.model, net)
  return list(seen.values())


def markdown(nets, rows, command, wall, compute) -> str:
  """`rows`: aggregated (`aggregate`)."""
  seeds = {n.plan.model: [m.seed for m in nets if m.plan.model == n.plan.model]
           for n in nets}
  nets = firsts(nets)
  lines = ["# RxNN figures 12(a), 14, 15 on rxjax: LeNet-5 and the ConvNet",
           "", f"Made by `{command}` (`benchmarks/rxnn_study.py`).", ""]
  for net in nets:
    p = net.plan
    note = ""
    if p.model == "convnet" and p.dataset != "cifar10":
      note = (" **(not CIFAR-10: no `--data_dir` was given, so the CIFAR "
              "ConvNet runs on the bundled MNIST digits, 1 x 28 x 28)**")
    s = seeds[p.model]
    lines.append(
        f"- {p.title}: {net.data_name}, {len(net.run.data.y_train)} train "
        f"images, {p.epochs} digital epochs (Adam, cosine, "
        f"`configs/lenet_mnist.py`), tested on {net.n_test} of "
        f"{net.n_test_all} test images{note}; chips calibrated on "
        f"{p.calibration_size} training images, inputs {p.inputs}"
        + (" (ip2 reads ip1's signed outputs: two input passes)"
           if p.inputs == "signed" else " (one input pass)")
        + f"; seeds {', '.join(map(str, s))} (each: its own digital "
        "training, data order and chip instances)" + ".")
  lines += ["", f"All chips: {describe_common(nets[0].config)}. Accuracies "
            "are fractions of the test images, mean +- sample std over the "
            "seeds; in brackets the change from fp32 in percentage points. "
            "Cross-ideal = the same chip with precision only "
            "(`nn.mode_spec('ideal', spec)`).", ""]
  sizes = sorted({int(r["tile_size"]) for r in rows if r["figure"] == "12a"})
  for net in nets:
    mine = [r for r in rows if r["network"] == net.plan.title]
    fp32r = mine[0]
    fp32 = fp32r["accuracy"]
    lines += [f"## Fig. 12(a): {net.plan.title} on {net.data_name}, accuracy "
              "vs crossbar size", "",
              "| chip | " + " | ".join(f"Cross{s}" for s in sizes) + " |",
              "|---" * (len(sizes) + 1) + "|",
              "| fp32 (digital, no chip) | " + " | ".join(
                  fmt(fp32r, fp32).rsplit(" (", 1)[0] for _ in sizes)
              + " |"]
    for step in ["Cross-ideal (precision only)"] + [
        f"non-ideal, {d.label}" for d in DEVICES]:
      cells = {int(r["tile_size"]): r for r in mine
               if r["figure"] == "12a" and r["step"] == step}
      if not cells:
        continue
      label = (step + ": 8-bit chip, no wires, no variation"
               if step.startswith("Cross") else
               step + ", wires on, no variation")
      lines.append(f"| {label} | " + " | ".join(
          fmt(cells[s], fp32) if s in cells else "-" for s in sizes) + " |")
    lines += ["", "Per seed (" + ", ".join(
        f"seed {s}" for s in seeds[net.plan.model]) + "):", ""]
    for r in mine:
      if r["figure"] in ("12a", "12a/14") and r["n_seeds"] > 1:
        where = (f"Cross{r['tile_size']} " if r["tile_size"] != "" else "")
        lines.append(f"- {where}{r['step']}: {r['per_seed']}")
    lines.append("")
  for net in nets:
    mine = [r for r in rows if r["network"] == net.plan.title
            and r["logit_gain"] != ""]
    if not mine:
      continue
    lines += [f"{net.plan.title}, why accuracy hardly moves: the chip's "
              "logits against the fp32 logits on the same test images, "
              "`l_chip ~ gain * l_fp32`; gain = least-squares scale, "
              "residual = relative norm of the rest (means over seeds). The "
              "IR drops mostly scale the outputs down (argmax ignores "
              "that); accuracy follows the residual.", "",
              "| chip (non-ideal, no variation) | " + " | ".join(
                  f"Cross{s}" for s in sizes) + " |",
              "|---" * (len(sizes) + 1) + "|"]
    for d in DEVICES:
      cells = {int(r["tile_size"]): r for r in mine if r["device"] == d.label}
      if cells:
        lines.append(f"| {d.label}: gain / residual | " + " | ".join(
            f"{cells[s]['logit_gain']:.3f} / {cells[s]['logit_residual']:.3f}"
            if s in cells else "-" for s in sizes) + " |")
    lines.append("")
  lines += ["## Fig. 14 (non-idealities one at a time, 64 x 64) and fig. 15 "
            "(re-training)", "",
            "Test accuracy: mean +- sample std over the seeds (variation "
            "rows: each seed's mean over its chip instances; in brackets "
            "the std over chip instances, mean over seeds). Recovered: the "
            "share of the worst chip's loss against fp32 (its \"before\" "
            "row, means over seeds) that the row wins back.", "",
            "| network | figure | step | chip | test accuracy | vs fp32 "
            "(pp) | recovered | per seed |", "|---|---|---|---|---|---|---|---|"]
  for net in nets:
    mine = [r for r in rows if r["network"] == net.plan.title]
    fp32 = mine[0]["accuracy"]
    before = next((r for r in mine if r["figure"] == "15"), None)
    for r in mine:
      if r["figure"] == "12a":
        continue
      acc = fmt(r, fp32).rsplit(" (", 1)[0]
      if r["std"] != "":
        acc += f" (chips +- {r['std']:.4f})"
      rec = (recovered(r, before, fp32) if r["figure"] == "15"
             and r["device"] != "" and r is not before else "")
      lines.append(f"| {r['network']} | {r['figure']} | {r['step']} | "
                   f"{r['chip']} | {acc} | {r['delta_vs_fp32_pp']:+.1f} | "
                   f"{rec} | {r['per_seed']} |")
  lines += ["", f"Wall time of this invocation: {wall:.0f} s; time to "
            f"compute every result shown, when first computed (summed over "
            f"seeds, compilation included; a rerun reuses them): "
            f"{compute:.0f} s, on {os.cpu_count()} CPU cores shared with "
            "other work.", ""]
  return "\n".join(lines)


def write_csv(path, seed_rows, rows):
  """Every seed's rows, then the aggregated ones (seed "mean")."""
  fields = list(rows[0])
  with open(path, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=fields, restval="")
    w.writeheader()
    for r in list(seed_rows) + list(rows):
      w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v)
                  for k, v in r.items()})


def err(r):
  return r["seed_std"] if r["seed_std"] != "" else 0.0


def plot_sizes(path, nets, rows):
  nets = firsts(nets)
  fig, axes = plt.subplots(1, len(nets), figsize=(5.2 * len(nets), 4.0),
                           squeeze=False)
  styles = {"Cross-ideal (precision only)": ("C0", "o"),
            f"non-ideal, {PAPER.label}": ("C1", "s"),
            f"non-ideal, {LOW_R.label}": ("C3", "^")}
  for ax, net in zip(axes[0], nets):
    mine = [r for r in rows if r["network"] == net.plan.title]
    fp32 = mine[0]["accuracy"]
    n_seeds = mine[0]["n_seeds"]
    sizes = sorted({int(r["tile_size"]) for r in mine if r["figure"] == "12a"})
    ax.axhline(fp32, color="k", ls="--", lw=1, label="fp32")
    for step, (color, marker) in styles.items():
      pts = sorted((int(r["tile_size"]), r["accuracy"], err(r)) for r in mine
                   if r["figure"] == "12a" and r["step"] == step)
      if pts:
        x, y, e = zip(*pts)
        ax.errorbar(x, y, yerr=e, color=color, marker=marker, capsize=3,
                    label=step + ("" if step.startswith("Cross") else
                                  ", no variation"))
    after = [r for r in mine if r["step"].startswith("after RxNN")]
    for r, marker in zip(after, "*PdvX"):
      ax.errorbar([int(r["tile_size"])], [r["accuracy"]], yerr=[err(r)],
                  fmt=marker, color="C2", ms=9, capsize=3,
                  label=r["step"].replace("after RxNN re-training",
                                          "re-trained on that chip"))
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_xlabel("crossbar size (rows = columns)")
    ax.set_ylabel(f"test accuracy ({net.n_test} images; mean +- std over "
                  f"{n_seeds} seeds)", fontsize=8)
    ax.set_title(f"{net.plan.title} on {short(net)}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
  fig.suptitle("RxNN fig. 12(a) analogue: accuracy vs crossbar size",
               fontsize=11)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def short(net):
  return ("bundled MNIST" if net.plan.dataset == "mnist_bundled" else
          net.plan.dataset) + (" (not CIFAR)" if net.plan.model == "convnet"
                               and net.plan.dataset != "cifar10" else "")


def plot_steps(path, nets, rows):
  nets = firsts(nets)
  bars = max(sum(r["network"] == net.plan.title and r["figure"] != "12a"
                 for r in rows) for net in nets)
  fig, axes = plt.subplots(1, len(nets), figsize=(
      max(6.0, 0.45 * bars) * len(nets), 6.2), squeeze=False)
  for ax, net in zip(axes[0], nets):
    mine = [r for r in rows if r["network"] == net.plan.title
            and r["figure"] != "12a"]
    labels, accs, errs, colors = [], [], [], []
    for r in mine:
      s = r["step"]
      color = ("0.5" if "fp32" in s else "C0" if s.startswith("Cross") else
               "C3" if LOW_R.label in r["device"] else "C1")
      if r["figure"] == "15":
        color = ("C4" if "circuit" in s else "C2") if s.startswith(
            "after") else color
        if s.startswith("before"):
          s = f"worst chip: Cross{r['tile_size']},\n{r['device']}"
        elif s.startswith("after"):
          s = "same chip, re-trained\n" + s.replace(
              "after RxNN re-training, ", "")
        else:
          s = s.replace(" network", "")
      s = (s.replace("calibrated ADC ranges", "cal. ADC")
           .replace("fitted ADC ranges", "fitted ADC")
           .replace(" backward", " bw"))
      labels.append(s.replace(", ", ",\n"))
      accs.append(r["accuracy"])
      errs.append(err(r))
      colors.append(color)
    x = np.arange(len(accs))
    ax.bar(x, accs, yerr=errs, color=colors, capsize=3)
    for xi, a in zip(x, accs):
      ax.text(xi, a, f"{a:.3f}", ha="center", va="bottom", fontsize=6.5)
    lo = max(0.0, min(a - e for a, e in zip(accs, errs)) - 0.03)
    ax.set_ylim(lo, min(1.0, max(a + e for a, e in zip(accs, errs)) + 0.02))
    ax.set_xticks(x, labels, rotation=70, fontsize=6)
    ax.set_ylabel(f"test accuracy ({net.n_test} images; mean +- std over "
                  f"{mine[0]['n_seeds']} seeds)", fontsize=8)
    ax.set_title(f"{net.plan.title} on {short(net)}: Cross{FIG14_SIZE} "
                 "(fig. 14), worst chip re-trained (fig. 15, right)",
                 fontsize=9)
    ax.grid(axis="y", alpha=0.3)
  fig.suptitle("RxNN fig. 14 / 15 analogue: non-idealities one at a time, "
               "then re-training", fontsize=11)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default="/tmp/rxnn_study",
                      help="checkpoints and cached results (resumed)")
  parser.add_argument("--data_dir", default=None,
                      help="CIFAR-10 python batches for the ConvNet (default:"
                      " the ConvNet runs on the bundled MNIST digits)")
  parser.add_argument("--models", nargs="+", default=["lenet5", "convnet"],
                      choices=["lenet5", "convnet"],
                      help="the networks studied (default: both)")
  parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                      help="the configs' seeds, each one study: data order, "
                      "initialization and chip instances (work directories "
                      "of seeds other than 0 end in _s<seed>); tables show "
                      "mean +- sample std over them")
  parser.add_argument("--seed", type=int, default=None,
                      help="one seed (the same as --seeds SEED)")
  parser.add_argument("--backwards", nargs="+",
                      default=["straight_through", "circuit_interpolated"],
                      choices=["straight_through", "circuit_interpolated",
                               "circuit"],
                      help="fig. 15's re-training gradients "
                      "(`retrain.backward`) with the default calibration")
  parser.add_argument("--quick", action="store_true",
                      help="smoke run (~2-3 min): fewer epochs, sizes and "
                      "test images; outputs in WORKDIR/figures")
  parser.add_argument("--out", default=None,
                      help="output directory (default docs/figures, "
                      "WORKDIR/figures with --quick)")
  args = parser.parse_args()
  if args.seed is not None:
    args.seeds = [args.seed]
  if len(set(args.seeds)) != len(args.seeds) or min(args.seeds) < 0:
    parser.error(f"--seeds {args.seeds}: distinct integers >= 0")
  start = time.perf_counter()
  command = shlex.join(
      ["python", os.path.relpath(os.path.abspath(sys.argv[0]), REPO)]
      + sys.argv[1:])
  out = args.out or (os.path.join(args.workdir, "figures") if args.quick
                     else os.path.join(REPO, "docs", "figures"))
  os.makedirs(out, exist_ok=True)
  os.makedirs(args.workdir, exist_ok=True)
  # Compiled chip programs are reused across evaluations and reruns.
  jax.config.update("jax_compilation_cache_dir",
                    os.path.join(args.workdir, "jax_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  print(f"rxnn_study: {jax.devices()[0].platform}, {os.cpu_count()} cores, "
        f"workdir {args.workdir}, out {out}\n  command: {command}",
        flush=True)
  times_path = os.path.join(args.workdir, "times.json")
  times = {}
  if os.path.exists(times_path):
    with open(times_path) as f:
      times = json.load(f)
  nets, rows, used = [], [], set()
  try:
    for plan in plans(args):
      if plan.model not in args.models:
        continue
      fig15 = None  # The first seed's worst chip, re-trained on every seed.
      for seed in args.seeds:
        net = Network(plan, args, seed, times, used)
        nets.append(net)
        mine = study(net, tuple(args.backwards), fig15)
        rows += mine
        before = next((r for r in mine if r["figure"] == "15"), None)
        if before is not None and fig15 is None:
          fig15 = (next(d.tag for d in DEVICES
                        if d.label == before["device"]),
                   int(before["tile_size"]))
  finally:
    # Merged with the file's: concurrent invocations (one seed each) share
    # the work directory.
    if os.path.exists(times_path):
      with open(times_path) as f:
        times = {**json.load(f), **times}
    with open(times_path, "w") as f:
      json.dump(times, f, indent=2, sort_keys=True)
  wall = time.perf_counter() - start
  compute = sum(times.get(k, 0.0) for k in used)
  seed_rows, rows = rows, aggregate(rows)
  text = markdown(nets, rows, command, wall, compute)
  paths = {name: os.path.join(out, name) for name in (
      "rxnn_study.md", "rxnn_study.csv", "rxnn_size.png",
      "rxnn_nonidealities.png")}
  with open(paths["rxnn_study.md"], "w") as f:
    f.write(text)
  write_csv(paths["rxnn_study.csv"], seed_rows, rows)
  plot_sizes(paths["rxnn_size.png"], nets, rows)
  plot_steps(paths["rxnn_nonidealities.png"], nets, rows)
  print("\n" + text)
  print(f"wrote {', '.join(paths.values())}\ncommand: {command}\n"
        f"wall time {wall:.0f} s")


if __name__ == "__main__":
  main()
