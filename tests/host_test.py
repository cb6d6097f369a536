"""`import rxjax` leaves the process alone; `rxjax.tune_host()` changes it.

Each check runs in a fresh interpreter (the settings are process-wide and
the test process itself is tuned by conftest). What is observed, not what
the code says it did:

* BLAS threads: threadpoolctl's report of every loaded BLAS library.
* malloc: whether a 48 MiB buffer is served by its own `mmap` (glibc's
  `mallinfo2().hblks` counts mmapped chunks). 48 MiB is above glibc's
  largest dynamic mmap threshold (32 MiB), so by default it is always
  mmapped, and below the 64 MiB threshold `tune_host` sets.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

import rxjax

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_PROBE = textwrap.dedent("""
    import ctypes, ctypes.util, json, os, sys

    import scipy.linalg  # loads the BLAS libraries before rxjax
    import threadpoolctl

    class Mallinfo2(ctypes.Structure):
      _fields_ = [(n, ctypes.c_size_t) for n in (
          "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
          "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.mallinfo2.restype = Mallinfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]

    def state():
      threads = sorted(lib["num_threads"] for lib in
                       threadpoolctl.threadpool_info()
                       if lib["user_api"] == "blas")
      before = libc.mallinfo2().hblks
      p = libc.malloc(48 << 20)
      mmapped = libc.mallinfo2().hblks - before
      libc.free(p)
      return {"blas_threads": threads, "mmapped": mmapped,
              "xla_flags": os.environ.get("XLA_FLAGS", "")}

    out = {"start": state()}
    import rxjax
    out["imported"] = state()
    if sys.argv[1] == "tune":
      out["applied"] = rxjax.tune_host()
      out["tuned"] = state()
    print(json.dumps(out))
""")


def _probe(mode, **env):
  environ = {k: v for k, v in os.environ.items()
             if not k.startswith("RXJAX_") and k != "XLA_FLAGS"}
  # Two BLAS threads by default, whatever the core count, so that a limit to
  # one is visible.
  environ.update(OPENBLAS_NUM_THREADS="2", PYTHONPATH=REPO, **env)
  out = subprocess.run([sys.executable, "-c", _PROBE, mode], env=environ,
                       cwd=REPO,
                       capture_output=True, text=True, timeout=300,
                       check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def _glibc():
  import ctypes
  import ctypes.util
  try:
    return hasattr(ctypes.CDLL(ctypes.util.find_library("c")), "mallinfo2")
  except OSError:
    return False


pytestmark = pytest.mark.skipif(not _glibc(), reason="needs glibc >= 2.33")


def test_import_changes_nothing():
  out = _probe("import")
  assert out["start"]["blas_threads"], "no BLAS library found"
  assert set(out["start"]["blas_threads"]) == {2}
  assert out["start"]["mmapped"] == 1
  assert out["imported"] == out["start"]


def test_tune_host_limits_blas_and_keeps_buffers_on_the_heap():
  out = _probe("tune")
  assert out["imported"] == out["start"]
  assert out["applied"] == {"blas_threads": 1, "malloc": "keep",
                            "collective_timeout_s": 900}
  assert set(out["tuned"]["blas_threads"]) == {1}
  assert out["tuned"]["mmapped"] == 0
  assert out["start"]["xla_flags"] == ""
  assert sorted(out["tuned"]["xla_flags"].split()) == [
      "--xla_cpu_collective_call_terminate_timeout_seconds=900",
      "--xla_cpu_collective_timeout_seconds=900"]


def test_tune_host_leaves_alone_what_the_environment_says():
  out = _probe("tune", RXJAX_BLAS_THREADS="default", RXJAX_MALLOC="default",
               RXJAX_COLLECTIVE_TIMEOUT_S="default")
  assert out["applied"] == {"blas_threads": "default", "malloc": "default",
                            "collective_timeout_s": "default"}
  assert out["tuned"] == out["start"]


@pytest.mark.parametrize("kwargs, field", [
    ({"blas_threads": 0}, "blas_threads"),
    ({"blas_threads": "two"}, "blas_threads"),
    ({"malloc": "free"}, "malloc"),
    ({"collective_timeout_s": 0}, "collective_timeout_s"),
    ({"collective_timeout_s": "long"}, "collective_timeout_s"),
])
def test_tune_host_rejects_bad_settings(kwargs, field):
  with pytest.raises(ValueError, match=field):
    rxjax.tune_host(**kwargs)


_LATE = textwrap.dedent("""
    import sys, time
    import numpy as np
    import rxjax
    rxjax.tune_host(collective_timeout_s=int(sys.argv[1]))
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec as P
    jax.config.update("jax_num_cpu_devices", 2)

    def late(x):  # Device 1's shard holds 1.0: it reaches the psum late.
      if float(np.asarray(x)[0]) == 1.0:
        time.sleep(float(sys.argv[2]))
      return x

    mesh = jax.make_mesh((2,), ("d",))
    f = jax.jit(jax.shard_map(
        lambda x: jax.lax.psum(jax.pure_callback(late, x, x), "d"),
        mesh=mesh, in_specs=P("d"), out_specs=P()))
    x = jax.device_put(jnp.arange(2.0), NamedSharding(mesh, P("d")))
    print("sum", float(f(x)[0]))
""")


@pytest.mark.slow
def test_tune_host_lets_a_late_device_finish_its_collective():
  """XLA:CPU aborts the process when a device is late at a collective by
  more than its warning time (20 s) plus the terminate timeout; a 2 s
  timeout aborts a device 25 s late, `tune_host`'s default lets it finish."""
  environ = {k: v for k, v in os.environ.items()
             if k not in ("XLA_FLAGS", "JAX_NUM_CPU_DEVICES")}
  environ["PYTHONPATH"] = REPO

  def run(timeout_s):
    return subprocess.run(
        [sys.executable, "-c", _LATE, str(timeout_s), "25"], env=environ,
        cwd=REPO, capture_output=True, text=True, timeout=300)

  short = run(2)
  assert short.returncode != 0 and "sum" not in short.stdout
  assert "Termination timeout" in short.stderr
  default = run(rxjax.host.COLLECTIVE_TIMEOUT_S)
  assert default.returncode == 0, default.stderr[-2000:]
  assert "sum 1.0" in default.stdout


def test_collective_timeouts_leave_the_users_xla_flags():
  mine = "--xla_cpu_collective_timeout_seconds=5 --xla_dump_to=/tmp/x"
  environ = {"XLA_FLAGS": mine}
  assert rxjax.host.allow_late_collectives(60, environ)
  assert environ["XLA_FLAGS"] == (
      mine + " --xla_cpu_collective_call_terminate_timeout_seconds=60")
  assert not rxjax.host.allow_late_collectives(60, environ)
