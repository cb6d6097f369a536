"""TxSim figs. 10-12: sensitivity sweeps of LeNet-5 trained ON a non-ideal chip.

    python benchmarks/txsim_sweeps.py               # full run, docs/figures
    python benchmarks/txsim_sweeps.py --epochs 1    # shorter full run
    python benchmarks/txsim_sweeps.py --quick       # smoke run, temp dir

TxSim (Roy et al., section VI-C) trains LeNet-5 on MNIST on a non-ideal
crossbar (Cross-NI) and varies one parameter at a time. It reports that
the update non-linearity `nu <= 0.1` costs almost nothing, `nu = 0.5` is
noticeable and `nu = 1` fails to converge (fig. 10); that the write-noise
factor `gamma = 1, 5` is harmless and `gamma = 10` costs ~10% (fig. 10);
that larger crossbars lose slightly more (fig. 11); and that the on/off
ratio `R_max / R_min` has a sweet spot (best at ~8 with `R_max` fixed at
1 MOhm, ~5 with `R_min` fixed; fig. 12). This script runs the same sweeps
in rxjax.

Base point (`configs/lenet_mnist_txsim.py`): LeNet-5 on the bundled MNIST
digits (4,000 train / 1,000 test), 64 x 64 tiles, ReRAM 100 kOhm - 1 MOhm
as one analog device per polarity, 8-bit inputs and ADCs, wires r_row 1 /
r_col 4.6 / r_source = r_sense 100 ohm, no process variation, `nu = 0.01`,
`gamma = 5`; forward and backward (transposed read) on the chip, `G_eff`
solved exactly every L = 10 steps and interpolated in between (TxSim
IV-D), updates through TxSim eq. 1 (`rxjax.device.update` via
`rxjax.optim.apply_device_response`); plain SGD, lr 0.05 cosine-decayed,
batch 32. Each point trains from the same initialization (seed 0) for
`--epochs` epochs and is tested on one chip instance (the training chip's
key), as `experiment.train_and_evaluate` does in mode "txsim".

Sweeps (one parameter changed from the base point, which all four share):

* nu in {0.01, 0.1, 0.5, 1} (gamma 5);
* gamma in {1, 5, 10} (nu 0.01);
* tile size in {16, 32, 64, 128};
* on/off ratio: R_min = 100 kOhm fixed, R_max in {200k, 500k, 1M, 2M, 5M,
  10M}; then R_max = 1 MOhm fixed, R_min in {500k, 200k, 100k, 50k, 20k,
  10k}.

References, the same epochs and initialization: the digital network
(floating point, plain SGD) and Cross-Ideal (the base chip with 8-bit
converters only: ideal wires, `nu = gamma = 0`).

Every point is one `experiment.Workdir` under `--workdir/e<epochs>/`
(checkpoints every epoch, the finished accuracy in results.json), so a
rerun skips finished points and resumes unfinished ones; `--quick` (1
epoch, the end points of each sweep) shares the `e1` points with a full
`--epochs 1` run, which is the same computation. Outputs in `--out`
(default docs/figures; a temporary directory with --quick):
txsim_sweeps.csv, txsim_sweeps.md and txsim_sweep_{nu,gamma,size,onoff}.png.
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

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import common  # noqa: E402  (benchmarks/common.py)
from configs import lenet_mnist_txsim  # noqa: E402
from rxjax import experiment  # noqa: E402

NU = (0.01, 0.1, 0.5, 1.0)
GAMMA = (1.0, 5.0, 10.0)
SIZES = (16, 32, 64, 128)
R_MAX_OHM = (200e3, 500e3, 1e6, 2e6, 5e6, 10e6)  # R_min = 100 kOhm.
R_MIN_OHM = (500e3, 200e3, 100e3, 50e3, 20e3, 10e3)  # R_max = 1 MOhm.


@dataclasses.dataclass(frozen=True)
class Point:
  """One Cross-NI training: the base config with these values."""
  nu: float
  gamma: float
  tile_size: int
  r_min_ohm: float
  r_max_ohm: float

  @property
  def name(self) -> str:
    """Work directory name; equal points share it (and their result)."""
    return (f"nu{self.nu:g}_gamma{self.gamma:g}_tile{self.tile_size}_"
            f"rmin{self.r_min_ohm:g}_rmax{self.r_max_ohm:g}")

  @property
  def on_off_ratio(self) -> float:
    return self.r_max_ohm / self.r_min_ohm


BASE = Point(nu=0.01, gamma=5.0, tile_size=64, r_min_ohm=100e3,
             r_max_ohm=1e6)


@dataclasses.dataclass(frozen=True)
class Sweep:
  """One series: a parameter of the base point and its values."""
  tag: str  # CSV `sweep` and series key.
  parameter: str  # Field of `Point`.
  values: tuple
  title: str

  def points(self, quick: bool):
    values = (self.values[0], self.values[-1]) if quick else self.values
    return [(v, dataclasses.replace(BASE, **{self.parameter: v}))
            for v in values]


SWEEPS = (
    Sweep("nu", "nu", NU, "update non-linearity nu (gamma 5)"),
    Sweep("gamma", "gamma", GAMMA, "write-noise factor gamma (nu 0.01)"),
    Sweep("size", "tile_size", SIZES, "crossbar size (rows = columns)"),
    Sweep("onoff_fixed_rmin", "r_max_ohm", R_MAX_OHM,
          "on/off ratio, R_min = 100 kOhm fixed, R_max varied"),
    Sweep("onoff_fixed_rmax", "r_min_ohm", R_MIN_OHM,
          "on/off ratio, R_max = 1 MOhm fixed, R_min varied"),
)


def point_config(point: Point, epochs: int):
  """`configs/lenet_mnist_txsim.py` at `point`, trained for `epochs`."""
  config = lenet_mnist_txsim.get_config()
  config.num_epochs = epochs
  config.txsim.nu = point.nu
  config.txsim.gamma = point.gamma
  config.chip.tile_size = point.tile_size
  config.chip.r_min_ohm = point.r_min_ohm
  config.chip.r_max_ohm = point.r_max_ohm
  return config


def _last_epoch(wd: experiment.Workdir, phase: str, epochs: int) -> dict:
  """The metrics line `experiment.train` logged after the last epoch."""
  found = {}
  path = os.path.join(wd.path, "metrics.jsonl")
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        record = json.loads(line)
        if record.get("phase") == phase and record.get("epoch") == epochs:
          found = record  # A resumed run may repeat it: keep the last.
  return found


def _release_compiled():
  """Drops the compiled programs of a finished point.

  `experiment.program_fn`, `accuracy` and `evaluate_chips` keep one
  compiled function per (model, spec) (`experiment.clear_compiled` drops
  them), and every sweep point has its own spec: in one long process the executables pile up until
  XLA's CPU backend cannot map more code (the first full run died at point
  17 of 21 with "LLVM ERROR: Unable to allocate section memory", memory
  being free; the memory-map count, vm.max_map_count = 65530, is the likely
  limit). No later point reuses them, so they are dropped; the persistent
  compilation cache keeps them on disk for reruns.
  """
  experiment.clear_compiled()
  jax.clear_caches()


class Runner:
  """Trains and tests points, one cached `Workdir` per point."""

  def __init__(self, root: str, epochs: int):
    self.root, self.epochs = root, epochs
    self.run = None  # Loaded on first use: a rerun of cached points
    # needs no data.
    self.points = {}
    self.computed = 0  # Trainings run by this invocation.

  def _setup(self, config):
    if self.run is None:
      # Data and model do not depend on the chip or the update response.
      self.run = experiment.setup(config)
      data = self.run.data
      print(f"  data: {data.name}, {len(data.y_train)} train / "
            f"{len(data.y_test)} test images", flush=True)
    return self.run

  def train_and_test(self, point: Point, phase: str) -> tuple[dict, bool]:
    """({"test_accuracy", "seconds", "train_loss", "train_accuracy"},
    whether it was computed now).

    phase "digital": floating point; "cross_ideal" / "cross_ni": on the
    chip of `experiment.txsim_specs`, tested on it with the straight-through
    spec (as mode "txsim" of `experiment.train_and_evaluate`). Cached in
    the point's results.json.
    """
    config = point_config(point, self.epochs)
    wd = experiment.Workdir(os.path.join(self.root, point.name), config)
    results = wd.read_json("results.json", {})
    if phase in results:
      return results[phase], False
    run = self._setup(config)
    start = time.perf_counter()
    if phase == "digital":
      variables = experiment.train(config, run, wd, phase=phase,
                                   epochs=self.epochs,
                                   learning_rate=config.learning_rate)
      acc = experiment.accuracy(run.model, variables, run.data, None)
    else:
      t = config.txsim
      spec, update = experiment.txsim_specs(config)[phase]
      variables = experiment.train(
          config, run, wd, phase=phase, epochs=self.epochs,
          learning_rate=config.learning_rate, spec=spec, update=update,
          program_every=t.interval if t.g_eff == "interpolated" else 1)
      acc = experiment.evaluate_on_chip(
          run, variables, spec.replace(backward="straight_through"),
          key=experiment.keys.chip_key(config.seed))
    seconds = time.perf_counter() - start
    _release_compiled()
    last = _last_epoch(wd, phase, self.epochs)
    return wd.result(phase, lambda: {
        "test_accuracy": acc, "seconds": seconds,
        "train_loss": last.get("loss", float("nan")),
        "train_accuracy": last.get("train_accuracy", float("nan"))}), True

  def point(self, point: Point, phase: str = "cross_ni") -> dict:
    key = (point, phase)
    if key not in self.points:
      result, computed = self.train_and_test(point, phase)
      self.computed += computed
      how = "computed" if computed else "cached"
      print(f"[{phase} {point.name}] test accuracy "
            f"{result['test_accuracy']:.4f}, train loss "
            f"{result['train_loss']:.4f}, {result['seconds']:.0f} s "
            f"({how})", flush=True)
      self.points[key] = result
    return self.points[key]


# ---------------------------------------------------------------------------
# Outputs.


def _ohm(r: float) -> str:
  return f"{r / 1e6:g} MOhm" if r >= 1e6 else f"{r / 1e3:g} kOhm"


def _value(sweep: Sweep, value) -> str:
  if sweep.parameter in ("r_min_ohm", "r_max_ohm"):
    return _ohm(value)
  if sweep.parameter == "tile_size":
    return f"{value} x {value}"
  return f"{value:g}"


def markdown(rows, refs, command, epochs, wall, quick, computed) -> str:
  digital = refs["digital"]["test_accuracy"]
  ideal = refs["cross_ideal"]["test_accuracy"]
  lines = [
      "# TxSim figs. 10-12 on rxjax: sensitivity of LeNet-5 trained on a "
      "non-ideal crossbar", "",
      f"Made by `{command}` (`benchmarks/txsim_sweeps.py`)"
      + (" -- a --quick smoke run: 1 epoch, end points only." if quick
         else "."), "",
      f"LeNet-5 on the bundled MNIST digits (4,000 train / 1,000 test), "
      f"{epochs} epoch(s) per point, plain SGD lr 0.05 cosine-decayed, batch "
      "32, seed 0 (every point starts from the same initialization). Base "
      "point (`configs/lenet_mnist_txsim.py`): 64 x 64 tiles, R_min 100 kOhm "
      "/ R_max 1 MOhm, one analog device per polarity, 8-bit inputs and "
      "ADCs, wires r_row 1 / r_col 4.6 / r_source = r_sense 100 ohm, no "
      "process variation, nu 0.01, gamma 5; forward and backward "
      "(transposed) reads on the chip, G_eff exact every 10 steps and "
      "interpolated in between, updates through TxSim eq. 1. Each table "
      "changes one thing. Test accuracy on the training chip; in brackets "
      "the change from digital training in percentage points; train loss "
      "is the mean cross-entropy of the last epoch. One training per point "
      "(one seed) and 1,000 test digits: the binomial standard error of an "
      "accuracy near 0.9 is ~0.9 percentage points, so differences of 1-2 "
      "points are within the noise.", "",
      "References (same epochs, same initialization):", "",
      "| trained | test accuracy | last-epoch train loss | seconds |",
      "|---|---|---|---|",
      f"| digital (floating point) | {digital:.4f} | "
      f"{refs['digital']['train_loss']:.4f} | "
      f"{refs['digital']['seconds']:.0f} |",
      f"| Cross-Ideal (8-bit converters only, nu = gamma = 0) | "
      f"{ideal:.4f} ({100 * (ideal - digital):+.1f}) | "
      f"{refs['cross_ideal']['train_loss']:.4f} | "
      f"{refs['cross_ideal']['seconds']:.0f} |", ""]
  for sweep in SWEEPS:
    mine = [r for r in rows if r["sweep"] == sweep.tag]
    if not mine:
      continue
    onoff = sweep.tag.startswith("onoff")
    lines += [f"## {sweep.title}", "", f"`{command}`", "",
              f"| {sweep.parameter} | " + ("on/off ratio | " if onoff else "")
              + "Cross-NI test accuracy | last-epoch train loss | seconds |",
              "|---|" + ("---|" if onoff else "") + "---|---|---|"]
    for r in mine:
      acc = r["test_accuracy"]
      lines.append(
          f"| {_value(sweep, r['value'])} | "
          + (f"{r['on_off_ratio']:g} | " if onoff else "")
          + f"{acc:.4f} ({100 * (acc - digital):+.1f}) | "
          f"{r['train_loss']:.4f} | {r['seconds']:.0f} |")
    for label, phase in (("digital (reference)", "digital"),
                         ("Cross-Ideal (reference)", "cross_ideal")):
      ref = refs[phase]
      lines.append(
          f"| *{label}* | " + ("- | " if onoff else "")
          + f"*{ref['test_accuracy']:.4f}* | *{ref['train_loss']:.4f}* | "
          f"*{ref['seconds']:.0f}* |")
    lines.append("")
  distinct = {r["point"]: r for r in rows}
  total = sum(r["seconds"] for r in refs.values()) + sum(
      r["seconds"] for r in distinct.values())
  lines += [f"Time: the seconds column is each point's training and test "
            "time when it was computed (compilation included), "
            f"{total:.0f} s summed over the {len(refs) + len(distinct)} "
            f"distinct trainings, on {os.cpu_count()} CPU cores shared with "
            f"other work. This invocation computed {computed} of them (the "
            f"rest were cached in the work directory) in {wall:.0f} s.", ""]
  return "\n".join(lines)


def write_csv(path, rows):
  fields = ["sweep", "parameter", "value", "test_accuracy", "epochs",
            "seconds", "on_off_ratio", "train_loss"]
  with open(path, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=fields)
    w.writeheader()
    for r in rows:
      w.writerow({k: (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k])
                  for k in fields})


def _references(ax, refs):
  ax.axhline(refs["digital"]["test_accuracy"], color="k", ls="--", lw=1,
             label="digital")
  ax.axhline(refs["cross_ideal"]["test_accuracy"], color="C0", ls=":", lw=1.5,
             label="Cross-Ideal")


def _series(ax, pts, label, color, marker, below=False):
  xs, ys = zip(*pts)
  ax.plot(xs, ys, color=color, marker=marker, label=label)
  for x, y in pts:
    ax.annotate(f"{y:.3f}", (x, y), textcoords="offset points",
                xytext=(0, -12 if below else 6), ha="center", fontsize=7,
                color=color)


def plot(path, title, xlabel, series, refs, command, epochs, *,
         xscale="linear", ticks=None):
  fig, ax = plt.subplots(figsize=(6.0, 4.3))
  _references(ax, refs)
  for i, ((label, pts), color, marker) in enumerate(
      zip(series, ("C3", "C1"), ("o", "s"))):
    _series(ax, pts, label, color, marker, below=i == 1)
  if xscale == "log2":
    ax.set_xscale("log", base=2)
  elif xscale == "log":
    ax.set_xscale("log")
  if ticks is not None:
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
  values = [y for _, pts in series for _, y in pts] + [
      refs["digital"]["test_accuracy"], refs["cross_ideal"]["test_accuracy"]]
  ax.set_ylim(max(0.0, min(values) - 0.05), min(1.0, max(values) + 0.03))
  ax.set_xlabel(xlabel)
  ax.set_ylabel("test accuracy (1,000 digits)")
  ax.set_title(f"{title}\nLeNet-5 Cross-NI, {epochs} epoch(s)", fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.text(0.01, 0.005, command, fontsize=6, family="monospace",
           color="0.4")
  fig.tight_layout(rect=(0, 0.03, 1, 1))
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plots(out, rows, refs, command, epochs):
  def pts(tag, x="value"):
    return [(r[x], r["test_accuracy"]) for r in rows if r["sweep"] == tag]

  paths = []
  path = os.path.join(out, "txsim_sweep_nu.png")
  plot(path, "TxSim fig. 10 (left): update non-linearity",
       "non-linearity factor nu (gamma 5)",
       [("Cross-NI", pts("nu"))], refs, command, epochs, xscale="log",
       ticks=sorted({x for x, _ in pts("nu")}))
  paths.append(path)
  path = os.path.join(out, "txsim_sweep_gamma.png")
  plot(path, "TxSim fig. 10 (right): write noise",
       "write-noise factor gamma (nu 0.01)",
       [("Cross-NI", pts("gamma"))], refs, command, epochs,
       ticks=sorted({x for x, _ in pts("gamma")}))
  paths.append(path)
  path = os.path.join(out, "txsim_sweep_size.png")
  plot(path, "TxSim fig. 11: crossbar size", "crossbar size (rows = columns)",
       [("Cross-NI", pts("size"))], refs, command, epochs, xscale="log2",
       ticks=sorted({x for x, _ in pts("size")}))
  paths.append(path)
  path = os.path.join(out, "txsim_sweep_onoff.png")
  fixed_rmin = pts("onoff_fixed_rmin", "on_off_ratio")
  fixed_rmax = pts("onoff_fixed_rmax", "on_off_ratio")
  plot(path, "TxSim fig. 12: on/off ratio", "on/off ratio R_max / R_min",
       [("R_min = 100 kOhm fixed, R_max varied", fixed_rmin),
        ("R_max = 1 MOhm fixed, R_min varied", fixed_rmax)],
       refs, command, epochs, xscale="log",
       ticks=sorted({x for x, _ in fixed_rmin + fixed_rmax}))
  paths.append(path)
  return paths


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default="/tmp/rxjax_txsim_sweeps",
                      help="checkpoints and finished points (resumed)")
  parser.add_argument("--epochs", type=int, default=None,
                      help="training epochs per point (default 2; 1 with "
                      "--quick)")
  parser.add_argument("--quick", action="store_true",
                      help="smoke run: 1 epoch, the end points of each "
                      "sweep; outputs in a temporary directory")
  parser.add_argument("--out", default=None,
                      help="output directory (default docs/figures; a "
                      "temporary directory with --quick)")
  args = parser.parse_args()
  epochs = args.epochs or (1 if args.quick else 2)
  if epochs < 1:
    parser.error(f"--epochs must be >= 1, got {epochs}")
  start = time.perf_counter()
  command = shlex.join(
      ["python", os.path.relpath(os.path.abspath(sys.argv[0]), REPO)]
      + sys.argv[1:])
  out = common.output_dir(args.out or (
      None if args.quick else os.path.join(REPO, "docs", "figures")),
                           args.quick, "rxjax_txsim_sweeps_")
  root = os.path.join(args.workdir, f"e{epochs}")
  os.makedirs(root, exist_ok=True)
  # Compiled training steps and chip programs are reused by reruns.
  jax.config.update("jax_compilation_cache_dir",
                    os.path.join(args.workdir, "jax_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  print(f"txsim_sweeps: {jax.devices()[0].platform}, {os.cpu_count()} "
        f"cores, {epochs} epoch(s) per point, workdir {root}, out {out}\n"
        f"  command: {command}", flush=True)

  runner = Runner(root, epochs)
  refs = {phase: runner.point(BASE, phase)
          for phase in ("digital", "cross_ideal")}
  rows = []
  for sweep in SWEEPS:
    for value, point in sweep.points(args.quick):
      result = runner.point(point)
      rows.append({
          "sweep": sweep.tag, "parameter": sweep.parameter, "value": value,
          "test_accuracy": result["test_accuracy"], "epochs": epochs,
          "seconds": result["seconds"], "on_off_ratio": point.on_off_ratio,
          "train_loss": result["train_loss"], "point": point})
  ref_rows = [{
      "sweep": "reference", "parameter": phase, "value": "", "epochs": epochs,
      "test_accuracy": r["test_accuracy"], "seconds": r["seconds"],
      "on_off_ratio": BASE.on_off_ratio if phase != "digital" else "",
      "train_loss": r["train_loss"]} for phase, r in refs.items()]
  wall = time.perf_counter() - start
  text = markdown(rows, refs, command, epochs, wall, args.quick,
                  runner.computed)
  md = os.path.join(out, "txsim_sweeps.md")
  with open(md, "w") as f:
    f.write(text)
  csv_path = os.path.join(out, "txsim_sweeps.csv")
  write_csv(csv_path, ref_rows + rows)
  pngs = plots(out, rows, refs, command, epochs)
  print("\n" + text)
  print(f"wrote {', '.join([csv_path, md] + pngs)}\ncommand: {command}\n"
        f"wall time {wall:.0f} s")


if __name__ == "__main__":
  main()
