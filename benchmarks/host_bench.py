"""Effect of `rxjax.tune_host()` on a TxSim training step (docs/performance.md).

    python benchmarks/host_bench.py            # 3 rounds (~4 min on 2 cores)
    python benchmarks/host_bench.py --rounds 1

The host settings are process-wide and cannot be undone inside a process,
so every measurement is a fresh subprocess, the two settings in turns (one
of each per round, so both see the same phases of a shared machine):

* tuned: `tune_host()` as train.py and eval.py apply it (one BLAS thread,
  glibc's malloc keeps freed memory and serves buffers below 64 MiB from
  the heap);
* default: `RXJAX_BLAS_THREADS=default RXJAX_MALLOC=default`, the process
  as Python starts it.

Each child times, float32, compilation excluded, best of `--repeats`: 10
consecutive LeNet-5 TxSim steps at batch 128 on a programmed Cross-NI chip
(`configs/lenet_mnist_txsim.py`, the interpolated step of
`benchmarks/train_bench.py`) and 10 digital steps, per step; and its peak
RSS. The last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
STEPS = 10


def child(repeats: int) -> dict:
  """Times the steps in this process (host settings from the environment)."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  import common  # noqa: F401  (applies tune_host as the environment says)
  import train_bench  # pylint: disable=g-import-not-at-top
  from rxjax import data, experiment, models  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, REPO)
  from configs import lenet_mnist_txsim  # pylint: disable=g-import-not-at-top

  config = lenet_mnist_txsim.get_config()
  d = data.load(config.dataset, seed=config.seed)
  n = 128 * STEPS
  xs = jnp.asarray(d.x_train[:n]).reshape((STEPS, 128) + d.x_train.shape[1:])
  ys = jnp.asarray(d.y_train[:n]).reshape(STEPS, 128)
  model = models.get("lenet5", num_classes=d.num_classes)
  spec, digital_opt, txsim_opt, chip_key = train_bench.txsim_setup(config)
  digital_step = experiment.train_step(model, digital_opt)
  txsim_step = experiment.train_step(model, txsim_opt, spec)
  exact_step = experiment.train_step(model, txsim_opt, spec, program=True)
  digital0 = train_bench.initial_state(model, digital_opt, xs[0], config.seed)
  txsim0 = train_bench.initial_state(model, txsim_opt, xs[0], config.seed)
  chips0 = exact_step(txsim0, chip_key, xs[0], ys[0])[1]

  def digital(state):
    for i in range(STEPS):
      state, _, loss, _ = digital_step(state, None, xs[i], ys[i])
    return state, loss

  def txsim(state):
    chips = chips0
    for i in range(STEPS):
      state, chips, loss, _ = txsim_step(state, chips, xs[i], ys[i])
    return state, chips, loss

  t = common.best_interleaved({"txsim": (txsim, (txsim0,)),
                                "digital": (digital, (digital0,))},
                               repeats=repeats)
  return {"txsim_step_ms": t["txsim"] / STEPS * 1e3,
          "digital_step_ms": t["digital"] / STEPS * 1e3,
          "peak_rss_mb": resource.getrusage(
              resource.RUSAGE_SELF).ru_maxrss / 1024,
          "platform": jax.devices()[0].platform}


def run_child(setting: str, repeats: int) -> dict:
  env = {k: v for k, v in os.environ.items() if not k.startswith("RXJAX_")}
  if setting == "default":
    env.update(RXJAX_BLAS_THREADS="default", RXJAX_MALLOC="default")
  out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child",
                        "--repeats", str(repeats)],
                       env=env, capture_output=True, text=True, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--rounds", type=int, default=3,
                      help="subprocesses per setting, taken in turns")
  parser.add_argument("--repeats", type=int, default=5,
                      help="timed calls per child after the warm-up")
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    print(json.dumps(child(args.repeats)))
    return
  start = time.perf_counter()
  runs = {"tuned": [], "default": []}
  for r in range(args.rounds):
    for setting in runs:
      runs[setting].append(run_child(setting, args.repeats))
      print(f"round {r + 1} {setting}: {runs[setting][-1]}", flush=True)
  result = {}
  for setting, rs in runs.items():
    for k in ("txsim_step_ms", "digital_step_ms"):
      result[f"{setting}_{k}"] = min(x[k] for x in rs)
    result[f"{setting}_peak_rss_mb"] = max(x["peak_rss_mb"] for x in rs)
  result["txsim_default_over_tuned"] = (result["default_txsim_step_ms"]
                                        / result["tuned_txsim_step_ms"])
  result["digital_default_over_tuned"] = (result["default_digital_step_ms"]
                                          / result["tuned_digital_step_ms"])
  print(f"TxSim step (LeNet-5, batch 128): tuned "
        f"{result['tuned_txsim_step_ms']:.1f} ms, default "
        f"{result['default_txsim_step_ms']:.1f} ms "
        f"({result['txsim_default_over_tuned']:.2f}x); digital step: tuned "
        f"{result['tuned_digital_step_ms']:.1f} ms, default "
        f"{result['default_digital_step_ms']:.1f} ms", flush=True)
  result.update(rounds=args.rounds, machine=f"{os.cpu_count()}-core "
                f"{runs['tuned'][0]['platform']}",
                seconds=time.perf_counter() - start)
  print(json.dumps({k: round(v, 3) if isinstance(v, float) else v
                    for k, v in result.items()}))


if __name__ == "__main__":
  main()
