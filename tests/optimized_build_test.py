"""The accuracy-critical tests pass at XLA's default optimization level.

conftest.py compiles the suite at backend optimization level 0 to save
compile time; users run the default level, where LLVM may contract and
vectorize differently. This re-runs, in a fresh process at the default
level, the tests whose tolerances are tightest: float64 against the sparse
reference, float32 against float64 (the subtraction-free forms), and the
ideal chip against `x @ w`.
"""

import os
import pathlib
import subprocess
import sys

_TESTS = pathlib.Path(__file__).parent
_IDS = [
    "circuit_test.py::test_matches_reference[reram-64x64-forward]",
    "circuit_test.py::test_matches_reference[spintronic-64x64-backward_own]",
    "circuit_test.py::test_float32_matches_float64[reram-64-forward]",
    "circuit_test.py::test_float32_matches_float64[spintronic-64-backward_own]",
    "crossbar_test.py::test_ideal_spec_is_matmul_float32_and_batch_axes",
    "crossbar_test.py::test_default_spec_is_close_to_matmul",
]


def test_this_process_compiles_at_level_0():
  # The premise of the test below: the rest of the suite is not optimized.
  assert "--xla_backend_optimization_level=0" in os.environ["XLA_FLAGS"]


def test_accuracy_tests_pass_at_the_default_optimization_level():
  env = dict(os.environ, RXJAX_TEST_OPTIMIZED="1")
  env["XLA_FLAGS"] = env["XLA_FLAGS"].replace(
      "--xla_backend_optimization_level=0", "").strip()
  run = subprocess.run(
      [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
       "-p", "no:xdist", *[str(_TESTS / i) for i in _IDS]],
      env=env, capture_output=True, text=True, timeout=900)
  summary = run.stdout.strip().splitlines()[-1:] or [run.stderr[-2000:]]
  assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
  assert f"{len(_IDS)} passed" in summary[0], summary
