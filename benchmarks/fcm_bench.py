"""Speed of the exact G_eff (FCM) against scipy sparse LU, per tile.

    python benchmarks/fcm_bench.py            # 16..512 (budget ~3-4 min, 2 cores)
    python benchmarks/fcm_bench.py --quick    # 16..256, sparse LU up to 256
    python benchmarks/fcm_bench.py --sizes 64 128

Both sides compute the same quantity, the full `[M, N]` matrix `G_eff` of a
ReRAM tile (devices 100 kOhm-1 MOhm, i.e. g uniform in [1e-6, 1e-5] S;
r_row 1 ohm, r_col 4.6 ohm, r_source = r_sense = 100 ohm; DESIGN.md
section 2):

* rxjax: `rxjax.effective_conductance`, jitted and compiled ahead of time
  (the compile time is its own column), timed with `block_until_ready`, best
  of a few repeats. Single tiles and, up to 128 x 128, batches of tiles
  (64 at 16, 32 at 32, 16 at 64, 4 at 128); 256 and 512 are timed as single
  tiles only. The batches are timed twice: jitted on one XLA device, and
  jitted with their tile axis sharded over every device of a mesh
  (`jax.shard_map`, each device solving its own tiles, as
  `rxjax.crossbar.solve(..., mesh=)` does). The script exposes the CPU's
  cores as that many XLA devices (`--devices`, default one per core): one
  device's program of a tile's small dependent steps keeps about 1.5 of 2
  cores busy.
* splu: the plain nodal matrix (2MN unknowns: row nodes a, column nodes b;
  the sources folded into the right-hand side as Dirichlet terminals, the
  sense resistors as shunts to ground), assembled vectorized and untimed,
  then `scipy.sparse.linalg.splu` once and one solve for all M unit inputs;
  column j's current is `v_b[M-1, j] / r_sense`. Only factorization + solve
  is timed. SuperLU runs on one core (OPENBLAS_NUM_THREADS=1 or 2: same
  times). Its G_eff must agree with rxjax float64 to 1e-9 (relative, every
  entry) or the script fails.

The float64 single-tile rows of both sides run in a fresh subprocess each
(`--child`), which also reports the process peak RSS increase over a
baseline taken after importing jax and allocating the inputs (VmHWM after
resetting it through /proc/self/clear_refs; ru_maxrss where that is not
possible). For rxjax it includes XLA compilation. At 64 and 128 the float64
batch (one device and sharded) and splu are also timed in turns, with the
cores each keeps busy (process CPU time over wall time). The last line of
stdout is one JSON object; its `ms_per_tile_64_f64` and `speedup_vs_splu_64`
are those of the sharded batch (with one device, of the jitted one), the
`_one_device` keys those of the jitted batch.
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

import common  # benchmarks/common.py

jax.config.update("jax_enable_x64", True)

import rxjax  # noqa: E402  (after enabling float64)

R_ROW, R_COL, R_SOURCE, R_SENSE = 1.0, 4.6, 100.0, 100.0
G_MIN, G_MAX = 1e-6, 1e-5  # 1 MOhm .. 100 kOhm
WIRES = rxjax.Wires(r_row=R_ROW, r_col=R_COL, r_source=R_SOURCE,
                    r_sense=R_SENSE)
ALL_SIZES = (16, 32, 64, 128, 256, 512)
BATCH = {16: 64, 32: 32, 64: 16, 128: 4}  # larger sizes: one tile only
SPLU_MAX_QUICK = 256
TOLERANCE = 1e-9  # rxjax float64 vs splu, max relative difference


def tiles(size: int, batch: int, seed: int = 0) -> np.ndarray:
  """`[batch, size, size]` float64 conductances; tile 0 is the same for all
  batch sizes (so batched rows can be checked against the splu tile)."""
  rng = np.random.default_rng([seed, size])
  first = rng.uniform(G_MIN, G_MAX, (1, size, size))
  rest = rng.uniform(G_MIN, G_MAX, (batch - 1, size, size))
  return np.concatenate([first, rest], axis=0)


def _status_gb(field: str) -> float | None:
  try:
    with open("/proc/self/status") as f:
      for line in f:
        if line.startswith(field + ":"):
          return int(line.split()[1]) * 1024 / 1e9  # kB
  except OSError:
    pass
  return None


def _start_peak() -> float:
  """Baseline for the peak RSS increase; resets the peak where Linux can.

  Writing 5 to /proc/self/clear_refs resets VmHWM (the peak RSS) to the
  present RSS, so transient peaks of importing jax do not hide the
  computation's own. Elsewhere fall back to ru_maxrss (a high-water mark).
  """
  try:
    with open("/proc/self/clear_refs", "w") as f:
      f.write("5")
    return _status_gb("VmRSS")
  except OSError:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def _peak_increase(base: float) -> float:
  peak = _status_gb("VmHWM")
  if peak is None:
    # Linux reports ru_maxrss in KiB.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
  return peak - base


def _load() -> str:
  try:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())
  except OSError:
    return "n/a"


def _busy(own_cores: float = 0.0) -> str | None:
  """Why the machine looks too busy to time on, or None.

  own_cores: cores this process kept busy over the last minute, taken off
  the 1-minute load average (the sharded batches keep both cores busy).
  """
  try:
    load = os.getloadavg()[0]
  except OSError:
    return None
  cpus = os.cpu_count() or 1
  if load - own_cores > 0.5 * cpus + 0.5:
    return (f"load average {load:.2f} on {cpus} CPUs, {own_cores:.2f} of it "
            "this script's (other processes are running)")
  return None


def _repeats(size: int, splu: bool = False) -> int:
  if size >= 512:
    return 1
  if size >= 256:
    return 2 if splu else 3
  return 5


# ---------------------------------------------------------------------------
# rxjax


def _mesh_sharding():
  """The tile axis over every device (one mesh axis)."""
  mesh = jax.make_mesh((len(jax.devices()),), ("tiles",),
                       axis_types=(jax.sharding.AxisType.Auto,))
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("tiles"))


@functools.cache
def _sharded(shape, dtype):
  """The solve with the batch's tiles sharded over every device, each
  solving its own (no communication), jitted and compiled once."""
  sharding = _mesh_sharding()
  fn = jax.jit(jax.shard_map(
      functools.partial(rxjax.effective_conductance, wires=WIRES),
      mesh=sharding.mesh, in_specs=sharding.spec, out_specs=sharding.spec,
      check_vma=False))
  return fn.lower(jax.ShapeDtypeStruct(shape, dtype,
                                       sharding=sharding)).compile()


@functools.cache
def _jitted(shape, dtype):
  """The jitted (one-device) solve, compiled once per shape and dtype: the
  in-turns timing reuses the table's compilation."""
  fn = jax.jit(functools.partial(rxjax.effective_conductance, wires=WIRES))
  return fn.lower(jax.ShapeDtypeStruct(shape, dtype)).compile()


