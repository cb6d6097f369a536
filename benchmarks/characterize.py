"""Crossbar VMM errors as in RxNN figures 2(b)-(f) and 10, with the exact model.

    python benchmarks/characterize.py            # ~1.5 min on 2 cores; docs/figures
    python benchmarks/characterize.py --quick    # smoke run (~1 min, temp dir)
    python benchmarks/characterize.py --out /tmp/figs

Setting (DESIGN.md section 2; RxNN section IV-B): a ReRAM tile with devices
of 100 kOhm-1 MOhm (g in [1e-6, 1e-5] S), row wire segments r_row = 1 ohm,
column segments r_col = 4.6 ohm, r_source = r_sense = 100 ohm, inputs in
[0, v_read] with v_read = 0.25 V, float64. The error of column j is the
signed relative VMM error

    err[j] = (I_ideal[j] - I[j]) / I_ideal[j],   I_ideal = v @ g,

in percent; positive means the tile delivers less current than `v @ g`
(the usual IR-drop loss). `I = v @ G_eff` with `G_eff` the exact effective
conductance (`rxjax.effective_conductance`). The DAC divider of RxNN's
"DAC+DRIVER" curves is not included here: DRIVER is the row source
resistance alone (the DAC model lives in `rxjax.periphery`).

Figures (each writes a CSV and a PNG into --out and prints its table):

1. fig2bc_size: error of the last column of an N x N tile against N = 8..256,
   all cells at g_min (fig. 2b) and at g_max (fig. 2c), all inputs v_read;
   one curve per non-ideality: WIRE (r_row, r_col only), SENSE (r_sense
   only), DRIVER (r_source only), WIRE+SENSE and ALL.
2. fig2d_states: 64 x 64, all inputs v_read, 1000 random states (cells
   uniform in [g_min, g_max], one key each): per column the max, min and
   mean error over states, and one sample state.
3. fig2e_inputs: 64 x 64, the sample state of (2), 1000 random inputs
   uniform in [0, v_read]: per column max, min, mean and one sample input.
4. fig2f_variation: the sample state of (2) as nominal design, 1000 chip
   instances with 10% lognormal process variation (`rxjax.device.vary`, one
   key per instance), all inputs v_read. The error is relative to the
   nominal ideal product `v @ g_nominal`; "variation only" is the same for
   the varied devices without wires (`v @ g_varied`).
5. fig10_models: one 64 x 64 tile, one random state and one random input:
   per column error of the series model (`rxjax.series_model`, MNSIM-like),
   the exact model and ngspice (`rxjax.spice.simulate`, several seconds).

Every draw comes from `jax.random.PRNGKey(--seed)`; the same seed gives the
same numbers. Times are printed per figure, compilation included (most of
figure 1's time). `--instances 10000` runs RxNN's 10,000 Monte-Carlo chips
(~2 min more).
"""

from __future__ import annotations

import argparse
import csv
import os
import time

# One OpenBLAS thread: the 64 x 64 inverses of the exact model are LAPACK
# calls, and on a shared 2-core machine a busy-waiting OpenBLAS thread pool
# made them ~50x slower (1 s instead of 20 ms per tile, measured) whenever
# another process held a core. Must be set before numpy / jaxlib load it.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import common  # noqa: E402  (benchmarks/common.py)
from rxjax import circuit, device, spice  # noqa: E402

R_MIN, R_MAX = 100e3, 1e6  # ohm: ReRAM
G_MIN, G_MAX = 1 / R_MAX, 1 / R_MIN  # siemens
V_READ = 0.25  # volt
R_ROW, R_COL, R_SOURCE, R_SENSE = 1.0, 4.6, 100.0, 100.0  # ohm
ALL = circuit.Wires(r_row=R_ROW, r_col=R_COL, r_source=R_SOURCE,
                    r_sense=R_SENSE)
CASES = {
    "WIRE": circuit.Wires(r_row=R_ROW, r_col=R_COL),
    "SENSE": circuit.Wires(r_sense=R_SENSE),
    "DRIVER": circuit.Wires(r_source=R_SOURCE),
    "WIRE+SENSE": circuit.Wires(r_row=R_ROW, r_col=R_COL, r_sense=R_SENSE),
    "ALL": ALL,
}
TILE = 64  # figures 2(d)-(f) and 10

# Figure-level keys: fold_in(root, FIG_*) so figures do not share draws.
FIG_STATES, FIG_INPUTS, FIG_VARIATION, FIG_MODELS = 2, 3, 4, 5


def rel_error(ideal, actual):
  """Signed relative error in percent, `100 (ideal - actual) / ideal`."""
  return 100.0 * (np.asarray(ideal) - np.asarray(actual)) / np.asarray(ideal)


