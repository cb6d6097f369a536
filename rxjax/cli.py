"""The command line shared by `train.py` and `eval.py` (absl + config flags).

Owns the `--config` / `--workdir` flags and the `main` that parses them,
applies the host settings (`rxjax.host.tune_host`) and calls one function of
`rxjax.experiment`; the scripts only choose which.
"""

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (configs/*.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Work directory.")
flags.mark_flags_as_required(["config", "workdir"])


def run(entry: str) -> None:
  """Parses the flags and runs `rxjax.experiment.<entry>(config, workdir)`."""

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from rxjax import host  # pylint: disable=g-import-not-at-top
    # Before the first computation: the program owns its process.
    tuned = host.tune_host()
    import jax  # pylint: disable=g-import-not-at-top
    from rxjax import experiment  # pylint: disable=g-import-not-at-top
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO.
    print(f"  devices: {jax.devices()}; host: BLAS threads "
          f"{tuned['blas_threads']}, malloc {tuned['malloc']}", flush=True)
    getattr(experiment, entry)(_CONFIG.value, _WORKDIR.value)

  app.run(main)