def time_rxjax(g: np.ndarray, repeats: int, after_compile=lambda: None,
               sharded: bool = False):
  """(best seconds per call, compile seconds, G_eff) for g: [B, M, N].

  sharded: time the jitted solve with the batch's tiles sharded over every
  device (`_sharded`); otherwise a jitted call on one device.
  """
  g = jax.device_put(g, _mesh_sharding() if sharded else None)
  start = time.perf_counter()
  if sharded:
    compiled = _sharded(g.shape, g.dtype)
  else:
    compiled = _jitted(g.shape, g.dtype)
  compile_s = time.perf_counter() - start
  after_compile()
  if g.shape[-1] < 512:
    compiled(g).block_until_ready()  # Warm-up (first-execution overheads).
  times = []
  for _ in range(min(repeats, 3)):
    start = time.perf_counter()
    out = compiled(g).block_until_ready()
    times.append(time.perf_counter() - start)
  # Small tiles take microseconds: average over enough calls per repeat.
  # On a shared machine single calls stall now and then, so small sizes get
  # more repeats within a time budget and the best one counts.
  inner = max(1, int(0.01 / max(min(times), 1e-6)))
  budget = 0.5 if g.shape[-1] <= 128 else 0.0
  spent = sum(times)
  while len(times) < repeats or (spent < budget and len(times) < 100):
    start = time.perf_counter()
    for _ in range(inner):
      out = compiled(g)
    out.block_until_ready()
    elapsed = time.perf_counter() - start
    spent += elapsed
    times.append(elapsed / inner)
  best = min(times)
  return best, compile_s, np.asarray(out)


# ---------------------------------------------------------------------------
# scipy sparse LU of the nodal matrix


