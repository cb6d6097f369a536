"""The command line shared by `train.py` and `eval.py` (absl + config flags).

Owns the `--config` / `--workdir` / `--cpu_devices` flags and the host setup
that must happen before JAX starts its runtime: how many devices a CPU host
exposes, and joining a multi-process job (`config.distributed`, see
docs/distributed.md). Then calls one function of `rxjax.experiment`; the
scripts only choose which. Processes other than process 0 print nothing to
stdout (errors still reach stderr).
"""

import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (configs/*.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Work directory.")
_CPU_DEVICES = flags.DEFINE_integer(
    "cpu_devices", None,
    "CPU devices the host exposes to JAX (0: one per core). Default: "
    "JAX_NUM_CPU_DEVICES when set, else CPU_DEVICES_DEFAULT (rxjax/cli.py). "
    "Only the CPU platform; GPUs and TPUs are used as they are.")
flags.mark_flags_as_required(["config", "workdir"])

# CPU devices when neither the flag nor JAX_NUM_CPU_DEVICES says: 1 keeps
# JAX's default (one device whose XLA thread pool uses every core). The
# choice was measured on the main job, docs/performance.md ("CPU devices").
CPU_DEVICES_DEFAULT = 1


def cpu_devices(flag: int | None, environ=os.environ) -> int | None:
  """The `jax_num_cpu_devices` to set, or None to leave JAX's setting
  (JAX_NUM_CPU_DEVICES, which JAX reads itself)."""
  if flag is None:
    if "JAX_NUM_CPU_DEVICES" in environ:
      return None
    flag = CPU_DEVICES_DEFAULT
  if flag < 0:
    raise app.UsageError(f"--cpu_devices must be >= 0 (0: one per core), "
                         f"got {flag}")
  return flag or len(os.sched_getaffinity(0))


def setup_host(config, flag: int | None = None) -> None:
  """CPU device count, then `jax.distributed` (before JAX's first use)."""
  import jax  # pylint: disable=g-import-not-at-top
  from rxjax import distributed  # pylint: disable=g-import-not-at-top
  n = cpu_devices(flag)
  if n is not None:
    jax.config.update("jax_num_cpu_devices", n)
  d = config.get("distributed")
  if d is not None:
    distributed.initialize(
        coordinator_address=d.coordinator_address,
        num_processes=d.num_processes, process_id=d.process_id,
        auto=d.auto, initialization_timeout=d.initialization_timeout)


def run(entry: str) -> None:
  """Parses the flags and runs `rxjax.experiment.<entry>(config, workdir)`."""

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    import jax  # pylint: disable=g-import-not-at-top
    config = _CONFIG.value
    setup_host(config, _CPU_DEVICES.value)
    if jax.process_index() != 0:
      # Process 0 reports (DESIGN 6); before `experiment` binds the stream.
      sys.stdout = open(os.devnull, "w")  # pylint: disable=consider-using-with
    from rxjax import experiment  # pylint: disable=g-import-not-at-top
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO.
    print(f"  devices: {jax.device_count()} x {jax.devices()[0].device_kind}"
          f" ({jax.devices()[0].platform}), {jax.process_count()} "
          f"process(es)", flush=True)
    getattr(experiment, entry)(config, _WORKDIR.value)

  app.run(main)
