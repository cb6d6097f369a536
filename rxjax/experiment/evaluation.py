"""Evaluation: test accuracy digitally, on one programmed chip, and over
Monte-Carlo chip instances split over the devices (RxNN VII); the energy,
latency and area of a network on its chip (`rxjax.energy`).

Programs are compiled once per (model, spec) and kept in small caches
(`clear_compiled` drops them).
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp

from rxjax import data as data_lib
from rxjax import distributed
from rxjax import energy as energy_lib
from rxjax import nn as rnn
from rxjax.experiment.progress import Progress
from rxjax.experiment.run import Setup


def accuracy(model, variables, data, spec, *, chips=None, key=None,
             batch_size: int = 500,
             mesh: jax.sharding.Mesh | None = None) -> float:
  """Test accuracy, digital (spec None) or on programmed chips.

  The test batches are split over `mesh` (None: every device), each
  process loading its share; every test image counts exactly once.
  """
  del key
  if spec is not None and chips is None:
    raise ValueError("`chips` are needed with a spec (rxjax.nn.program)")
  mesh = distributed.make_mesh() if mesh is None else mesh
  fn = _correct_fn(model, spec, mesh)
  variables, chips = distributed.on_mesh((variables, chips), mesh)
  correct = 0
  pace = distributed.Pace()  # Each batch's count has an all-reduce.
  for x, y in distributed.global_batches(mesh, data.x_test, data.y_test,
                                         batch_size, key_or_seed=0,
                                         shuffle=False):
    correct = pace(correct + fn(variables, chips, x, y))
  return int(correct) / len(data.y_test)


# A few compiled programs per process, not one per chip setting forever:
# every kept program holds its own executable mappings, and a long sweep
# over chip settings would exhaust them (LLVM "Unable to allocate section
# memory").
_COMPILED = 8


@functools.lru_cache(maxsize=_COMPILED)
def program_fn(model, spec, mesh: jax.sharding.Mesh | None = None):
  """`rnn.program(model, variables, x, spec, key=key, mesh=mesh)` as a
  function of `(variables, x, key)`, compiled once per (model, spec, mesh).

  With the run's `mesh`, the tile axis of the network's one batched solve
  is split over its devices (`crossbar.solve`) and the solved chips come
  back replicated: every device reads the whole network. The weights and
  key must be on the mesh's devices (`distributed.on_mesh`)."""
  return jax.jit(lambda v, x, key: rnn.program(model, v, x, spec, key=key,
                                               mesh=mesh))


@functools.lru_cache(maxsize=_COMPILED)
def _correct_fn(model, spec, mesh):
  """`(variables, chips, x, y) -> images correct` (labels -1 skipped),
  replicated over `mesh`; compiled once per (model, spec, mesh)."""
  def correct(v, c, x, y):
    logits = rnn.apply(model, v, c, x, spec)
    return jnp.sum((jnp.argmax(logits, -1) == y) & (y >= 0))
  return jax.jit(correct, out_shardings=distributed.replicated(mesh))


def evaluate_on_chip(run: Setup, variables, spec, *, key,
                     energy: dict | None = None) -> float:
  """Programs one chip instance (calibrated on the run's calibration set)
  and returns its test accuracy; fills `energy` (if given) with
  `chip_energy` of the same programmed chip."""
  variables, key = distributed.on_mesh((variables, key), run.mesh)
  chips = program_fn(run.model, spec, run.mesh)(variables, run.calib,
                                                 key=key)
  if energy is not None:
    energy.update(chip_energy(run, variables, spec, chips=chips))
  return accuracy(run.model, variables, run.data, spec, chips=chips,
                  mesh=run.mesh)


@functools.lru_cache(maxsize=_COMPILED)
def _chips_fns(model, spec, mesh, per: int):
  """`evaluate_chips`' two programs for `per` chips on each device of
  `mesh`: `program(key, variables, x) -> chips` (chip `i` from
  `fold_in(key, i)`, the chip axis split over the mesh) and `count(chips,
  variables, x, y) -> [chips] images correct`, split over the mesh like the
  chips: each device counts its own chips and nothing is communicated
  until `evaluate_chips` gathers the totals, once."""
  axis = distributed.AXIS
  P = jax.sharding.PartitionSpec  # pylint: disable=invalid-name

  def program_share(key, v, x):
    ids = jax.lax.axis_index(axis) * per + jnp.arange(per)
    keys = jax.vmap(jax.random.fold_in, (None, 0))(key, ids)
    return jax.vmap(lambda k: rnn.program(model, v, x, spec, key=k))(keys)

  def correct_share(chips, v, x, y):
    logits = jax.vmap(lambda c: rnn.apply(model, v, c, x, spec))(chips)
    return jnp.sum(jnp.argmax(logits, -1) == y, axis=-1)

  # Weights and images are arguments, not closed-over constants: XLA would
  # constant-fold everything that does not depend on the chip key (the
  # calibration images' patches and statistics), slowly, at compile time.
  program = jax.jit(jax.shard_map(
      program_share, mesh=mesh, in_specs=(P(), P(), P()),
      out_specs=P(axis), check_vma=False))
  count = jax.jit(jax.shard_map(
      correct_share, mesh=mesh, in_specs=(P(axis), P(), P(), P()),
      out_specs=P(axis), check_vma=False))
  return program, count