def nodal_system(g: np.ndarray):
  """Nodal matrix K (csc), right-hand sides [2MN, M] and sense node indices.

  Unknowns: a[i, j] = i * N + j, b[i, j] = M N + i * N + j. Every resistance
  is > 0 here (ReRAM regime), so plain nodal analysis suffices: a source
  resistor adds g_source to K[a[i,0], a[i,0]] and g_source * v_i to the
  right-hand side; a sense resistor is a shunt g_sense at b[M-1, j].
  """
  import scipy.sparse as sp
  m, n = g.shape
  a = np.arange(m * n).reshape(m, n)
  b = a + m * n
  p = np.concatenate([a[:, :-1].ravel(), b[:-1].ravel(), a.ravel()])
  q = np.concatenate([a[:, 1:].ravel(), b[1:].ravel(), b.ravel()])
  y = np.concatenate([np.full(m * (n - 1), 1 / R_ROW),
                      np.full((m - 1) * n, 1 / R_COL), g.ravel()])
  rows = np.concatenate([p, q, p, q, a[:, 0], b[-1]])
  cols = np.concatenate([p, q, q, p, a[:, 0], b[-1]])
  vals = np.concatenate([y, y, -y, -y, np.full(m, 1 / R_SOURCE),
                         np.full(n, 1 / R_SENSE)])
  k = sp.csc_matrix((vals, (rows, cols)), shape=(2 * m * n, 2 * m * n))
  rhs = np.zeros((2 * m * n, m))
  rhs[a[:, 0], np.arange(m)] = 1 / R_SOURCE  # unit volt on input i
  return k, rhs, b[-1]


def time_splu(g: np.ndarray, repeats: int, permc_spec: str):
  """(best seconds of factor + solve, G_eff) for one tile g: [M, N]."""
  import scipy.sparse.linalg as spla
  k, rhs, sense = nodal_system(g)
  times = []
  budget = 0.5 if g.shape[-1] <= 128 else 0.0  # as for rxjax
  while len(times) < repeats or (sum(times) < budget and len(times) < 100):
    start = time.perf_counter()
    x = spla.splu(k, permc_spec=permc_spec).solve(rhs)
    times.append(time.perf_counter() - start)
  best = min(times)
  g_eff = (x[sense] / R_SENSE).T  # [N, M] -> [M, N]
  return best, g_eff


def time_in_turns(size: int, permc_spec: str, seconds: float = 6.0) -> dict:
  """rxjax's float64 batch (one device; and sharded over every device when
  there are several) and splu, called in turns for about `seconds`.

  Returns {name: (best s per tile, cores busy)} for "one_device", "sharded"
  (if several devices) and "splu"; cores busy is process CPU time over wall
  time, summed over that side's calls.

  The VM's speed drifts by 10-50% over tens of seconds, and the table's
  two sides are timed apart (splu in its own process): on 2026-11-24 the
  64 x 64 ratio so measured ranged from 8.3x to 16.5x in five runs (two of
  them with JAX 0.10.1 and 0.9.2). Taken in turns, all sides see the same
  phases.
  """
  import scipy.sparse.linalg as spla
  batch = BATCH.get(size, 1)
  g = jax.device_put(tiles(size, batch))
  calls = {"one_device": (_jitted(g.shape, g.dtype), (g,))}
  if len(jax.devices()) > 1:
    calls["sharded"] = (_sharded(g.shape, g.dtype),
                        (jax.device_put(g, _mesh_sharding()),))
  k, rhs, _ = nodal_system(tiles(size, 1)[0])
  calls["splu"] = (lambda: spla.splu(k, permc_spec=permc_spec).solve(rhs), ())
  timed = common.in_turns(calls, repeats=3, seconds=seconds)
  per_call = {"one_device": batch, "sharded": batch, "splu": 1}
  return {name: (t / per_call[name], busy)
          for name, (t, busy) in timed.items()}


# ---------------------------------------------------------------------------
# Child process: one float64 single-tile measurement with its peak memory.


def child(args) -> None:
  size = args.child
  g = tiles(size, 1)
  base = _start_peak()
  run_peak = None
  if args.what == "rxjax":
    compiled = {}

    def after_compile():
      # Split the peak into compilation and execution: reset it here.
      compiled["peak"] = _peak_increase(base)
      compiled["base"] = _start_peak()

    seconds, compile_s, g_eff = time_rxjax(g, _repeats(size), after_compile)
    g_eff = g_eff[0]
    run_peak = _peak_increase(compiled["base"])
    peak = max(compiled["peak"], compiled["base"] - base + run_peak)
  else:
    compile_s = None
    seconds, g_eff = time_splu(g[0], _repeats(size, splu=True), args.permc)
    peak = _peak_increase(base)
  if args.out:
    np.save(args.out, g_eff)
  print(json.dumps({"seconds": seconds, "compile_s": compile_s,
                    "peak_gb": peak, "run_peak_gb": run_peak,
                    "baseline_gb": base}))


def run_child(size: int, what: str, out: str, permc: str) -> dict:
  cmd = [sys.executable, os.path.abspath(__file__), "--child", str(size),
         "--what", what, "--out", out, "--permc", permc]
  proc = subprocess.run(cmd, capture_output=True, text=True)
  if proc.returncode != 0:
    sys.stderr.write(proc.stderr)
    raise SystemExit(f"child {what} at {size} failed ({proc.returncode})")
  return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------


