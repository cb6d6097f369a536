"""Helpers the benchmark scripts share (timing, output directories)."""

import os
import tempfile
import time

import jax


def best(fn, *args, repeats: int = 7) -> float:
  """Seconds of the fastest of `repeats` calls, after one warm-up call."""
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return min(times)


def output_dir(out: str | None, quick: bool, prefix: str) -> str:
  """`out`, else docs/figures, else (--quick) a fresh temporary directory."""
  if out is None:
    out = tempfile.mkdtemp(prefix=prefix) if quick else "docs/figures"
  os.makedirs(out, exist_ok=True)
  return out
