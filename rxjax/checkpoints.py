"""Checkpoints that prove their integrity: orbax plus a checksum of the arrays.

Orbax detects a truncated file or emptied metadata, but not bytes
overwritten inside a data file: those restore as wrong weights (some huge,
some NaN) with no error. So every checkpoint written here carries a SHA-256
digest of its array contents (each leaf's path, dtype, shape and bytes),
written next to orbax's files once the step is finalized, and checked on
every restore. A mismatch raises `CheckpointError`, which names the
checkpoint and says what to do.

A checkpoint without a digest (written by an older rxjax, or by a run
killed between orbax's commit and the digest's) restores with a warning
that it could not be verified.

Owns `save`, `restore`, `digest` and `CheckpointError`; the managers and
the training loop stay in `rxjax.experiment`.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp

DIGEST_FILE = "rxjax_checksum.json"


class CheckpointError(ValueError):
  """A checkpoint that cannot be trusted (corrupt, or another model's)."""


def _key_name(k) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def _leaves(tree) -> dict[str, np.ndarray]:
  """`{path: array}`, paths normalized so that a NamedTuple's `.mu` and the
  dict `["mu"]` that a template-free restore gives are the same path."""
  out = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    if leaf is None:
      continue
    if isinstance(leaf, jax.Array) and jax.dtypes.issubdtype(
        leaf.dtype, jax.dtypes.prng_key):
      leaf = jax.random.key_data(leaf)
    out["/".join(_key_name(k) for k in path)] = np.asarray(leaf)
  return out


def digest(tree) -> str | None:
  """SHA-256 (hex) of a pytree's arrays: paths, dtypes, shapes and bytes.

  None when an array is not fully addressable from this process (a
  multi-host array; such checkpoints are not verified).
  """
  h = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
      return None
  for name, a in sorted(_leaves(tree).items()):
    a = np.ascontiguousarray(a)
    h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
    h.update(a.tobytes())
  return h.hexdigest()


def _step_dir(manager: ocp.CheckpointManager, step: int) -> str:
  return os.path.join(str(manager.directory), str(step))


def save(manager: ocp.CheckpointManager, step: int, state) -> str | None:
  """Saves `state` as checkpoint `step`, waits for it, writes its digest.

  Returns:
    The digest (None when it cannot be computed on this process).
  """
  manager.save(step, args=ocp.args.StandardSave(state))
  manager.wait_until_finished()
  value = digest(state)
  if value is not None and jax.process_index() == 0:
    path = os.path.join(_step_dir(manager, step), DIGEST_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
      json.dump({"sha256": value, "step": int(step)}, f)
    os.replace(tmp, path)  # Atomic: a digest is whole or absent.
  return value


def stored_digest(manager: ocp.CheckpointManager, step: int) -> str | None:
  """The digest written with checkpoint `step`, or None if it has none.

  Raises:
    CheckpointError: the digest file exists but is unreadable.
  """
  path = os.path.join(_step_dir(manager, step), DIGEST_FILE)
  if not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      return str(json.load(f)["sha256"])
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise CheckpointError(
        f"checkpoint {_step_dir(manager, step)} is corrupt or does not "
        f"match its checksum file {DIGEST_FILE}, which is unreadable "
        f"({type(e).__name__}); delete that step directory to resume from "
        "the previous checkpoint, or use another --workdir") from e


def restore(manager: ocp.CheckpointManager, step: int, template=None,
            *, what: str = "") -> tuple[object, str | None]:
  """Restores checkpoint `step` and verifies it against its digest.

  Args:
    manager: the phase's checkpoint manager.
    step: the step (epoch) to restore.
    template: the pytree to restore into (orbax `StandardRestore`), or None
      for the saved structure as NumPy arrays.
    what: the phase, for messages.

  Returns:
    `(state, digest)`: the restored pytree and its verified digest (None
    when it could not be verified).

  Raises:
    CheckpointError: orbax cannot read it, it does not match `template`, or
      its arrays do not match the digest written with it.
  """
  where = _step_dir(manager, step)
  remedy = ("delete that step directory to resume from the previous "
            "checkpoint (or the whole phase directory to redo the phase), or "
            "use another --workdir")
  try:
    args = (ocp.args.StandardRestore(template) if template is not None
            else ocp.args.StandardRestore())
    state = manager.restore(step, args=args)
  except Exception as e:  # pylint: disable=broad-except
    raise CheckpointError(
        f"cannot restore the {what + ' ' if what else ''}checkpoint {where}: "
        f"it is corrupt or does not match this config ({type(e).__name__}: "
        f"{str(e)[:300]}); {remedy}") from e
  want = stored_digest(manager, step)
  got = digest(state)
  if want is None:
    print(f"  warning: checkpoint {where} has no checksum (written before "
          "checksums, or killed just after its commit); restored unverified",
          file=sys.stderr, flush=True)
    return state, None
  if got is not None and got != want:
    raise CheckpointError(
        f"checkpoint {where} is corrupt: its arrays do not match the "
        f"checksum written with it (sha256 {got[:12]}... != {want[:12]}...); "
        f"{remedy}")
  return state, got
