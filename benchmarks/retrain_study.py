"""RxNN re-training (fig. 15) on rxjax: why it lost accuracy, and the fix.

    python benchmarks/retrain_study.py --model lenet5 --seeds 0 1 2
    python benchmarks/retrain_study.py --model convnet --seeds 0 1 2
    python benchmarks/retrain_study.py --model lenet5 --seeds 0 \\
        --configs lowr128 --variants none column --diagnose   # the cause

For each seed: trains the network digitally (`configs/lenet_mnist.py`,
that seed), then for each chip configuration measures the test accuracy of
the digital network on the chip as RxNN reads it ("before": no readout
calibration) and with each variant's readout calibration fitted at
programming (no re-training), re-trains it on the chip (`experiment.train`
with the chip's spec: chip forward, `--backward` gradient, digital Adam
update, chip programmed exactly and calibrated at every epoch start) for
every variant, and measures it again on the chip it was re-trained for and
in fp32. Variants: "none" (rxjax's first re-training), "column" (the
per-column digital gain, `ChipSpec.gain_correction="column"`), "fitted"
(the gain and the fitted ADC ranges, `ChipSpec.adc_range="fitted"`: the
default of `config.retrain`).

`--diagnose` also records, after every re-training epoch: the chip's logits
against the same weights' fp32 logits on the test images (least-squares gain
and relative residual), the weights' drift from the digital network
(`||w - w0|| / ||w0||` over all kernels), and how far the calibration the
epoch ran with (input scales and ADC ranges set at its start, kept while the
weights moved) is from a fresh one for the epoch's final weights (the ratio
of fresh to frozen ADC full scale, max over the layers: > 1 means the frozen
ADCs clip the currents; the fraction of column currents above the frozen
full scale is not exposed by the library, so the range ratio stands in).

Results are cached in `--workdir` (one `experiment.Workdir` per network and
seed); a rerun resumes. Writes `retrain_study.json` and `retrain_study.md`
in `--out`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from configs import lenet_mnist  # noqa: E402
from rxjax import data as data_lib  # noqa: E402
from rxjax import experiment  # noqa: E402
from rxjax import nn as rnn  # noqa: E402

# Chip configurations: overrides of the config's chip block (the papers'
# chip: ReRAM 100k-1M ohm, 2-bit cells, 8-bit weights / inputs / ADCs,
# r_row 1 / r_col 4.6 / r_source = r_sense 100 ohm), no variation unless
# `sigma` is given.
CONFIGS = {
    # The study's worst chip (rxnn_study.md fig. 15): low-R devices, 128 x 128.
    "lowr128": dict(label="low-R 10k-100k ohm, Cross128", tile_size=128,
                    r_min_ohm=10e3, r_max_ohm=100e3),
    # Coarse ADCs on the papers' device.
    "adc4": dict(label="ReRAM 100k-1M, Cross64, 4-bit ADC", tile_size=64,
                 adc_bits=4),
    # Poor wires: 10x the papers' wire segments, low-R devices, Cross64.
    "wires10": dict(label="low-R 10k-100k ohm, Cross64, 10x wire resistance",
                    tile_size=64, r_min_ohm=10e3, r_max_ohm=100e3,
                    r_row_ohm=10.0, r_col_ohm=46.0),
    # Low-R devices, Cross128, 6-bit ADC.
    "lowr128_adc6": dict(label="low-R 10k-100k ohm, Cross128, 6-bit ADC",
                         tile_size=128, r_min_ohm=10e3, r_max_ohm=100e3,
                         adc_bits=6),
    # Process variation: 30% lognormal on the papers' device, Cross64 (one
    # chip instance per seed, the one re-trained for).
    "var30": dict(label="ReRAM 100k-1M ohm, Cross64, 30% variation",
                  tile_size=64, sigma=0.3),
    # Coarser still: a 3-bit ADC.
    "adc3": dict(label="ReRAM 100k-1M, Cross64, 3-bit ADC", tile_size=64,
                 adc_bits=3),
    "var40": dict(label="ReRAM 100k-1M ohm, Cross64, 40% variation",
                  tile_size=64, sigma=0.4),
    # The papers' default chip of the main job (Cross64, no variation).
    "paper64": dict(label="ReRAM 100k-1M ohm, Cross64 (main job's chip)",
                    tile_size=64),
}


@dataclasses.dataclass(frozen=True)
class Plan:
  model: str
  epochs: int  # Digital epochs.
  test_size: int  # Test images (0: all).
  calibration_size: int
  inputs: str
  retrain_epochs: int
  retrain_size: int  # Training images re-trained on (0: all).


PLANS = {
    "lenet5": Plan("lenet5", 15, 0, 256, "non_negative", 2, 0),
    # The ConvNet's ip2 reads ip1's signed outputs (two input passes) and
    # has ~20x LeNet's MACs: tested on 300 images, re-trained on 640.
    "convnet": Plan("convnet", 5, 300, 128, "signed", 2, 640),
}


def network_config(plan: Plan, seed: int):
  config = lenet_mnist.get_config()
  config.model = plan.model
  config.seed = seed
  config.num_epochs = plan.epochs
  config.eval.calibration_size = plan.calibration_size
  config.chip.inputs = plan.inputs
  config.eval.num_chips = 0
  config.retrain.num_epochs = plan.retrain_epochs
  return config


# Re-training variants: the readout calibration fitted each time the chip is
# programmed (ChipSpec.gain_correction, ChipSpec.adc_range).
VARIANTS = {"none": dict(gain_correction="none", adc_range="calibrated"),
            "column": dict(gain_correction="column", adc_range="calibrated"),
            "fitted": dict(gain_correction="column", adc_range="fitted")}


def chip_spec(config, name: str, variant: str):
  chip = config.chip.copy_and_resolve_references()
  over = dict(CONFIGS[name])
  over.pop("label")
  sigma = over.pop("sigma", None)
  for k, v in over.items():
    setattr(chip, k, v)
  if sigma is not None:
    chip.sigma = sigma
  spec = experiment.chip_spec(chip, variation=sigma is not None)
  return spec.replace(**VARIANTS[variant])


def _kernels(variables):
  return [np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(
      variables["params"]) if "kernel" in jax.tree_util.keystr(p)]


class Net:
  """One network and seed: digital training, chip evaluations, cached."""

  def __init__(self, plan: Plan, seed: int, workdir: str):
    self.plan, self.seed = plan, seed
    self.config = network_config(plan, seed)
    self.wd = experiment.Workdir(
        os.path.join(workdir, f"{plan.model}_s{seed}"), self.config)
    self.run = experiment.setup(self.config)
    data = self.run.data
    if plan.test_size and plan.test_size < len(data.y_test):
      idx = np.sort(np.random.default_rng(0).choice(
          len(data.y_test), plan.test_size, replace=False))
      data = data._replace(x_test=data.x_test[idx], y_test=data.y_test[idx])
      self.run = dataclasses.replace(self.run, data=data)
    self.key = jax.random.key(seed)
    self.variables = experiment.train(
        self.config, self.run, self.wd, phase="digital", epochs=plan.epochs,
        learning_rate=self.config.learning_rate)

  def result(self, name, fn):
    t = time.perf_counter()
    done = []
    value = self.wd.result(name, lambda: (done.append(1), fn())[1])
    shown = value if not isinstance(value, dict) else value.get("acc")
    print(f"  [{self.plan.model} s{self.seed}] {name}: {shown} "
          f"({time.perf_counter() - t:.0f} s{'' if done else ', cached'})",
          flush=True)
    return value

  def fp32(self, variables=None, name="fp32"):
    v = self.variables if variables is None else variables
    return self.result(name, lambda: experiment.accuracy(
        self.run.model, v, self.run.data, None))

  def on_chip(self, name, spec, variables=None):
    v = self.variables if variables is None else variables
    return self.result(name, lambda: experiment.evaluate_on_chip(
        self.run, v, spec, key=self.chip_key()))

  def chip_key(self):
    # The chip instance re-training programs (experiment.train's key), so
    # that with variation the chip evaluated is the chip re-trained for.
    return experiment.keys.chip_key(self.seed)

  def diagnostics(self, spec, variables, chips_start):
    """Logit gain / residual, weight drift, frozen-calibration range ratios."""
    model, run = self.run.model, self.run
    chips = experiment.program_fn(model, spec)(variables, run.calib,
                                               key=self.chip_key())
    lc, lf = [], []
    chip_fn = jax.jit(lambda v, c, x: rnn.apply(model, v, c, x, spec))
    digital = jax.jit(model.apply)
    for x, _ in data_lib.batches(run.data.x_test, run.data.y_test, 500,
                                 key_or_seed=0, shuffle=False):
      lc.append(np.asarray(chip_fn(variables, chips, x)))
      lf.append(np.asarray(digital(variables, x)))
    lc, lf = np.concatenate(lc), np.concatenate(lf)
    gain = float(np.sum(lc * lf) / np.sum(lf * lf))
    residual = float(np.linalg.norm(lc - gain * lf)
                     / np.linalg.norm(gain * lf))
    w0, w1 = _kernels(self.variables), _kernels(variables)
    drift = float(np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(w0, w1)))
                  / np.sqrt(sum(np.sum(a ** 2) for a in w0)))
    out = dict(logit_gain=gain, logit_residual=residual, weight_drift=drift)
    if chips_start is not None:
      # The epoch's chips: calibrated at its start, refreshed to the final
      # weights (what the last step read with).
      _, state = jax.jit(lambda v, c, x: rnn.apply(
          model, v, c, x, spec, refresh=True))(variables, chips_start,
                                               run.calib)
      frozen = state[rnn.COLLECTION]
      adc, xs = [], []
      for (p, fresh), (_, old) in zip(
          jax.tree_util.tree_leaves_with_path(
              chips, is_leaf=lambda c: hasattr(c, "adc_full_scale")),
          jax.tree_util.tree_leaves_with_path(
              frozen, is_leaf=lambda c: hasattr(c, "adc_full_scale"))):
        if hasattr(fresh, "adc_full_scale"):
          adc.append(float(jnp.max(fresh.adc_full_scale
                                   / old.adc_full_scale)))
          xs.append(float(jnp.max(fresh.x_scale / old.x_scale)))
      out.update(adc_range_ratio_max=max(adc), input_range_ratio_max=max(xs))
    return out

  def retrain(self, name, spec, *, lr, epochs, diagnose,
              backward="straight_through"):
    plan, run = self.plan, self.run
    if plan.retrain_size and plan.retrain_size < len(run.data.y_train):
      data = run.data._replace(x_train=run.data.x_train[:plan.retrain_size],
                               y_train=run.data.y_train[:plan.retrain_size])
      run = dataclasses.replace(run, data=data)
    phase = f"retrain_{name}_e{epochs}_lr{lr:g}"
    if backward != "straight_through":
      phase += f"_{backward}"
    diags = {}
    if diagnose:
      start = [experiment.program_fn(run.model, spec)(
          self.variables, run.calib, key=self.chip_key())]
      diags["0"] = self.diagnostics(spec, self.variables, None)

      def on_epoch(epoch, v):
        diags[str(epoch)] = self.diagnostics(spec, v, start[0])
        start[0] = experiment.program_fn(run.model, spec)(
            v, run.calib, key=self.chip_key())
        print(f"    epoch {epoch}: {diags[str(epoch)]}", flush=True)
    else:
      on_epoch = None
    t = time.perf_counter()
    variables = experiment.train(self.config, run, self.wd, phase=phase,
                                 epochs=epochs, learning_rate=lr, spec=spec,
                                 init=self.variables, on_epoch=on_epoch,
                                 backward=backward)
    seconds = time.perf_counter() - t
    # The first (training) run's wall time; a resumed run reads it back.
    timing = self.wd.read_json(f"{phase}_seconds.json")
    if timing is None:
      self.wd.write_json(f"{phase}_seconds.json", {"seconds": seconds})
    else:
      seconds = timing["seconds"]
    if diagnose and diags:
      self.wd.write_json(f"{phase}_diagnostics.json", diags)
    return phase, variables, seconds, diags


def study_one(net: Net, name: str, variants, *, lr, epochs, diagnose,
              backward="straight_through"):
  """Rows of one chip configuration for one seed."""
  out = {"fp32": net.fp32(),
         "before": net.on_chip(f"{name}/before", chip_spec(
             net.config, name, "none"))}
  for gain in variants:
    if gain != "none":
      out[f"before_{gain}"] = net.on_chip(f"{name}/before_{gain}", chip_spec(
          net.config, name, gain))
  for gain in variants:
    spec = chip_spec(net.config, name, gain)
    phase, v, seconds, diags = net.retrain(f"{name}_{gain}", spec, lr=lr,
                                           epochs=epochs, diagnose=diagnose,
                                           backward=backward)
    out[f"after_{gain}"] = net.on_chip(f"{phase}/after", spec, v)
    out[f"after_{gain}_fp32"] = net.fp32(v, f"{phase}/fp32")
    out[f"seconds_{gain}"] = seconds
    if diags:
      out[f"diagnostics_{gain}"] = diags
  return out


def _stats(xs):
  xs = np.asarray(xs, float)
  return float(xs.mean()), float(xs.std(ddof=1)) if len(xs) > 1 else 0.0


def markdown(results, args) -> str:
  calibrated = [g for g in args.variants if g != "none"]
  lines = [f"Command: `python benchmarks/retrain_study.py "
           f"{' '.join(sys.argv[1:])}`", "",
           f"Re-training: {args.epochs} epoch(s), Adam lr {args.lr:g} "
           f"cosine, chip forward / {args.backward} backward, programmed "
           "exactly and calibrated at every epoch start. Variants (the "
           "readout calibration fitted at every programming): none = no "
           "gain correction, calibrated ADC ranges (rxjax's old "
           "re-training); column = per-column gain; fitted = per-column "
           "gain and fitted ADC ranges (the default). Accuracies: mean +- "
           "sample std over seeds " + ", ".join(map(str, args.seeds))
           + "; in brackets the change from fp32 (points). Recovered: "
           "(after - before) / (fp32 - before) of the means, where the chip "
           "costs >= 2 points; otherwise the change after - before (points, "
           "mean over seeds).", ""]
  for model, per_config in results.items():
    lines += [f"### {model}", "",
              "| chip | fp32 | on chip, before | " + "".join(
                  f"{g} calibration only | " for g in calibrated)
              + "".join(f"re-trained, {g} | " for g in args.variants)
              + "recovered (" + ", ".join(args.variants) + ") |",
              "|---|---|---|" + "---|" * (len(calibrated)
                                          + len(args.variants) + 1)]
    for name, seeds in per_config.items():
      fp = _stats([s["fp32"] for s in seeds])
      before = _stats([s["before"] for s in seeds])
      cells = [CONFIGS[name]["label"], f"{fp[0]:.4f} +- {fp[1]:.4f}"]

      def cell(key):
        m, sd = _stats([s[key] for s in seeds])
        return f"{m:.4f} +- {sd:.4f} ({100 * (m - fp[0]):+.1f})", m
      cells.append(cell("before")[0])
      for g in calibrated:
        cells.append(cell(f"before_{g}")[0])
      rec = []
      loss = fp[0] - before[0]
      for g in args.variants:
        c, m = cell(f"after_{g}")
        cells.append(c)
        rec.append(f"{(m - before[0]) / loss:.0%}" if loss >= 0.02 else
                   f"{100 * (m - before[0]):+.2f} pp")
      cells.append(", ".join(rec))
      lines.append("| " + " | ".join(cells) + " |")
    keys = (["fp32", "before"] + [f"before_{g}" for g in calibrated]
            + [k for g in args.variants
               for k in (f"after_{g}", f"after_{g}_fp32")])
    lines += ["", "Per seed (" + " / ".join(
        ["fp32", "before"] + [f"{g} calibration only" for g in calibrated]
        + [x for g in args.variants
           for x in (f"re-trained ({g})", "its fp32")]) + "):", ""]
    for name, seeds in per_config.items():
      per_seed = ["/".join(f"{s[k]:.3f}" for k in keys) for s in seeds]
      lines.append(f"- {CONFIGS[name]['label']}: " + "; ".join(
          f"seed {seed} {v}" for seed, v in zip(args.seeds, per_seed)))
    times = [(name, g, s.get(f"seconds_{g}")) for name, seeds in
             per_config.items() for s in seeds[:1] for g in args.variants]
    if any(t for _, _, t in times):
      lines += ["", "Re-training wall time (seed "
                f"{args.seeds[0]}, s, shared CPU): " + "; ".join(
                    f"{name} {g} {t:.0f}" for name, g, t in times if t)]
    lines.append("")
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--model", nargs="+", default=["lenet5"],
                      choices=sorted(PLANS))
  parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
  parser.add_argument("--configs", nargs="+",
                      default=["lowr128", "adc4", "wires10"],
                      choices=sorted(CONFIGS))
  parser.add_argument("--variants", nargs="+",
                      default=["none", "column", "fitted"],
                      choices=sorted(VARIANTS))
  parser.add_argument("--epochs", type=int, default=None,
                      help="re-training epochs (default: the plan's)")
  parser.add_argument("--lr", type=float, default=None,
                      help="re-training learning rate (default: the "
                      "config's retrain.learning_rate)")
  parser.add_argument("--backward", default="straight_through",
                      choices=["straight_through", "circuit",
                               "circuit_interpolated"],
                      help="the re-training gradient (config.retrain."
                      "backward)")
  parser.add_argument("--diagnose", action="store_true")
  parser.add_argument("--before_only", action="store_true",
                      help="only the chip's cost before re-training")
  parser.add_argument("--workdir", default="/tmp/retrain_study")
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  out = args.out or args.workdir
  os.makedirs(out, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir",
                    os.path.join(args.workdir, "jax_cache"))
  results = {}
  for model in args.model:
    plan = PLANS[model]
    args.epochs = plan.retrain_epochs if args.epochs is None else args.epochs
    args.lr = (lenet_mnist.get_config().retrain.learning_rate
               if args.lr is None else args.lr)
    per = results.setdefault(model, {})
    for seed in args.seeds:
      net = Net(plan, seed, args.workdir)
      for name in args.configs:
        if args.before_only:
          net.fp32()
          net.on_chip(f"{name}/before", chip_spec(net.config, name, "none"))
          for g in args.variants:
            if g != "none":
              net.on_chip(f"{name}/before_{g}", chip_spec(net.config, name, g))
          continue
        per.setdefault(name, []).append(study_one(
            net, name, args.variants, lr=args.lr, epochs=args.epochs,
            diagnose=args.diagnose, backward=args.backward))
  if args.before_only:
    return
  with open(os.path.join(out, "retrain_study.json"), "w") as f:
    json.dump(results, f, indent=1)
  text = markdown(results, args)
  with open(os.path.join(out, "retrain_study.md"), "w") as f:
    f.write(text + "\n")
  print(text)


if __name__ == "__main__":
  main()
