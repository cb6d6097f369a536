"""Error and speed of the AAM against the exact G_eff (TxSim IV-D, fig. 6).

    python benchmarks/aam_error.py            # ~40 s on 2 cores; docs/figures
    python benchmarks/aam_error.py --quick    # smoke run (temp dir)
    python benchmarks/aam_error.py --out /tmp/figs

`rxjax.aam_conductance` (the approximate analytical model, AAM) is compared
with `rxjax.effective_conductance` (exact) on 64 x 64 tiles, float64, with
TxSim's wires (section V: r_row = 1 ohm, r_col = 4.6 ohm per cell) and
r_source = r_sense = 100 ohm (as in benchmarks/characterize.py).

Resistance ranges. TxSim fig. 6 shows the AAM error for three R_min - R_max
ranges, (a) high, (b) middle, (c) low, but its values are in the figure only,
not in the paper's text. Used here, one decade each:

  (a) 1 MOhm - 10 MOhm    (b) 100 kOhm - 1 MOhm (TxSim's Ag/Si ReRAM)
  (c) 10 kOhm - 100 kOhm  (d) 1 kOhm - 10 kOhm (beyond fig. 6: spintronic-like)

States per range: all cells at g_max (1 / R_min), all at g_min, and
--states random states (cells uniform in [g_min, g_max], one key each).

Errors (relative, per entry, |approx - exact| / exact):

* G_eff: over all M x N entries;
* column currents `i = v @ G`: over all columns of 1 + --inputs input
  vectors (all rows at 1 V, and random inputs uniform in [0, 1] V);

reported as max and mean over the entries (and the states of a kind), for
paths = 1, 2, 3, 4, 6. The "ideal" row is `g` itself, i.e. the size of the
IR-drop effect the model has to capture.

Speed: a batch of --batch random tiles of range (b) and one single tile,
float64 and float32, jitted and compiled first; best of --repeats calls of
`aam_conductance` and `effective_conductance`, alternated in the same run;
the ratio is exact time / AAM time.

Outputs in --out: aam_error.csv (the error table), aam_speed.csv,
aam_error_map.png (per range, the G_eff error map of one random state for
paths 1 and 3, like fig. 6) and aam_error_paths.png (max error against
paths). Every draw comes from `jax.random.PRNGKey(--seed)`.
"""

from __future__ import annotations

import argparse
import csv
import os
import time

# One OpenBLAS thread (see benchmarks/characterize.py): the exact model's
# inverses are LAPACK calls that a busy-waiting thread pool slows down.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import colors  # noqa: E402
import numpy as np  # noqa: E402

import common  # noqa: E402  (benchmarks/common.py)
from rxjax import circuit  # noqa: E402

TILE = 64
WIRES = circuit.Wires(r_row=1.0, r_col=4.6, r_source=100.0, r_sense=100.0)
RANGES = {  # name: (R_min, R_max) in ohm
    "a": (1e6, 1e7),
    "b": (1e5, 1e6),
    "c": (1e4, 1e5),
    "d": (1e3, 1e4),
}
PATHS = (1, 2, 3, 4, 6)
MAP_PATHS = (1, 3)
SPEED_PATHS = (1, 2, 3, 4)


def range_label(name):
  r_min, r_max = RANGES[name]

  def ohm(r):
    return f"{r / 1e6:g} MOhm" if r >= 1e6 else f"{r / 1e3:g} kOhm"

  return f"({name}) {ohm(r_min)} - {ohm(r_max)}"


def write_csv(path, header, rows):
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(header)
    for row in rows:
      w.writerow([f"{x:.6g}" if isinstance(x, float) else x for x in row])


def rel(approx, exact):
  return np.abs(np.asarray(approx) - exact) / np.abs(exact)


def states(key, name, count):
  """[2 + count, M, M]: all at g_max, all at g_min, random states."""
  r_min, r_max = RANGES[name]
  g_min, g_max = 1 / r_max, 1 / r_min
  rand = jax.random.uniform(key, (count, TILE, TILE), jnp.float64, g_min,
                            g_max)
  return jnp.concatenate([jnp.full((1, TILE, TILE), g_max),
                          jnp.full((1, TILE, TILE), g_min), rand])


