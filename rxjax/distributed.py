"""Placement: the device mesh, global arrays from per-process data, start-up.

rxjax runs on JAX's own multi-controller runtime (DESIGN 6): one Python
process per host, `jax.distributed.initialize` joining them, and one
`jax.sharding.Mesh` with a single axis, "data", over the devices a run uses.
This module owns

* `initialize`: joins a multi-process job (explicit coordinator, or JAX's
  cluster detection) with a bounded wait and an error naming the address;
* `make_mesh`: the mesh of the first `num_devices` devices (all by default),
  the same number taken from every process;
* global arrays from host data: `replicate` (params, optimizer state,
  calibration images: a copy on every device) and `shard_batch` (each
  process passes only its share of a global batch, split over its devices);
* `process_share` and `pad_rows`: which rows of a global batch a process
  loads, and the padding that keeps every batch the same shape on every
  process (so every process runs the same steps);
* `devices_info` (what `summary.json` records) and `is_main` (process 0
  writes files and prints);
* `Pace`: how far a loop of programs on the mesh may run ahead of the
  devices (XLA:CPU hangs when it runs too far: see there).

It does not choose what is sharded (that is the caller's: chips, tiles or
the batch) and never runs at import: nothing here changes the process until
a function is called (STYLE: host setup lives in the program).
"""

from __future__ import annotations

import collections
import math
import socket
import sys
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXIS = "data"  # The one mesh axis: chips, tiles or batch rows, by caller.


def initialize(*, coordinator_address: str | None = None,
               num_processes: int | None = None,
               process_id: int | None = None, auto: bool = False,
               initialization_timeout: int = 300) -> bool:
  """Joins a multi-process job, or does nothing for a one-process run.

  Args:
    coordinator_address: "host:port" of process 0's coordinator; None with
      `auto=False`: one process, nothing to join.
    num_processes, process_id: the job's size and this process's index
      (with an explicit address; JAX's cluster detection finds them with
      `auto`).
    auto: let `jax.distributed.initialize` detect the cluster (SLURM, Open
      MPI, TPU pods, ...).
    initialization_timeout: seconds to wait for every process to join.

  Returns:
    True when a multi-process job was joined.

  Raises:
    ValueError: inconsistent settings (named as the config fields).
    RuntimeError: the coordinator was not reached in time (names the
      address and the timeout).
  """
  if coordinator_address is None and not auto:
    if num_processes not in (None, 1) or process_id not in (None, 0):
      raise ValueError(
          "`distributed.num_processes` / `distributed.process_id` need "
          "`distributed.coordinator_address` (or `distributed.auto=True`)")
    return False
  if not isinstance(initialization_timeout, int) or (
      initialization_timeout < 1):
    raise ValueError("`distributed.initialization_timeout` must be an int "
                     f">= 1 (seconds), got {initialization_timeout!r}")
  kwargs: dict[str, Any] = {"initialization_timeout": initialization_timeout}
  if coordinator_address is not None:
    if ":" not in coordinator_address:
      raise ValueError("`distributed.coordinator_address` must be "
                       f"'host:port', got {coordinator_address!r}")
    if num_processes is None or process_id is None:
      raise ValueError(
          "`distributed.coordinator_address` needs "
          "`distributed.num_processes` and `distributed.process_id`")
    if not 0 <= process_id < num_processes:
      raise ValueError(f"`distributed.process_id` must be in [0, "
                       f"{num_processes}), got {process_id}")
    kwargs.update(coordinator_address=coordinator_address,
                  num_processes=num_processes, process_id=process_id)
  where = coordinator_address or "the coordinator JAX detects (auto)"

  def failed(detail):
    return RuntimeError(
        f"process {process_id} could not join the job at {where} within "
        f"{initialization_timeout} s: start process 0 (it hosts the "
        "coordinator there), check that the address and port are reachable "
        f"from this host, or raise `distributed.initialization_timeout` "
        f"({detail})")

  if coordinator_address is not None and process_id != 0:
    # JAX's client aborts the process (a C++ fatal error, no exception)
    # when the coordinator does not answer: reach its port first, so the
    # common mistakes (process 0 not started, wrong host or port) get an
    # error that names the address.
    _wait_for_port(coordinator_address, initialization_timeout, failed)
  sys.stderr.write(f"  joining {num_processes or '?'} processes at {where} "
                   f"(process {process_id}, timeout "
                   f"{initialization_timeout} s)\n")
  try:
    jax.distributed.initialize(**kwargs)
  except Exception as e:  # pylint: disable=broad-except
    raise failed(f"{type(e).__name__}: {str(e)[:300]}") from e
  return True


