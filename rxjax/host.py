"""Process-wide host settings that make rxjax's CPU programs run faster.

Nothing here runs on `import rxjax`: a library must not change the process
it is imported into. `train.py` and `eval.py` (through `rxjax.cli`) call
`tune_host()` before their first computation, and so may any script that
owns its process. The measured effect is in docs/performance.md
(`benchmarks/host_bench.py`).

This module owns three settings and nothing else:

* BLAS/LAPACK threads. The OpenBLAS that scipy bundles (and that jaxlib's
  CPU `jnp.linalg` calls) starts a worker thread per core, and those
  workers compete with XLA's own intra-op thread pool for the same cores.
  One BLAS thread leaves the cores to XLA.
* glibc's malloc. XLA's CPU runtime allocates its buffers afresh on every
  call. By default glibc serves each buffer above a dynamic threshold (at
  most 32 MiB) with its own `mmap` and unmaps it on free, and trims the heap
  top above 128 KiB, so every call faults in zeroed pages again. With the
  setting, buffers below 64 MiB come from the heap and freed memory is kept
  for reuse. The price: the process keeps its peak heap instead of
  shrinking after a large computation. glibc (Linux) only; elsewhere it
  does nothing.
* XLA:CPU's collective timeouts. With several CPU devices in one process
  (`--cpu_devices`, `JAX_NUM_CPU_DEVICES`) or several processes, a device
  that reaches an all-gather or all-reduce waits for the others, and XLA
  aborts the whole process (SIGABRT, no Python exception) when one of them
  is more than 40 s late. On a busy host a device's share of a Monte-Carlo
  batch or of a programming solve can fall that far behind, and the run is
  lost. The setting raises both timeouts to 900 s in `XLA_FLAGS` (flags
  already there win). It must run before JAX starts its CPU backend.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# From glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Buffers below this size come from the heap once `tune_host` ran.
MMAP_THRESHOLD_BYTES = 64 << 20

# XLA:CPU's collective timeouts once `tune_host` ran (XLA's default: 40 s
# before it aborts a late collective).
COLLECTIVE_TIMEOUT_S = 900
_COLLECTIVE_FLAGS = ("xla_cpu_collective_call_terminate_timeout_seconds",
                     "xla_cpu_collective_timeout_seconds")


def _mallopt():
  """glibc's `mallopt`, or None where the C library is not glibc."""
  try:
    return ctypes.CDLL(ctypes.util.find_library("c")).mallopt
  except (AttributeError, OSError, TypeError):
    return None


def limit_blas_threads(threads: int = 1) -> bool:
  """Limits the BLAS/LAPACK libraries loaded in this process to `threads`.

  Loads scipy's LAPACK first (the one jaxlib's CPU `jnp.linalg` calls), so
  the limit reaches it even before its first use.

  Args:
    threads: worker threads per BLAS library, an int >= 1.

  Returns:
    True if a limit was set (threadpoolctl found a BLAS library).

  Raises:
    ValueError: `threads` is not an int >= 1.
  """
  if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
    raise ValueError(f"`blas_threads` must be an int >= 1, got {threads!r}")
  import scipy.linalg  # noqa: F401  (loads the LAPACK that jaxlib calls)
  import threadpoolctl
  threadpoolctl.threadpool_limits(threads, user_api="blas")
  return any(lib["user_api"] == "blas"
             for lib in threadpoolctl.threadpool_info())


def keep_freed_memory() -> bool:
  """Makes glibc's malloc serve buffers below 64 MiB from the heap and keep
  freed memory for reuse (see the module docstring for why).

  Returns:
    True if the setting was applied (the C library is glibc).
  """
  mallopt = _mallopt()
  if mallopt is None:
    return False
  ok = mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(MMAP_THRESHOLD_BYTES))
  ok &= mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(2**31 - 1))
  return bool(ok)


