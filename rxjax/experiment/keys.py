"""The keys a run draws from, all derived from `config.seed`.

Every random draw of a run comes from one of these (STYLE: randomness is
explicit; the same seed gives the same run). They are named once, here, so
that a benchmark or study that redoes part of a run draws the same chips
and the same batches as the run itself. The salts are distinct from every
epoch number and tile size a run folds in, so no two uses share a key.
"""

from __future__ import annotations

import jax

# Folded into the seed's key for the one chip instance a run trains on (RxNN
# re-training, TxSim's Cross-Ideal and Cross-NI) and evaluates a TxSim
# network on: the chip a network is tested on is the chip it was trained on.
CHIP_SALT = 1_000_003

# Folded into the seed's key for the Monte-Carlo chip instances (chip `i`
# from `fold_in(monte_carlo_key(seed), i)`, `experiment.evaluate_chips`).
MONTE_CARLO_SALT = 10_000


def chip_key(seed: int) -> jax.Array:
  """The chip instance a run trains on (`experiment.train` with a spec)."""
  return jax.random.fold_in(jax.random.key(seed), CHIP_SALT)


def eval_chip_key(seed: int, tile_size: int) -> jax.Array:
  """The chip instance a network is evaluated on at `tile_size` (ideal,
  non-ideal and re-trained evaluations of `train_and_evaluate`)."""
  return jax.random.fold_in(jax.random.key(seed), tile_size)


def monte_carlo_key(seed: int) -> jax.Array:
  """The key of the Monte-Carlo chips (`eval.num_chips` instances)."""
  return jax.random.fold_in(jax.random.key(seed), MONTE_CARLO_SALT)


def epoch_key(seed: int, epoch: int) -> jax.Array:
  """The shuffle of the training batches of epoch `epoch` (from 0)."""
  return jax.random.fold_in(jax.random.key(seed), epoch)


def update_key(seed: int) -> jax.Array:
  """The device-response noise of the updates (`optim.apply_device_
  response`): a raw uint32 key, since the optimizer state that carries it
  is checkpointed."""
  return jax.random.PRNGKey(seed + 1)
