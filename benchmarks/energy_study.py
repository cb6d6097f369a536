"""RxNN figures 12(b) and 13, and accuracy against energy for LeNet-5.

    python benchmarks/energy_study.py              # full run, docs/figures
    python benchmarks/energy_study.py --quick      # smaller sweep, WORKDIR/figures

RxNN (Jain et al., section VIII-B) gives, beside accuracy, the system
energy per image of each crossbar design: fig. 12b normalizes it over
Cross16 / Cross32 / Cross64 for its benchmark networks (Cross16 costs the
most; Cross64 costs more than Cross32 on LeNet and the ConvNet, whose small
layers leave 64 x 64 tiles under-used), fig. 13 splits it for VGG-16,
GoogLeNet and AlexNet on Cross64 into CMOS memory read, CMOS memory write
and crossbar computation (dominated by the ADCs and DACs). This script
measures the same with `rxjax.energy` (ISAAC's components, the papers' chip
of `configs/lenet_mnist.py`):

1. Fig. 12b: every network of the zoo (`rxjax.models`) at its paper input
   size (MNIST 28 x 28, CIFAR 32 x 32, ImageNet 224 x 224, OverFeat 231),
   counted from shapes only (`rxjax.energy.count`: no data, no programmed
   chip, nominal array term), normalized to each network's Cross64.
2. Fig. 13: the breakdown for VGG-16, GoogLeNet and AlexNet on Cross64.
3. LeNet-5 on the bundled MNIST digits, trained digitally, then evaluated
   on the non-ideal chip (no variation) over tile size {16, 32, 64} x ADC
   bits {4, 8} x DAC bits {1, 2, 4} (8-bit inputs; --quick: {16, 64} x
   {4, 8} x {1, 4} on 300 test images) with `rxjax.energy.estimate` on the programmed chip (array
   term from its tiles): accuracy against energy per image, the Pareto
   front marked.

Outputs in `--out` (default docs/figures; `WORKDIR/figures` with --quick):
`energy_study.md` (tables), `energy_study.csv`, `energy_fig12b.png`,
`energy_fig13.png`, `energy_pareto.png`. Evaluations are kept in
`--workdir` (`experiment.Workdir`), so a rerun resumes.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import itertools
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from benchmarks import common  # noqa: E402
from configs import lenet_mnist  # noqa: E402
from rxjax import energy, experiment, models  # noqa: E402

SIZES = (16, 32, 64)
# name -> (input side, channels, classes): the papers' data sets.
ZOO = {
    "mlp": (28, 1, 10), "lenet5": (28, 1, 10), "convnet": (32, 3, 10),
    "nin_cifar": (32, 3, 10), "resnet20": (32, 3, 10),
    "resnet56": (32, 3, 10), "alexnet": (224, 3, 1000),
    "nin": (224, 3, 1000), "overfeat": (231, 3, 1000),
    "vgg16": (224, 3, 1000), "googlenet": (224, 3, 1000),
    "resnet18": (224, 3, 1000), "resnet50": (224, 3, 1000),
}
FIG13 = ("vgg16", "googlenet", "alexnet")
COMPUTE = ("adc", "dac", "array", "digital")


def chip(size, **bits):
  config = lenet_mnist.get_config()
  for k, v in bits.items():
    config.chip[k] = v
  return experiment.chip_spec(config.chip, tile_size=size, variation=False)


def counted(name, size):
  side, channels, classes = ZOO[name]
  model = models.get(name, num_classes=classes)
  x = jax.ShapeDtypeStruct((1, side, side, channels), jnp.float32)
  variables = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, side, side, channels))))
  return energy.count(model, variables, x, chip(size))


def fig12b():
  rows = []
  for name in ZOO:
    reports = {s: counted(name, s) for s in SIZES}
    ref = reports[64].energy_j["total"]
    for s, r in reports.items():
      rows.append({"part": "fig12b", "network": name, "tile": s,
                   "j_per_image": r.energy_j["total"],
                   "normalized": r.energy_j["total"] / ref,
                   "adc_conversions": r.counts["adc_conversions"],
                   "tile_reads": r.counts["tile_reads"],
                   "s_per_image": r.latency_s,
                   "area_mm2": r.area_m2 * 1e6})
    print(f"  {name}: " + ", ".join(
        f"Cross{s} {reports[s].energy_j['total'] / ref:.3f}" for s in SIZES),
          flush=True)
  return rows


def fig13():
  rows = []
  for name in FIG13:
    e = counted(name, 64).energy_j
    rows.append({"part": "fig13", "network": name, "tile": 64,
                 "j_per_image": e["total"],
                 **{f"{k}_j": e[k] for k in
                    COMPUTE + ("buffer_read", "buffer_write")}})
  return rows


def sweep(args):
  config = lenet_mnist.get_config()
  config.num_epochs = 3 if args.quick else 8
  config.eval.calibration_size = 128
  wd = experiment.Workdir(os.path.join(
      args.workdir, "quick" if args.quick else "full"), config)
  run = experiment.setup(config)
  n_test = 300 if args.quick else len(run.data.y_test)
  data = run.data._replace(x_test=run.data.x_test[:n_test],
                           y_test=run.data.y_test[:n_test])
  run = dataclasses.replace(run, data=data)
  variables = experiment.train(config, run, wd, phase="digital",
                               epochs=config.num_epochs,
                               learning_rate=config.learning_rate)
  fp32 = wd.result(f"fp32@{n_test}", lambda: experiment.accuracy(
      run.model, variables, run.data, None))
  print(f"  fp32: {fp32:.4f} on {n_test} test images", flush=True)
  grid = (((16, 64), (4, 8), (1, 4)) if args.quick
          else (SIZES, (4, 8), (1, 2, 4)))
  rows = []
  for size, adc, dac in itertools.product(*grid):
    spec = chip(size, adc_bits=adc, dac_bits=dac)
    key = experiment.keys.eval_chip_key(config.seed, size)
    name = f"cross{size}_adc{adc}_dac{dac}@{n_test}"

    def compute():
      e = {}
      t = time.perf_counter()
      acc = experiment.evaluate_on_chip(run, variables, spec, key=key,
                                        energy=e)
      return {"accuracy": acc, **e, "eval_s": time.perf_counter() - t}

    r = wd.result(name, compute)
    print(f"  Cross{size} ADC {adc} b DAC {dac} b: accuracy "
          f"{r['accuracy']:.4f}, {r['j_per_image'] * 1e6:.3f} uJ/image",
          flush=True)
    rows.append({"part": "pareto", "network": "lenet5", "tile": size,
                 "adc_bits": adc, "dac_bits": dac, "accuracy": r["accuracy"],
                 "fp32": fp32, "j_per_image": r["j_per_image"],
                 **{f"{k}_j": v for k, v in
                    r["breakdown_j_per_image"].items()},
                 "s_per_image": r["s_per_image"],
                 "area_mm2": r["area_mm2"]})
  front = pareto(rows)
  for i, row in enumerate(rows):
    row["pareto"] = i in front
  return rows, n_test


def pareto(rows):
  """Indices of the rows no other row beats in both accuracy (higher) and
  energy (lower)."""
  out = set()
  for i, a in enumerate(rows):
    if not any((b["accuracy"] >= a["accuracy"]
                and b["j_per_image"] <= a["j_per_image"])
               and (b["accuracy"] > a["accuracy"]
                    or b["j_per_image"] < a["j_per_image"])
               for b in rows):
      out.add(i)
  return out


def plot_fig12b(path, rows):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  names = list(ZOO)
  fig, ax = plt.subplots(figsize=(11, 3.6))
  width = 0.27
  for k, s in enumerate(SIZES):
    vals = [next(r["normalized"] for r in rows if r["network"] == n
                 and r["tile"] == s) for n in names]
    ax.bar(np.arange(len(names)) + (k - 1) * width, vals, width,
           label=f"Cross{s}")
  ax.set_xticks(np.arange(len(names)), names, rotation=30, ha="right")
  ax.set_ylabel("energy / image (Cross64 = 1)")
  ax.set_title("RxNN fig. 12b: normalized energy per image (rxjax.energy, "
               "ISAAC components)")
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_fig13(path, rows):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  parts = (("buffer_read", "CMOS-Mem-Read"),
           ("buffer_write", "CMOS-Mem-Write"), ("adc", "Cross-Comp.: ADC"),
           ("dac", "Cross-Comp.: DAC"), ("array", "Cross-Comp.: array"),
           ("digital", "Cross-Comp.: shift-add"))
  fig, ax = plt.subplots(figsize=(6, 3.6))
  bottom = np.zeros(len(rows))
  for key, label in parts:
    vals = np.array([r[f"{key}_j"] / r["j_per_image"] for r in rows])
    ax.bar([r["network"] for r in rows], vals, bottom=bottom, label=label)
    bottom += vals
  ax.set_ylabel("fraction of energy / image")
  ax.set_title("RxNN fig. 13: breakdown on Cross64")
  ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_pareto(path, rows):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(6.5, 4))
  markers = {16: "o", 32: "s", 64: "^"}
  for r in rows:
    ax.scatter(r["j_per_image"] * 1e6, r["accuracy"],
               marker=markers[r["tile"]], c=f"C{r['adc_bits'] // 2}",
               edgecolors="k" if r["pareto"] else "none", s=50)
    ax.annotate(f"{r['dac_bits']}", (r["j_per_image"] * 1e6, r["accuracy"]),
                fontsize=6, xytext=(3, 3), textcoords="offset points")
  front = sorted((r for r in rows if r["pareto"]),
                 key=lambda r: r["j_per_image"])
  ax.plot([r["j_per_image"] * 1e6 for r in front],
          [r["accuracy"] for r in front], "k--", lw=1, label="Pareto front")
  for s, m in markers.items():
    ax.scatter([], [], marker=m, c="gray", label=f"Cross{s}")
  for b in sorted({r["adc_bits"] for r in rows}):
    ax.scatter([], [], marker="s", c=f"C{b // 2}", label=f"ADC {b} b")
  ax.axhline(rows[0]["fp32"], color="gray", lw=0.8, ls=":", label="fp32")
  ax.set_xscale("log")
  ax.set_xlabel("energy per image (uJ); label: DAC bits")
  ax.set_ylabel("test accuracy")
  ax.set_title("LeNet-5 on MNIST, non-ideal chip: accuracy vs energy")
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def markdown(f12, f13, sweep_rows, n_test, command, wall):
  out = [f"Command: `{command}` ({wall:.0f} s wall, {platform.node()}, "
         f"{time.strftime('%Y-%m-%d')}, a shared 2-core CPU).", "",
         "### Fig. 12b: energy per image, normalized to Cross64", "",
         "| network | Cross16 | Cross32 | Cross64 | Cross64 uJ/image | "
         "Cross64 us/image | Cross64 mm^2 |", "|---|---|---|---|---|---|---|"]
  for name in ZOO:
    by = {r["tile"]: r for r in f12 if r["network"] == name}
    out.append(f"| {name} | " + " | ".join(
        f"{by[s]['normalized']:.3f}" for s in SIZES)
               + f" | {by[64]['j_per_image'] * 1e6:.4g} | "
               f"{by[64]['s_per_image'] * 1e6:.4g} | "
               f"{by[64]['area_mm2']:.4g} |")
  out += ["", "### Fig. 13: breakdown on Cross64 (fractions of the total)",
          "", "| network | uJ/image | CMOS-Mem-Read | CMOS-Mem-Write | "
          "ADC | DAC | array | shift-add |", "|---|---|---|---|---|---|---|---|"]
  for r in f13:
    t = r["j_per_image"]
    out.append(f"| {r['network']} | {t * 1e6:.4g} | " + " | ".join(
        f"{r[f'{k}_j'] / t:.4f}" for k in
        ("buffer_read", "buffer_write") + COMPUTE) + " |")
  out += ["", f"### LeNet-5: accuracy against energy ({n_test} test "
          "images, non-ideal chip without variation, 8-bit inputs)", "",
          "| tile | ADC bits | DAC bits | accuracy | uJ/image | ADC | DAC | "
          "us/image | mm^2 | Pareto |", "|---|---|---|---|---|---|---|---|---|---|"]
  for r in sorted(sweep_rows, key=lambda r: r["j_per_image"]):
    t = r["j_per_image"]
    out.append(
        f"| {r['tile']} | {r['adc_bits']} | {r['dac_bits']} | "
        f"{r['accuracy']:.4f} | {t * 1e6:.4g} | {r['adc_j'] / t:.2f} | "
        f"{r['dac_j'] / t:.2f} | {r['s_per_image'] * 1e6:.4g} | "
        f"{r['area_mm2']:.3g} | {'yes' if r['pareto'] else ''} |")
  out.append(f"\nfp32 accuracy: {sweep_rows[0]['fp32']:.4f}.")
  return "\n".join(out) + "\n"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default="/tmp/energy_study")
  parser.add_argument("--quick", action="store_true",
                      help="8 chips on 300 test images, 3 training epochs")
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  out = common.output_dir(args.out, args.quick, "energy_study_")
  jax.config.update("jax_compilation_cache_dir",
                    os.path.join(args.workdir, "xla_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  start = time.time()
  print("== fig. 12b (shapes only)", flush=True)
  f12 = fig12b()
  f13 = fig13()
  print("== LeNet-5 sweep", flush=True)
  rows, n_test = sweep(args)
  wall = time.time() - start
  command = "python benchmarks/energy_study.py" + (" --quick" if args.quick
                                                   else "")
  with open(os.path.join(out, "energy_study.md"), "w") as f:
    f.write(markdown(f12, f13, rows, n_test, command, wall))
  keys = sorted({k for r in f12 + f13 + rows for k in r})
  with open(os.path.join(out, "energy_study.csv"), "w", newline="") as f:
    w = csv.DictWriter(f, keys)
    w.writeheader()
    w.writerows(f12 + f13 + rows)
  plot_fig12b(os.path.join(out, "energy_fig12b.png"), f12)
  plot_fig13(os.path.join(out, "energy_fig13.png"), f13)
  plot_pareto(os.path.join(out, "energy_pareto.png"), rows)
  print(f"wrote {out}/energy_study.md and plots ({wall:.0f} s)")


if __name__ == "__main__":
  main()