def _wait_for_port(address: str, timeout: float, failed) -> None:
  """Returns once `host:port` accepts a TCP connection; raises
  `failed(detail)` after `timeout` seconds."""
  host, port = address.rsplit(":", 1)
  deadline = time.monotonic() + timeout
  while True:
    try:
      with socket.create_connection((host.strip("[]"), int(port)),
                                    timeout=min(5.0, timeout)):
        return
    except (OSError, ValueError) as e:
      if time.monotonic() >= deadline:
        raise failed(f"{type(e).__name__}: {e}") from e
      time.sleep(0.5)


def make_mesh(num_devices: int | None = None,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A one-axis ("data") mesh over `num_devices` devices (None: all).

  With several processes, every process contributes the same number of its
  own devices (`num_devices / process_count` each, its first ones), so each
  one holds a share of every sharded array.

  Raises:
    ValueError: `num_devices` out of range, or not a multiple of the
      process count.
  """
  devices = list(jax.devices() if devices is None else devices)
  if num_devices is None:
    num_devices = len(devices)
  procs = sorted({d.process_index for d in devices})
  if (not isinstance(num_devices, int) or not 1 <= num_devices <= len(devices)
      or num_devices % len(procs)):
    raise ValueError(
        f"`num_devices` must be an int in [1, {len(devices)}] (the devices "
        f"this job sees) and a multiple of the {len(procs)} processes, got "
        f"{num_devices!r}")
  per = num_devices // len(procs)
  chosen = [d for p in procs
            for d in [d for d in devices if d.process_index == p][:per]]
  return Mesh(np.array(chosen), (AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Leading axis split over the mesh."""
  return NamedSharding(mesh, P(AXIS))


def _is_key(x) -> bool:
  return jnp.issubdtype(getattr(x, "dtype", None) or np.float32,
                        jax.dtypes.prng_key)


def replicate(tree, mesh: Mesh):
  """`tree` (the same values on every process) as global arrays with a copy
  on every device of `mesh`. Typed PRNG keys stay keys."""
  leaves, treedef = jax.tree.flatten(tree)
  keys = [_is_key(x) for x in leaves]
  impls = [jax.random.key_impl(x) if k else None
           for x, k in zip(leaves, keys)]
  host = [np.asarray(jax.random.key_data(x) if k else x)
          for x, k in zip(leaves, keys)]

  def wrap(arrays):
    return [jax.random.wrap_key_data(a, impl=i) if k else a
            for a, k, i in zip(arrays, keys, impls)]

  # Host values enter a multi-process jit as the same value everywhere.
  out = jax.jit(wrap, out_shardings=replicated(mesh))(host)
  return jax.tree.unflatten(treedef, out)


def to_host(x: jax.Array, mesh: Mesh) -> np.ndarray:
  """The whole value of a global array on `mesh` as a NumPy array, on every
  process (one all-gather where `x` is split over the devices)."""
  if not x.is_fully_replicated:
    x = jax.jit(lambda a: a, out_shardings=replicated(mesh))(x)
  return np.asarray(x)


def mesh_size(mesh: Mesh) -> int:
  return int(mesh.devices.size)


def local_size(mesh: Mesh) -> int:
  """Devices of `mesh` that this process drives."""
  return sum(d.process_index == jax.process_index()
             for d in mesh.devices.flat)


def process_share(global_rows: int, mesh: Mesh) -> slice:
  """The rows of a global batch of `global_rows` that this process loads.

  Processes take consecutive, equal blocks in process order (the order of
  the mesh's devices), so the global array is the batch in its order.
  `global_rows` must be a multiple of the mesh size (`pad_rows`).
  """
  n = mesh_size(mesh)
  if global_rows % n:
    raise ValueError(f"a global batch of {global_rows} rows does not split "
                     f"over {n} devices; pad it (`pad_rows`)")
  per = global_rows // n * local_size(mesh)
  first = sorted({d.process_index for d in mesh.devices.flat}).index(
      jax.process_index())
  return slice(first * per, (first + 1) * per)


def padded_size(rows: int, multiple: int) -> int:
  return -(-rows // multiple) * multiple


def pad_rows(x: np.ndarray, rows: int, fill=None) -> np.ndarray:
  """`x` with its leading axis padded to `rows`: repeats of its rows
  (inputs: padding then looks like the batch to calibrations and batch
  statistics) or `fill` (labels: -1 marks a row that counts for nothing)."""
  x = np.asarray(x)
  extra = rows - x.shape[0]
  if extra <= 0:
    return x
  if fill is None:
    pad = x[np.arange(extra) % x.shape[0]]
  else:
    pad = np.full((extra,) + x.shape[1:], fill, x.dtype)
  return np.concatenate([x, pad])


def shard_batch(mesh: Mesh, *local: np.ndarray, global_rows: int):
  """Global arrays split over `mesh` on their leading axis, from the rows
  this process holds (`process_share(global_rows)` of the global batch)."""
  sharding = batch_sharded(mesh)
  out = tuple(
      jax.make_array_from_process_local_data(
          sharding, np.asarray(a), (global_rows,) + np.shape(a)[1:])
      for a in local)
  return out if len(out) > 1 else out[0]


def devices_info(mesh: Mesh) -> dict:
  """{"count", "platform", "processes"} of the devices `mesh` spans."""
  devices = list(mesh.devices.flat)
  return {"count": len(devices), "platform": devices[0].platform,
          "processes": len({d.process_index for d in devices})}


def is_main() -> bool:
  """Process 0: the one that prints progress and writes metrics, summaries
  and plots."""
  return jax.process_index() == 0


def global_batches(mesh: Mesh, x: np.ndarray, y: np.ndarray,
                   batch_size: int, *, key_or_seed, shuffle: bool = True,
                   multiple: int = 1):
  """One epoch of `(x, y)` global batches split over `mesh`.

  Every process draws the same order (`rxjax.data.batches` with the same
  key), pads each batch to a multiple of the mesh size and of `multiple`
  (so the last, short batch keeps every process in step, and a training
  step's gradient blocks are equal: `gradient_blocks`) and loads only its
  share. Padded rows repeat the batch's inputs and carry label -1, which
  the losses and accuracies skip; every real example appears exactly once
  per epoch.

  Yields:
    `(x, y)`: global arrays of `padded_size(batch_size, lcm(mesh size,
    multiple))` rows.
  """
  from rxjax import data as data_lib  # pylint: disable=g-import-not-at-top
  rows = padded_size(batch_size, math.lcm(mesh_size(mesh), multiple))
  for xb, yb in data_lib.batches(x, y, batch_size, key_or_seed=key_or_seed,
                                 shuffle=shuffle):
    share = process_share(rows, mesh)
    xb = pad_rows(xb, rows)[share]
    yb = pad_rows(np.asarray(yb, np.int32), rows, fill=-1)[share]
    yield shard_batch(mesh, xb, yb, global_rows=rows)


def gradient_blocks(blocks: int, mesh: Mesh | None) -> int:
  """The gradient blocks of a data-parallel step: the least multiple of
  `blocks` (`config.grad_blocks`) that the mesh's devices share evenly; 0
  for 0 (no blocks)."""
  if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 0:
    raise ValueError(f"`grad_blocks` must be an int >= 0, got {blocks!r}")
  if not blocks or mesh is None:
    return blocks
  return math.lcm(blocks, mesh_size(mesh))


def block_sum(tree):
  """Every leaf summed over its leading axis as a pairwise tree in index
  order, ((b0 + b1) + (b2 + b3)) + ...: the same additions whatever device
  computed each term, so the same rounding on any device count (unlike a
  reduction, whose order XLA picks for the shapes at hand)."""

  def pairwise(a):
    parts = [a[i] for i in range(a.shape[0])]
    while len(parts) > 1:
      parts = [parts[i] + parts[i + 1] if i + 1 < len(parts) else parts[i]
               for i in range(0, len(parts), 2)]
    return parts[0]

  return jax.tree.map(pairwise, tree)


def on_mesh(tree, mesh: Mesh):
  """`tree` as-is where every leaf already spans `mesh`'s devices (an
  output of a step on it), else `replicate`d: one place to accept host or
  single-device values."""
  devices = set(mesh.devices.flat)
  leaves = jax.tree.leaves(tree)
  if all(isinstance(x, jax.Array) and x.sharding.device_set == devices
         for x in leaves):
    return tree
  return replicate(tree, mesh)


# Programs a host loop may have dispatched and not finished (`Pace`).
IN_FLIGHT = 4


class Pace:
  """Bounds how far a host loop of programs on the mesh runs ahead.

  `pace(out)` after dispatching each step (any output of it) waits for the
  step `depth` steps back to finish, so at most `depth + 1` steps are ever
  in flight; the devices still have the next steps queued and do not idle.

  Why (issue 17, docs/distributed.md): JAX dispatches asynchronously, so a
  loop that does not read its results enqueues every step at once. XLA's
  CPU client admits a bounded number of unfinished programs per device
  (32), and the dispatch of one more blocks a thread of the client's worker
  pool (which has only max(cores, devices) threads) until an earlier
  program finishes; the same pool runs each device's part of every
  multi-device program. With a collective in the programs (an all-gather,
  the all-reduce of a data-parallel gradient), one worker can then run
  device 0's part, waiting at the rendezvous for device 1's part, while the
  other worker waits in that dispatch, and device 1's part is never given a
  thread: the process hangs with the machine idle (2 CPU devices on 2
  cores). A loop that never has more than a few programs in flight never
  reaches that window.
  """

  def __init__(self, depth: int = IN_FLIGHT):
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
      raise ValueError(f"`depth` must be an int >= 0, got {depth!r}")
    self.depth = depth
    self._queue = collections.deque()

  def __call__(self, out):
    """Records `out` (an output of the step just dispatched) and waits for
    the one `depth` steps back; returns `out`."""
    self._queue.append(out)
    while len(self._queue) > self.depth:
      jax.block_until_ready(self._queue.popleft())
    return out