def rel_diff(x, ref) -> float:
  return float(np.max(np.abs(np.asarray(x, np.float64) - ref) / ref))


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--sizes", type=int, nargs="+", default=None,
                      help="tile sizes M = N (default 16..512, or 16..256 "
                           "with --quick)")
  parser.add_argument("--quick", action="store_true",
                      help="skip 512 and sparse LU above 256")
  parser.add_argument("--permc", default="COLAMD",
                      help="splu column ordering (scipy's default COLAMD)")
  parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
  parser.add_argument("--what", choices=("rxjax", "splu"), default="rxjax",
                      help=argparse.SUPPRESS)
  parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
  parser.add_argument("--devices", type=int, default=os.cpu_count(),
                      help="CPU devices for the sharded batches (default: "
                           "one per core; 1 skips them)")
  args = parser.parse_args(argv)
  if args.child is not None:
    return child(args)
  jax.config.update("jax_num_cpu_devices", args.devices)

  sizes = args.sizes or [s for s in ALL_SIZES if not (args.quick and s > 256)]
  splu_max = SPLU_MAX_QUICK if args.quick else max(sizes)
  print(f"# fcm_bench: {' '.join(sys.argv)}")
  print(f"# {datetime.datetime.now():%Y-%m-%d %H:%M}, {platform.machine()} "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"jax {jax.__version__}, numpy {np.__version__}, "
        f"load average {_load()}")
  print(f"# ReRAM tile: g ~ U[{G_MIN:g}, {G_MAX:g}] S, r_row {R_ROW}, "
        f"r_col {R_COL}, r_source {R_SOURCE}, r_sense {R_SENSE} ohm; "
        f"splu permc_spec={args.permc}", flush=True)
  busy = _busy()
  if busy:
    print(f"# WARNING: {busy}: timings will be slow and noisy", flush=True)

  rows = []  # one dict per table row
  splu_s = {}  # size -> seconds per tile
  tmp = tempfile.mkdtemp(prefix="fcm_bench_")
  for size in sizes:
    # Float64 single tile, both sides, each in a fresh process.
    rx = run_child(size, "rxjax", os.path.join(tmp, f"rx{size}.npy"),
                   args.permc)
    rx_g = np.load(os.path.join(tmp, f"rx{size}.npy"))
    sp, sp_g = None, None
    if size <= splu_max:
      sp = run_child(size, "splu", os.path.join(tmp, f"sp{size}.npy"),
                     args.permc)
      sp_g = np.load(os.path.join(tmp, f"sp{size}.npy"))
      splu_s[size] = sp["seconds"]
      diff = rel_diff(rx_g, sp_g)
      if not diff <= TOLERANCE:
        raise SystemExit(f"rxjax float64 and splu G_eff differ by {diff:.2e} "
                         f"at {size}x{size} (> {TOLERANCE:g})")

    def add(dtype, batch, seconds, compile_s, g_eff, sharded=False, **peaks):
      rows.append(dict(size=size, dtype=dtype, batch=batch, sharded=sharded,
                       s_tile=seconds / batch, compile_s=compile_s,
                       diff=None if sp_g is None else rel_diff(g_eff, sp_g),
                       **peaks))
      where = f" on {len(jax.devices())} devices" if sharded else ""
      print(f"#   {size:4d} {dtype} x{batch}{where}: "
            f"{seconds / batch * 1e3:.4g} "
            f"ms/tile" + (f", splu {sp['seconds'] * 1e3:.4g} ms" if sp
                          else ""), flush=True)

    add("float64", 1, rx["seconds"], rx["compile_s"], rx_g,
        peak_rx=rx["peak_gb"], run_peak_rx=rx["run_peak_gb"],
        peak_sp=sp["peak_gb"] if sp else None)
    batch = BATCH.get(size, 1)
    others = [("float32", 1, False)]
    if batch > 1:
      others += [("float64", batch, False), ("float32", batch, False)]
      if len(jax.devices()) > 1:
        others += [("float64", batch, True), ("float32", batch, True)]
    for dtype, b, sharded in others:
      g = tiles(size, b).astype(dtype)
      seconds, compile_s, g_eff = time_rxjax(g, _repeats(size), sharded=sharded)
      add(dtype, b, seconds, compile_s, g_eff[0], sharded=sharded)

  def fmt(x, spec):
    return "-" if x is None else format(x, spec)

  print()
  print("| M = N | dtype | batch | ms/tile rxjax | ms splu | speedup "
        "| compile s | max rel. diff vs splu "
        "| peak GB rxjax (execution only) | peak GB splu |")
  print("|---|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    sp = splu_s.get(r["size"])
    peak = (f"{r['peak_rx']:.3f} ({r['run_peak_rx']:.3f})"
            if r.get("peak_rx") is not None else "-")
    batch = (f"{r['batch']} on {len(jax.devices())} devices" if r["sharded"]
             else r["batch"])
    print(f"| {r['size']} | {r['dtype']} | {batch} "
          f"| {r['s_tile'] * 1e3:.4g} | {fmt(sp and sp * 1e3, '.4g')} "
          f"| {fmt(sp and sp / r['s_tile'], '.3g')} | {r['compile_s']:.2f} "
          f"| {fmt(r['diff'], '.1e')} | {peak} "
          f"| {fmt(r.get('peak_sp'), '.3f')} |")
  print()
  print("ms/tile: best of a few repeats (one at 512), compile excluded; "
        "batched rows divide by the batch; 256 and 512 are single tiles only. "
        "'on N devices': the jitted solve with the batch's tiles sharded "
        "over the CPU cores exposed as N XLA devices; the other rows are "
        "jitted calls on one device. "
        "ms splu: factorization + solve of one float64 tile (single-threaded "
        "SuperLU), repeated on "
        "every row of its size. Peak GB: process peak RSS increase of the "
        "float64 single-tile run in a fresh process; for rxjax including "
        "XLA compilation, in parentheses the execution alone. "
        f"Load average at the end: {_load()}.")
  own_start = (time.perf_counter(), time.process_time())
  turns = {}  # size -> {side: (s per tile, cores busy)}
  for size in sorted(set(sizes) & {64, 128}):
    if size <= splu_max:
      turns[size] = time_in_turns(size, args.permc)
      sp_t = turns[size]["splu"][0]
      sides = [f"{name.replace('_', ' ')} {t * 1e3:.3g} ms/tile, "
               f"{sp_t / t:.3g}x ({busy_cores:.2f} cores busy)"
               for name, (t, busy_cores) in turns[size].items()
               if name != "splu"]
      print(f"In turns, {size} x {size} float64, batch {BATCH[size]}: "
            f"{'; '.join(sides)}; splu {sp_t * 1e3:.3g} ms "
            f"({turns[size]['splu'][1]:.2f} cores busy)", flush=True)
  # The in-turns section (about 40 s at 64 and 128, just before this)
  # keeps up to two cores busy; its cores busy estimate this process's
  # share of the 1-minute load average.
  own = (time.process_time() - own_start[1]) / max(time.perf_counter() - own_start[0],
                                        1e-9)
  if busy or _busy(own if turns else 0.0):
    print(f"WARNING: the machine was busy (load average {_load()} at the "
          "end); re-measure on a quiet machine before quoting these numbers.")

  def rxjax_s(size, dtype, batch, sharded=False):
    return next((r["s_tile"] for r in rows
                 if (r["size"], r["dtype"], r["batch"], r["sharded"])
                 == (size, dtype, batch, sharded)), None)

  def ratio(a, b):
    return None if a is None or b is None else a / b

  def in_turns(side):
    got = turns.get(64, {})
    return ratio(got["splu"][0], got[side][0]) if side in got else None

  # The headline is the call a user makes: sharded over the cores when there
  # are several devices.
  one = rxjax_s(64, "float64", BATCH[64])
  b64 = rxjax_s(64, "float64", BATCH[64], sharded=True) or one
  s256 = rxjax_s(256, "float64", 1)
  peak_512 = next((r["peak_rx"] for r in rows if r["size"] == 512
                   and r.get("peak_rx") is not None), None)
  summary = {
      "devices": len(jax.devices()),
      "ms_per_tile_64_f64": None if b64 is None else b64 * 1e3,
      "speedup_vs_splu_64": ratio(splu_s.get(64), b64),
      "speedup_vs_splu_64_in_turns": in_turns("sharded") or in_turns(
          "one_device"),
      "ms_per_tile_64_f64_one_device": None if one is None else one * 1e3,
      "speedup_vs_splu_64_one_device": ratio(splu_s.get(64), one),
      "speedup_vs_splu_64_in_turns_one_device": in_turns("one_device"),
      "s_256_f64": s256,
      "speedup_vs_splu_256": ratio(splu_s.get(256), s256),
      "s_512_f64": rxjax_s(512, "float64", 1),
      "peak_gb_512": peak_512,
  }
  print(json.dumps(summary))


if __name__ == "__main__":
  main()