def allow_late_collectives(seconds: int = COLLECTIVE_TIMEOUT_S,
                           environ=os.environ) -> bool:
  """Adds XLA:CPU's collective timeouts of `seconds` to `XLA_FLAGS` (see the
  module docstring), leaving any of them the environment already sets.

  Takes effect only before JAX starts its CPU backend.

  Returns:
    True if a flag was added.

  Raises:
    ValueError: `seconds` is not an int >= 1.
  """
  if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 1:
    raise ValueError(f"`collective_timeout_s` must be an int >= 1, got "
                     f"{seconds!r}")
  flags = environ.get("XLA_FLAGS", "")
  added = [f"--{name}={seconds}" for name in _COLLECTIVE_FLAGS
           if name not in flags]
  if added:
    environ["XLA_FLAGS"] = " ".join([flags, *added]).strip()
  return bool(added)


def tune_host(*, blas_threads: int | str | None = None,
              malloc: str | None = None,
              collective_timeout_s: int | str | None = None) -> dict:
  """Applies rxjax's host settings to this process (see the module
  docstring); call it before the first computation.

  Each setting can be left alone by argument or by environment variable
  (the argument wins): `RXJAX_BLAS_THREADS=<n>` or `default`,
  `RXJAX_MALLOC=keep` or `default`.

  Args:
    blas_threads: BLAS/LAPACK worker threads, an int >= 1, or "default" to
      leave the libraries alone. None: `RXJAX_BLAS_THREADS`, else 1.
    malloc: "keep" (serve buffers below 64 MiB from the heap, keep freed
      memory) or "default" (leave malloc alone). None: `RXJAX_MALLOC`,
      else "keep".
    collective_timeout_s: XLA:CPU's collective timeouts in seconds, an int
      >= 1, or "default" to leave `XLA_FLAGS` alone. None:
      `RXJAX_COLLECTIVE_TIMEOUT_S`, else `COLLECTIVE_TIMEOUT_S`.

  Returns:
    `{"blas_threads": n or "default", "malloc": "keep" or "default",
    "collective_timeout_s": s or "default"}`: what was applied ("default"
    where nothing was changed, e.g. no glibc, or flags already set).

  Raises:
    ValueError: a setting (argument or environment variable) outside its
      valid values, before anything is changed.
  """
  if blas_threads is None:
    blas_threads = os.environ.get("RXJAX_BLAS_THREADS", "1")
  if isinstance(blas_threads, str) and blas_threads != "default":
    try:
      blas_threads = int(blas_threads)
    except ValueError:
      raise ValueError("`RXJAX_BLAS_THREADS` / `blas_threads` must be an int "
                       f">= 1 or 'default', got {blas_threads!r}") from None
  if blas_threads != "default" and (
      isinstance(blas_threads, bool) or not isinstance(blas_threads, int)
      or blas_threads < 1):
    raise ValueError("`RXJAX_BLAS_THREADS` / `blas_threads` must be an int "
                     f">= 1 or 'default', got {blas_threads!r}")
  if malloc is None:
    malloc = os.environ.get("RXJAX_MALLOC", "keep")
  if malloc not in ("keep", "default"):
    raise ValueError("`RXJAX_MALLOC` / `malloc` must be 'keep' or 'default', "
                     f"got {malloc!r}")
  if collective_timeout_s is None:
    collective_timeout_s = os.environ.get("RXJAX_COLLECTIVE_TIMEOUT_S",
                                          str(COLLECTIVE_TIMEOUT_S))
  if collective_timeout_s != "default":
    try:
      collective_timeout_s = int(collective_timeout_s)
    except (TypeError, ValueError):
      collective_timeout_s = -1
    if collective_timeout_s < 1:
      raise ValueError("`RXJAX_COLLECTIVE_TIMEOUT_S` / `collective_timeout_s` "
                       "must be an int >= 1 (seconds) or 'default'")
  applied = {"blas_threads": "default", "malloc": "default",
             "collective_timeout_s": "default"}
  if blas_threads != "default" and limit_blas_threads(blas_threads):
    applied["blas_threads"] = blas_threads
  if malloc == "keep" and keep_freed_memory():
    applied["malloc"] = "keep"
  if collective_timeout_s != "default" and allow_late_collectives(
      collective_timeout_s):
    applied["collective_timeout_s"] = collective_timeout_s
  return applied
