"""Progress lines: `phase: 42% 120/288 steps, 35.1 steps/s, ETA 5s`."""

from __future__ import annotations

import math
import sys
import time


class Progress:
  """Prints `phase: 42% 120/288 steps, 35.1 steps/s, ETA 5s` now and then."""

  def __init__(self, phase: str, total: int, unit: str = "steps",
               every_s: float = 5.0, stream=None):
    self.phase, self.total, self.unit = phase, total, unit
    self.every_s = every_s
    self.stream = sys.stdout if stream is None else stream  # At call time.
    self.start = self.last = time.time()
    self.done = 0

  def update(self, n: int = 1, **extra):
    self.done += n
    now = time.time()
    if now - self.last >= self.every_s or self.done == self.total:
      self.last = now
      rate = self.done / max(now - self.start, 1e-9)
      eta = (self.total - self.done) / rate if rate > 0 else float("inf")
      # Values may be device arrays: read back only when printing, so that
      # a training loop never waits for its step to finish.
      more = "".join(f", {k} {float(v):.4g}" for k, v in extra.items())
      print(f"  {self.phase}: {100 * self.done / self.total:3.0f}% "
            f"{self.done}/{self.total} {self.unit}, {rate:.3g} {self.unit}/s,"
            f" ETA {_duration(eta)}{more}", file=self.stream, flush=True)


def _duration(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  seconds = int(round(seconds))
  return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else (
      f"{seconds}s")
