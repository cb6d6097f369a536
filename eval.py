"""Evaluate a trained network on simulated crossbars.

    python eval.py --config=configs/lenet_mnist.py --workdir=/tmp/lenet

Evaluates the latest checkpoint in the work directory (the re-trained one
when there is one) in floating point, on the Cross-ideal chip, on the
non-ideal chip without variation and over `eval.num_chips` chip instances
with variation in one vmapped call; writes DIR/eval.json and prints a
Markdown table.
"""

from absl import app
from absl import flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (configs/*.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Work directory.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  from rxjax import experiment
  import jax
  from absl import logging
  logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO.
  print(f"  devices: {jax.devices()}", flush=True)
  experiment.evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