def write_csv(path, header, rows):
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(header)
    for row in rows:
      w.writerow([f"{x:.10g}" if isinstance(x, float) else x for x in row])


def print_table(title, header, rows, every=1):
  print(f"\n{title}")
  print("  ".join(f"{h:>12}" for h in header))
  for k, row in enumerate(rows):
    if k % every and k != len(rows) - 1:
      continue
    print("  ".join(f"{x:>12.4f}" if isinstance(x, float) else f"{x:>12}"
                    for x in row))


def geff_batched(g, wires, chunk):
  """G_eff of `g: [B, M, N]` in chunks of `chunk` tiles (one compilation)."""
  parts = []
  b = g.shape[0]
  for start in range(0, b, chunk):
    part = g[start:start + chunk]
    short = chunk - part.shape[0]
    if short:  # pad the last chunk so that every call has the same shape
      part = jnp.concatenate([part, jnp.repeat(part[-1:], short, 0)])
    out = circuit.effective_conductance(part, wires)
    parts.append(np.asarray(out)[:chunk - short])
  return np.concatenate(parts)


def column_stats(err):
  """err: [samples, N] -> rows (column, max, min, mean)."""
  return [(j, float(err[:, j].max()), float(err[:, j].min()),
           float(err[:, j].mean())) for j in range(err.shape[1])]


def argmax_summary(err):
  """Which column holds each sample's largest error."""
  cols = np.argmax(err, axis=1)
  n = err.shape[1]
  return (f"column of largest error: {len(np.unique(cols))} distinct columns "
          f"over {err.shape[0]} samples; last column {np.mean(cols == n - 1):.1%}"
          f", first half {np.mean(cols < n // 2):.1%}")


