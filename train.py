"""Train, re-train and evaluate a network on simulated crossbars.

    python train.py --config=configs/lenet_mnist.py --workdir=/tmp/lenet

The config file says what runs (see its docstring); fields are overridden
with `--config.<field>=<value>`. Checkpoints, metrics.jsonl and
summary.json go to the work directory; run the same command again to resume.
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
  experiment.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
