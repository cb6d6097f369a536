"""IR drop of one 64 x 64 ReRAM tile: ideal vs exact column currents.

`python train.py` runs `main()` until training on crossbars exists (issue
"DNNs on crossbars"). It draws one tile and one input vector from fixed seeds,
computes the exact effective conductance `G_eff` (DESIGN.md section 2) and
prints the column currents an ideal crossbar would deliver (`v @ g`) next to
the ones the tile with its wire, source and sense resistances delivers
(`v @ G_eff`). Nothing here is trained or fitted.
"""

from __future__ import annotations

import time

import jax
import numpy as np

M = N = 64
R_MIN, R_MAX = 100e3, 1e6  # device resistance range, ohm (ReRAM)
V_READ = 0.2  # largest input voltage, volt
SEED = 0


def main() -> None:
  jax.config.update("jax_enable_x64", True)
  import rxjax  # after enabling float64

  wires = rxjax.Wires(r_row=1.0, r_col=4.6, r_source=100.0, r_sense=100.0)
  rng = np.random.default_rng(SEED)
  # Conductances uniform between 1 / R_MAX and 1 / R_MIN.
  g = rng.uniform(1 / R_MAX, 1 / R_MIN, (M, N))
  v = rng.uniform(0.0, V_READ, M)

  start = time.perf_counter()
  g_eff = np.asarray(rxjax.effective_conductance(g, wires))
  first_s = time.perf_counter() - start
  again_s = float("inf")
  for _ in range(3):  # best of 3: a shared machine stalls now and then
    start = time.perf_counter()
    rxjax.effective_conductance(g, wires).block_until_ready()
    again_s = min(again_s, time.perf_counter() - start)

  ideal = v @ g
  exact = v @ g_eff
  # Independent check of the same currents by a per-input solve.
  direct = np.asarray(rxjax.node_voltages(g, v, wires).i_out)
  rel = (ideal - exact) / ideal

  print(f"rxjax {rxjax.__version__}: one {M}x{N} ReRAM tile (seed {SEED}), "
        "float64")
  print(f"  devices {R_MIN / 1e3:.0f} kOhm - {R_MAX / 1e6:.0f} MOhm, "
        f"r_row {wires.r_row} ohm, r_col {wires.r_col} ohm, "
        f"r_source {wires.r_source} ohm, r_sense {wires.r_sense} ohm")
  print(f"  inputs uniform in [0, {V_READ}] V on the {M} rows")
  print()
  print("  column | ideal v @ g (uA) | exact v @ G_eff (uA) | IR-drop loss")
  print("  -------|------------------|----------------------|-------------")
  for j in (0, 1, 2, N // 2 - 1, N // 2, N - 3, N - 2, N - 1):
    print(f"  {j:6d} | {ideal[j] * 1e6:16.3f} | {exact[j] * 1e6:20.3f} "
          f"| {rel[j] * 100:10.2f} %")
  worst = int(np.argmax(np.abs(rel)))
  print()
  print(f"  relative error over the {N} columns: max {np.abs(rel).max():.2%}"
        f" (column {worst}), mean {np.abs(rel).mean():.2%}")
  print(f"  per-input node solve agrees with v @ G_eff to "
        f"{np.max(np.abs(direct - exact) / exact):.1e} (relative)")
  print(f"  G_eff took {first_s:.2f} s including JIT compilation, "
        f"{again_s * 1e3:.1f} ms once compiled (best of 3)")
  print()
  print("Training DNNs on crossbars is not built yet (the issue \"DNNs on "
        "crossbars\" adds layers, data and train.py / eval.py); until then "
        "train.py runs this circuit demo. A whole product on a simulated "
        "chip already works: rxjax.matmul(x, w, key=jax.random.key(0)).")


if __name__ == "__main__":
  main()
