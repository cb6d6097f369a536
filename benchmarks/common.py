"""Helpers the benchmark scripts share (timing, output directories)."""

import os
import tempfile
import time

import jax

import rxjax

# Benchmarks are programs and run with the host settings of train.py and
# eval.py (`import rxjax` alone changes nothing process-wide).
rxjax.tune_host()


def best(fn, *args, repeats: int = 7) -> float:
  """Seconds of the fastest of `repeats` calls, after one warm-up call."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return min(times)


def in_turns(calls: dict, repeats: int = 7, seconds: float = 0.0) -> dict:
  """{name: (seconds of the fastest call, cores busy)} for `name: (fn,
  args)`, the calls taken in turns (one of each per round, after one
  warm-up call each) for `repeats` rounds and at least `seconds`.

  Cores busy: this process's CPU time over wall time, summed over that
  name's calls.

  On a shared VM the speed drifts, by up to 70% over tens of seconds;
  timed one after the other, a ratio picks up that drift (LeNet-5's
  one-slice ratio measured 1.18x and 0.59x in two consecutive runs of
  `inference_bench.py` on 2026-11-24, native 17.6 and 29.7 ms). Taken in
  turns, both sides of a ratio see the same phases.
  """
  for fn, args in calls.values():
    jax.block_until_ready(fn(*args))
  best = {name: float("inf") for name in calls}
  wall = dict.fromkeys(calls, 0.0)
  cpu = dict.fromkeys(calls, 0.0)
  end = time.perf_counter() + seconds
  rounds = 0
  while rounds < repeats or time.perf_counter() < end:
    for name, (fn, args) in calls.items():
      cpu_start, start = time.process_time(), time.perf_counter()
      jax.block_until_ready(fn(*args))
      elapsed = time.perf_counter() - start
      cpu[name] += time.process_time() - cpu_start
      wall[name] += elapsed
      best[name] = min(best[name], elapsed)
    rounds += 1
  return {name: (best[name], cpu[name] / wall[name]) for name in calls}


def best_interleaved(calls: dict, repeats: int = 7) -> dict:
  """{name: seconds of the fastest call}, the calls taken in turns
  (`in_turns`)."""
  return {name: t for name, (t, _) in in_turns(calls, repeats).items()}


def output_dir(out: str | None, quick: bool, prefix: str) -> str:
  """`out`, else docs/figures, else (--quick) a fresh temporary directory."""
  if out is None:
    out = tempfile.mkdtemp(prefix=prefix) if quick else "docs/figures"
  os.makedirs(out, exist_ok=True)
  return out
