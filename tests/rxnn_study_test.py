"""benchmarks/rxnn_study.py's seed aggregation, against numpy."""

import importlib.util
import os
import sys

import numpy as np
import pytest

_PATH = os.path.join(os.path.dirname(os.path.dirname(__file__)),
                     "benchmarks", "rxnn_study.py")


@pytest.fixture(scope="module")
def study():
  spec = importlib.util.spec_from_file_location("rxnn_study", _PATH)
  module = importlib.util.module_from_spec(spec)
  sys.modules["rxnn_study"] = module  # Its dataclasses look themselves up.
  try:
    spec.loader.exec_module(module)
    yield module
  finally:
    del sys.modules["rxnn_study"]


def _row(seed, step, acc, fp32, *, tile="", std="", gain=""):
  return {"network": "LeNet-5", "seed": seed, "data": "d", "figure": "12a",
          "step": step, "chip": f"chip {step} {tile}", "tile_size": tile,
          "device": "", "variation": "", "n_chips": 1, "test_images": 1000,
          "accuracy": acc, "std": std,
          "delta_vs_fp32_pp": 100 * (acc - fp32), "logit_gain": gain,
          "logit_residual": "" if gain == "" else 2 * gain}


def test_aggregate_matches_numpy_per_measurement(study):
  rng = np.random.default_rng(1)
  fp32 = rng.uniform(0.95, 0.98, size=3)
  a = rng.uniform(0.8, 0.97, size=(3, 2))  # Seeds x tile sizes.
  chip_std = rng.uniform(0, 0.01, size=3)
  gains = rng.uniform(0.1, 1.0, size=3)
  rows = []
  for s in range(3):  # Each seed's rows in the study's order.
    rows.append(_row(s, "fp32", fp32[s], fp32[s]))
    for j, tile in enumerate((16, 64)):
      rows.append(_row(s, "non-ideal", a[s, j], fp32[s], tile=tile,
                       std=chip_std[s] if j else "",
                       gain=gains[s] if j else ""))
  out = study.aggregate(rows)
  assert [(r["step"], r["tile_size"]) for r in out] == [
      ("fp32", ""), ("non-ideal", 16), ("non-ideal", 64)]
  for r, ref in zip(out, [fp32, a[:, 0], a[:, 1]]):
    np.testing.assert_allclose(r["accuracy"], np.mean(ref), rtol=1e-12)
    np.testing.assert_allclose(r["seed_std"], np.std(ref, ddof=1),
                               rtol=1e-12)
    assert r["n_seeds"] == 3 and r["seeds"] == "0 1 2"
    assert r["per_seed"] == " / ".join(f"{x:.4f}" for x in ref)
    np.testing.assert_allclose(r["delta_vs_fp32_pp"],
                               100 * np.mean(ref - fp32), rtol=1e-9)
  np.testing.assert_allclose(out[2]["std"], np.mean(chip_std), rtol=1e-12)
  np.testing.assert_allclose(out[2]["logit_gain"], np.mean(gains),
                             rtol=1e-12)
  np.testing.assert_allclose(out[2]["logit_residual"], 2 * np.mean(gains),
                             rtol=1e-12)
  assert out[1]["std"] == "" and out[1]["logit_gain"] == ""


def test_aggregate_one_seed_has_no_spread(study):
  rows = [_row(0, "fp32", 0.97, 0.97), _row(0, "non-ideal", 0.9, 0.97,
                                            tile=64)]
  out = study.aggregate(rows)
  assert [r["seed_std"] for r in out] == ["", ""]
  assert out[1]["accuracy"] == 0.9 and out[1]["per_seed"] == "0.9000"


def test_recovered_share(study):
  before = {"accuracy": 0.90}
  assert study.recovered({"accuracy": 0.95}, before, 1.0) == "50%"
  assert study.recovered({"accuracy": 0.85}, before, 1.0) == "-50%"
  assert study.recovered({"accuracy": 0.95}, {"accuracy": 1.0}, 1.0) == "-"
