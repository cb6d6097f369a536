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
    import ctypes, ctypes.util, json, sys

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
      return {"blas_threads": threads, "mmapped": mmapped}

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
             if not k.startswith("RXJAX_")}
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
  assert out["applied"] == {"blas_threads": 1, "malloc": "keep"}
  assert set(out["tuned"]["blas_threads"]) == {1}
  assert out["tuned"]["mmapped"] == 0


def test_tune_host_leaves_alone_what_the_environment_says():
  out = _probe("tune", RXJAX_BLAS_THREADS="default", RXJAX_MALLOC="default")
  assert out["applied"] == {"blas_threads": "default", "malloc": "default"}
  assert out["tuned"] == out["start"]


@pytest.mark.parametrize("kwargs, field", [
    ({"blas_threads": 0}, "blas_threads"),
    ({"blas_threads": "two"}, "blas_threads"),
    ({"malloc": "free"}, "malloc"),
])
def test_tune_host_rejects_bad_settings(kwargs, field):
  with pytest.raises(ValueError, match=field):
    rxjax.tune_host(**kwargs)
