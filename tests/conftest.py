"""Shared pytest setup.

The suite runs in float64 unless a test asks for float32.

It also compiles with XLA's backend (LLVM) optimization level 0. Most test
programs run once or a few times at small sizes, so the suite is
compile-bound: measured on the 2-core CPU, the full suite took 777 s at the
default level and 541 s at level 0 (same 915 tests). Results agree to
rounding, and every tolerance in the suite holds at both levels.
`optimized_build_test.py` re-runs the accuracy-critical tests in a
subprocess at the default level (`RXJAX_TEST_OPTIMIZED=1`), the code users
run; the benchmarks always measure the default level.
"""

import os

if os.environ.get("RXJAX_TEST_OPTIMIZED") != "1":
  # Read when XLA's CPU client starts (first computation), so setting it
  # here also reaches every xdist worker and subprocess the tests start.
  os.environ["XLA_FLAGS"] = " ".join(
      [os.environ.get("XLA_FLAGS", ""),
       "--xla_backend_optimization_level=0"]).strip()

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import rxjax  # noqa: E402

# The suite runs with the host settings that train.py and eval.py use
# (`import rxjax` alone applies none; tests/host_test.py checks both).
rxjax.tune_host()