def stats_plot(path, title, err_stats, sample, sample_label, extra=None):
  cols = [r[0] for r in err_stats]
  fig, ax = plt.subplots(figsize=(6.4, 4.0))
  ax.plot(cols, [r[1] for r in err_stats], label="MAX", color="tab:red")
  ax.plot(cols, [r[3] for r in err_stats], label="AVG", color="tab:blue")
  ax.plot(cols, [r[2] for r in err_stats], label="MIN", color="tab:green")
  ax.plot(cols, sample, label=sample_label, color="k", lw=0.8, ls="--")
  if extra is not None:
    label, values = extra
    ax.plot(cols, values, label=label, color="tab:gray", lw=0.8, ls=":")
  ax.set_xlabel("column")
  ax.set_ylabel("relative error (I_ideal - I) / I_ideal (%)")
  ax.set_title(title, fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def fig_size(out, sizes):
  """RxNN fig. 2(b)/(c): last-column error against the tile size."""
  rows = []
  for n in sizes:
    g = jnp.stack([jnp.full((n, n), G_MIN), jnp.full((n, n), G_MAX)])
    v = jnp.full((n,), V_READ)
    ideal = np.asarray(v @ g)[:, -1]
    row = [n]
    errs = {}
    for name, wires in CASES.items():
      # "sweep": both methods are exact, but nested dissection compiles for
      # ~40 s per shape at 128 and 256 (measured), far longer than it runs.
      geff = circuit.effective_conductance(g, wires, method="sweep")
      i_out = np.asarray(v @ geff)[:, -1]
      errs[name] = rel_error(ideal, i_out)
    row += [float(errs[name][0]) for name in CASES]
    row += [float(errs[name][1]) for name in CASES]
    rows.append(row)
  header = (["N"] + [f"gmin_{k}" for k in CASES]
            + [f"gmax_{k}" for k in CASES])
  write_csv(os.path.join(out, "fig2bc_size.csv"), header, rows)
  print_table("fig 2(b)/(c): last-column error (%) vs N x N, inputs v_read",
              header, rows)

  fig, axes = plt.subplots(1, 2, figsize=(10, 4.0))
  for k, (ax, state) in enumerate(zip(axes, ("G_MIN", "G_MAX"))):
    for c, name in enumerate(CASES):
      # In a uniform square tile SENSE and DRIVER coincide (each line then
      # carries N equal cells): DRIVER is dashed so that both stay visible.
      ax.plot(sizes, [r[1 + k * len(CASES) + c] for r in rows],
              marker="x" if name == "DRIVER" else "o",
              ls="--" if name == "DRIVER" else "-", label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(sizes)
    ax.set_xticklabels([str(s) for s in sizes])
    ax.set_xlabel("crossbar size N (N x N)")
    ax.set_ylabel("last-column error (%)")
    ax.set_title(f"({'bc'[k]}) all cells at {state}", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(os.path.join(out, "fig2bc_size.png"), dpi=120)
  plt.close(fig)
  return rows


def random_states(key, count, n):
  keys = jax.random.split(key, count)
  return jax.vmap(lambda k: jax.random.uniform(
      k, (n, n), jnp.float64, G_MIN, G_MAX))(keys)


def fig_states(out, key, n, count, chunk):
  """RxNN fig. 2(d): error across random crossbar states, fixed inputs."""
  g = random_states(key, count, n)
  v = np.full((n,), V_READ)
  geff = geff_batched(g, ALL, chunk)
  err = rel_error(v @ np.asarray(g), v @ geff)  # [count, N]
  stats = column_stats(err)
  rows = [r + (float(err[0, r[0]]),) for r in stats]
  header = ["column", "max", "min", "avg", "sample"]
  write_csv(os.path.join(out, "fig2d_states.csv"), header, rows)
  print_table(f"fig 2(d): {n}x{n}, inputs v_read, {count} random states"
              " (error %, every 8th column)", header, rows, every=8)
  print(argmax_summary(err))
  stats_plot(os.path.join(out, "fig2d_states.png"),
             f"(d) {n}x{n}, all inputs {V_READ} V, {count} random states",
             stats, err[0], "sample state")
  return np.asarray(g[0]), err


def fig_inputs(out, key, g, count):
  """RxNN fig. 2(e): error across random inputs, fixed state."""
  n = g.shape[-1]
  v = np.asarray(jax.random.uniform(key, (count, g.shape[0]), jnp.float64, 0,
                                    V_READ))
  geff = np.asarray(circuit.effective_conductance(jnp.asarray(g), ALL))
  err = rel_error(v @ g, v @ geff)
  stats = column_stats(err)
  rows = [r + (float(err[0, r[0]]),) for r in stats]
  header = ["column", "max", "min", "avg", "sample"]
  write_csv(os.path.join(out, "fig2e_inputs.csv"), header, rows)
  print_table(f"fig 2(e): {n}x{n}, sample state, {count} random inputs "
              f"in [0, {V_READ}] V (error %, every 8th column)", header, rows,
              every=8)
  print(argmax_summary(err))
  stats_plot(os.path.join(out, "fig2e_inputs.png"),
             f"(e) {n}x{n}, fixed state, {count} random inputs",
             stats, err[0], "sample input")
  return err


def fig_variation(out, key, g, count, chunk):
  """RxNN fig. 2(f): Monte-Carlo over chip instances with 10% variation."""
  spec = device.DeviceSpec(r_min=R_MIN, r_max=R_MAX, sigma=0.1)
  keys = jax.random.split(key, count)
  g_nominal = jnp.asarray(g)
  varied = jax.jit(jax.vmap(lambda k: device.vary(g_nominal, spec, key=k)))(
      keys)
  n = g.shape[-1]
  v = np.full((g.shape[0],), V_READ)
  ideal = v @ g
  geff = geff_batched(varied, ALL, chunk)
  err = rel_error(ideal, v @ geff)
  err_var = rel_error(ideal, v @ np.asarray(varied))
  err_nominal = rel_error(
      ideal, v @ np.asarray(circuit.effective_conductance(g_nominal, ALL)))
  stats = column_stats(err)
  rows = [r + (float(err_nominal[r[0]]), float(err_var[:, r[0]].max()),
               float(err_var[:, r[0]].min())) for r in stats]
  header = ["column", "max", "min", "avg", "no_variation", "var_only_max",
            "var_only_min"]
  write_csv(os.path.join(out, "fig2f_variation.csv"), header, rows)
  print_table(f"fig 2(f): {n}x{n}, sample state, {count} chip instances"
              " with 10% lognormal variation, inputs v_read (error % vs the "
              "nominal ideal product, every 8th column)", header, rows,
              every=8)
  print(argmax_summary(err))
  stats_plot(os.path.join(out, "fig2f_variation.png"),
             f"(f) {n}x{n}, {count} instances, sigma/mu = 10%",
             stats, err_nominal, "nominal (no variation)")
  return err, err_var, err_nominal


def fig_models(out, key, n):
  """RxNN fig. 10: series (MNSIM-like) model, exact model and ngspice."""
  k_g, k_v = jax.random.split(key)
  g = np.asarray(jax.random.uniform(k_g, (n, n), jnp.float64, G_MIN, G_MAX))
  v = np.asarray(jax.random.uniform(k_v, (n,), jnp.float64, 0, V_READ))
  ideal = v @ g
  i_series = v @ np.asarray(circuit.series_model(jnp.asarray(g), ALL))
  i_exact = v @ np.asarray(circuit.effective_conductance(jnp.asarray(g), ALL))
  t = time.perf_counter()
  i_spice = spice.simulate(g, v, ALL)
  t_spice = time.perf_counter() - t
  e_series, e_exact, e_spice = (rel_error(ideal, i)
                                for i in (i_series, i_exact, i_spice))
  rows = [(j, float(e_series[j]), float(e_exact[j]), float(e_spice[j]))
          for j in range(n)]
  header = ["column", "series", "exact", "ngspice"]
  write_csv(os.path.join(out, "fig10_models.csv"), header, rows)
  print_table(f"fig 10: {n}x{n}, one random state and input (error %, every "
              "8th column)", header, rows, every=8)
  agree = float(np.max(np.abs(i_exact - i_spice) / np.abs(i_spice)))
  miss = float(np.max(np.abs(e_series - e_spice)))
  miss_exact = float(np.max(np.abs(e_exact - e_spice)))
  print(f"ngspice: {t_spice:.1f} s; max |I_exact - I_ngspice| / |I_ngspice| "
        f"= {agree:.2e}")
  print(f"max |err_series - err_ngspice| = {miss:.3f} percentage points "
        f"(RxNN: 3.51 for MNSIM); max |err_exact - err_ngspice| = "
        f"{miss_exact:.2e} (RxNN FCM: 0.28)")
  print(f"mean error: series {e_series.mean():.3f} %, exact "
        f"{e_exact.mean():.3f} %, ngspice {e_spice.mean():.3f} %")

  fig, ax = plt.subplots(figsize=(6.4, 4.0))
  cols = np.arange(n)
  ax.plot(cols, e_spice, label="ngspice", color="k", lw=2.5, alpha=0.5)
  ax.plot(cols, e_exact, label="exact (effective_conductance)",
          color="tab:blue", lw=1)
  ax.plot(cols, e_series, label="series model (MNSIM-like)",
          color="tab:red", lw=1, ls="--")
  ax.set_xlabel("column")
  ax.set_ylabel("relative error (I_ideal - I) / I_ideal (%)")
  ax.set_title(f"(10) {n}x{n}, one random state and input", fontsize=10)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(os.path.join(out, "fig10_models.png"), dpi=120)
  plt.close(fig)
  return agree, miss, e_series, e_exact


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default=None,
                      help="output directory (default docs/figures; a "
                      "temporary directory with --quick)")
  parser.add_argument("--quick", action="store_true",
                      help="smoke run: sizes 8-32, 32 x 32 tiles, 20 samples,"
                      " fig. 10 at 16 x 16")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--samples", type=int, default=None,
                      help="states (2d) and inputs (2e); default 1000")
  parser.add_argument("--instances", type=int, default=None,
                      help="Monte-Carlo chip instances (2f); default 1000")
  args = parser.parse_args()

  args.out = common.output_dir(args.out, args.quick, "rxjax_characterize_")
  sizes = [8, 16, 32] if args.quick else [8, 16, 32, 64, 128, 256]
  tile = 32 if args.quick else TILE
  samples = args.samples or (20 if args.quick else 1000)
  instances = args.instances or samples
  chunk = 20 if args.quick else 50
  root = jax.random.PRNGKey(args.seed)
  print(f"rxjax characterize: {jax.devices()[0].platform}, "
        f"{os.cpu_count()} cores, float64, seed {args.seed}, out {args.out}")

  start = time.perf_counter()
  timings = {}

  def timed(name, fn, *a):
    t = time.perf_counter()
    result = fn(*a)
    timings[name] = time.perf_counter() - t
    print(f"[{name}: {timings[name]:.1f} s, compilation included]")
    return result

  timed("fig2bc", fig_size, args.out, sizes)
  g_sample, _ = timed("fig2d", fig_states, args.out,
                      jax.random.fold_in(root, FIG_STATES), tile, samples,
                      chunk)
  timed("fig2e", fig_inputs, args.out, jax.random.fold_in(root, FIG_INPUTS),
        g_sample, samples)
  timed("fig2f", fig_variation, args.out,
        jax.random.fold_in(root, FIG_VARIATION), g_sample, instances, chunk)
  timed("fig10", fig_models, args.out, jax.random.fold_in(root, FIG_MODELS),
        16 if args.quick else TILE)

  total = time.perf_counter() - start
  print(f"\ntotal {total:.1f} s; " + ", ".join(
      f"{k} {v:.1f} s" for k, v in timings.items()))
  print(f"wrote {sorted(os.listdir(args.out))} to {args.out}")


if __name__ == "__main__":
  main()