# Calibration images whose layer inputs drive the array term of the energy.
_ENERGY_IMAGES = 16


def chip_energy(run: Setup, variables, spec, *, chips=None, key=None) -> dict:
  """Energy, latency and area per image of the network on the chip
  (`rxjax.energy.estimate`, ISAAC's components), as `summary.json` keeps
  it. The array term uses the programmed `chips` (or programs one with
  `key`) and the floating-point layer inputs of a few calibration images
  (one compile serves every chip of the run).
  """
  if chips is None:
    v, key = distributed.on_mesh((variables, key), run.mesh)
    chips = program_fn(run.model, spec, run.mesh)(v, run.calib, key=key)
  jax.block_until_ready(chips)  # The programming is the evaluation's.
  start = time.perf_counter()
  report = energy_lib.estimate(run.model, variables,
                               run.calib[:_ENERGY_IMAGES], spec, key=None,
                               chips=chips, inputs="digital")
  return {**report.summary(), "seconds": time.perf_counter() - start}


def print_energy(mode: str, name: str, e: dict) -> None:
  """Prints one line of an energy report (`chip_energy`) in uJ, us, mm^2."""
  parts = ", ".join(f"{k} {v * 1e6:.4g}" for k, v in
                    e["breakdown_j_per_image"].items()
                    if k not in ("buffer_read", "buffer_write"))
  print(f"  energy {mode} {name}: {e['j_per_image'] * 1e6:.4g} uJ/image "
        f"({parts} uJ), {e['s_per_image'] * 1e6:.4g} us/image, "
        f"{e['area_mm2']:.4g} mm^2 (estimated in {e['seconds']:.2f} s)",
        flush=True)


def evaluate_chips(run: Setup, variables, spec, *, key, n: int,
                   batch_size: int = 500) -> dict:
  """Accuracy over `n` chip instances, the chips split over `run.mesh`.

  Chip `i` is programmed with `fold_in(key, i)` wherever it is solved: the
  same key gives the same chips on any device count. The `n` chips are
  padded to a multiple of the mesh size (the extra chips are programmed
  and dropped); each device programs and reads its share, vmapped, on
  every test image. Each test batch is split into sub-batches of
  `batch_size / (chips per device)` images (at least 1) so that a device's
  chips' currents fit in memory.

  Returns:
    {"n", "mean", "std", "min", "max", "accuracies"}.
  """
  mesh = run.mesh
  per = distributed.padded_size(n, distributed.mesh_size(mesh)) // (
      distributed.mesh_size(mesh))
  program, count = _chips_fns(run.model, spec, mesh, per)
  key, variables = distributed.on_mesh((key, variables), mesh)
  chips = program(key, variables, run.calib)
  sub = max(1, batch_size // per)
  correct = 0
  data = run.data
  progress = Progress(f"{n} chips", len(data.y_test), unit="images")
  # Each batch's counts stay on their chips' devices (integers: exact in
  # any order), the loop at most a few batches ahead of the devices.
  pace = distributed.Pace()
  for x, y in data_lib.batches(data.x_test, data.y_test, sub,
                               key_or_seed=0, shuffle=False):
    correct = pace(correct + count(chips, variables, x, y))
    progress.update(len(y))
  acc = distributed.to_host(correct, mesh)[:n] / len(data.y_test)
  return {"n": n, "mean": float(acc.mean()), "std": float(acc.std()),
          "min": float(acc.min()), "max": float(acc.max()),
          "accuracies": acc.tolist()}



def clear_compiled() -> None:
  """Drops the programs `program_fn`, `accuracy` and `evaluate_chips` keep
  compiled (one per model and spec): a sweep whose every point has its own
  spec calls it after each point, so that executables do not pile up."""
  program_fn.cache_clear()
  _correct_fn.cache_clear()
  _chips_fns.cache_clear()