def error_table(root, n_states, n_inputs):
  """Rows (range, state, paths, G_eff max / mean, current max / mean)."""
  rows, maps = [], {}
  v = np.concatenate([
      np.ones((1, TILE)),
      np.asarray(jax.random.uniform(jax.random.fold_in(root, 99),
                                    (n_inputs, TILE), jnp.float64))])
  kinds = {"g_max": slice(0, 1), "g_min": slice(1, 2),
           "random": slice(2, None)}
  for k, name in enumerate(RANGES):
    g = states(jax.random.fold_in(root, k), name, n_states)
    exact = np.asarray(circuit.effective_conductance(g, WIRES))
    i_exact = np.einsum("si,bij->bsj", v, exact)
    approx = {"ideal": np.asarray(g)}
    for p in PATHS:
      approx[p] = np.asarray(circuit.aam_conductance(g, WIRES, paths=p))
    for p, a in approx.items():
      e_g = rel(a, exact)
      e_i = rel(np.einsum("si,bij->bsj", v, a), i_exact)
      for kind, sl in kinds.items():
        rows.append((name, kind, str(p), float(e_g[sl].max()),
                     float(e_g[sl].mean()), float(e_i[sl].max()),
                     float(e_i[sl].mean())))
      if p in MAP_PATHS:
        maps[name, p] = e_g[2]  # the first random state
  return rows, maps


def print_table(rows):
  print("\nAAM vs exact G_eff, 64 x 64, max / mean relative error "
        "(G_eff entries; column currents of 1 + random inputs)")
  head = ("range", "state", "paths", "G max", "G mean", "I max", "I mean")
  print(f"{head[0]:>5} {head[1]:>7} {head[2]:>6}"
        + "".join(f"{h:>11}" for h in head[3:]))
  for row in rows:
    print(f"{row[0]:>5} {row[1]:>7} {row[2]:>6}"
          + "".join(f"{x:>11.2e}" for x in row[3:]))


def plot_maps(path, maps):
  fig, axes = plt.subplots(len(MAP_PATHS), len(RANGES),
                           figsize=(3.2 * len(RANGES), 3.0 * len(MAP_PATHS)))
  for c, name in enumerate(RANGES):
    for r, p in enumerate(MAP_PATHS):
      ax = axes[r, c]
      err = 100 * maps[name, p]
      im = ax.imshow(err, cmap="viridis", norm=colors.LogNorm(
          vmin=max(err.min(), err.max() * 1e-4), vmax=err.max()))
      ax.set_title(f"{range_label(name)}\npaths={p}: max {err.max():.2g} %",
                   fontsize=8)
      ax.set_xlabel("column", fontsize=8)
      ax.set_ylabel("row", fontsize=8)
      ax.tick_params(labelsize=7)
      cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
      cb.ax.tick_params(labelsize=7)
  fig.suptitle("AAM error map w.r.t. the exact G_eff, |AAM - exact| / exact "
               "(%), 64 x 64, one random state (cf. TxSim fig. 6)",
               fontsize=9)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_paths(path, rows):
  fig, axes = plt.subplots(1, 2, figsize=(10, 5.0))
  styles = {"random": "-", "g_max": "--", "g_min": ":"}
  for c, name in enumerate(RANGES):
    color = f"C{c}"
    for kind, ls in styles.items():
      sel = [r for r in rows if r[0] == name and r[1] == kind]
      xs = [int(r[2]) for r in sel if r[2] != "ideal"]
      for ax, col in zip(axes, (3, 5)):
        ys = [r[col] for r in sel if r[2] != "ideal"]
        ax.plot(xs, ys, ls=ls, color=color, marker="o", ms=3,
                label=f"{range_label(name)}, {kind}" if ax is axes[0]
                else None)
    ideal = [r for r in rows if r[0] == name and r[1] == "random"
             and r[2] == "ideal"][0]
    for ax, col in zip(axes, (3, 5)):
      ax.axhline(ideal[col], color=color, lw=0.6, alpha=0.5)
  for ax, what in zip(axes, ("G_eff entries", "column currents")):
    ax.set_yscale("log")
    ax.set_xticks(PATHS)
    ax.set_xlabel("paths (path families kept)")
    ax.set_ylabel(f"max relative error, {what}")
    ax.grid(alpha=0.3, which="both")
  fig.suptitle("AAM error against paths (thin lines: g itself, the IR-drop "
               "effect)", fontsize=9)
  fig.tight_layout(rect=(0, 0.2, 1, 1))
  fig.legend(loc="lower center", ncol=4, fontsize=7, frameon=False)
  fig.savefig(path, dpi=110)
  plt.close(fig)


def best_time(fn, repeats):
  return min(_timed(fn) for _ in range(repeats))


def _timed(fn):
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


def speed_table(root, batch, repeats):
  """Rows (dtype, tiles, paths, ms/tile AAM, ms/tile exact, ratio)."""
  r_min, r_max = RANGES["b"]
  g64 = jax.random.uniform(jax.random.fold_in(root, 7), (batch, TILE, TILE),
                           jnp.float64, 1 / r_max, 1 / r_min)
  rows = []
  for dtype in (jnp.float64, jnp.float32):
    for tiles in (batch, 1):
      g = g64[:tiles].astype(dtype)
      exact = jax.jit(lambda g: circuit.effective_conductance(g, WIRES))
      aams = {p: jax.jit(lambda g, p=p: circuit.aam_conductance(
          g, WIRES, paths=p)) for p in SPEED_PATHS}
      jax.block_until_ready(exact(g))
      for f in aams.values():
        jax.block_until_ready(f(g))
      t_exact, t_aam = [], {p: [] for p in SPEED_PATHS}
      for _ in range(repeats):  # alternated: both see the same machine load
        t_exact.append(_timed(lambda: exact(g)))
        for p, f in aams.items():
          t_aam[p].append(_timed(lambda f=f: f(g)))
      for p in SPEED_PATHS:
        te, ta = min(t_exact) / tiles, min(t_aam[p]) / tiles
        rows.append((jnp.dtype(dtype).name, tiles, p, 1e3 * ta, 1e3 * te,
                     te / ta))
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default=None,
                      help="output directory (default docs/figures; a "
                      "temporary directory with --quick)")
  parser.add_argument("--quick", action="store_true",
                      help="smoke run: 2 random states, 4 inputs, batch 8")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--states", type=int, default=None,
                      help="random states per range (default 16)")
  parser.add_argument("--inputs", type=int, default=None,
                      help="random input vectors (default 32)")
  parser.add_argument("--batch", type=int, default=None,
                      help="tiles in the timed batch (default 64)")
  parser.add_argument("--repeats", type=int, default=None,
                      help="timed calls, best kept (default 7)")
  args = parser.parse_args()
  args.out = common.output_dir(args.out, args.quick, "rxjax_aam_")
  n_states = args.states or (2 if args.quick else 16)
  n_inputs = args.inputs or (4 if args.quick else 32)
  batch = args.batch or (8 if args.quick else 64)
  repeats = args.repeats or (2 if args.quick else 7)
  root = jax.random.PRNGKey(args.seed)
  print(f"rxjax aam_error: {jax.devices()[0].platform}, {os.cpu_count()} "
        f"cores, seed {args.seed}, out {args.out}; wires {WIRES}")

  start = time.perf_counter()
  rows, maps = error_table(root, n_states, n_inputs)
  print_table(rows)
  write_csv(os.path.join(args.out, "aam_error.csv"),
            ["range", "state", "paths", "geff_max", "geff_mean",
             "current_max", "current_mean"], rows)
  plot_maps(os.path.join(args.out, "aam_error_map.png"), maps)
  plot_paths(os.path.join(args.out, "aam_error_paths.png"), rows)
  print(f"[errors: {time.perf_counter() - start:.1f} s, compilation "
        "included]")

  start = time.perf_counter()
  speed = speed_table(root, batch, repeats)
  print(f"\nspeed, range (b), best of {repeats}; ratio = exact / AAM")
  print(f"{'dtype':>8} {'tiles':>6} {'paths':>6} {'AAM ms/tile':>12} "
        f"{'exact ms/tile':>14} {'ratio':>7}")
  for row in speed:
    print(f"{row[0]:>8} {row[1]:>6} {row[2]:>6} {row[3]:>12.4f} "
          f"{row[4]:>14.3f} {row[5]:>7.1f}")
  write_csv(os.path.join(args.out, "aam_speed.csv"),
            ["dtype", "tiles", "paths", "aam_ms_per_tile",
             "exact_ms_per_tile", "ratio"], speed)
  print(f"[speed: {time.perf_counter() - start:.1f} s, compilation "
        "included]")
  print(f"wrote aam_error.csv, aam_speed.csv, aam_error_map.png, "
        f"aam_error_paths.png to {args.out}")


if __name__ == "__main__":
  main()
