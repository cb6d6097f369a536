"""The command line shared by `train.py` and `eval.py` (absl + config flags).

Owns the `--config` / `--workdir` / `--debug` / `--cpu_devices` flags, the
host setup that must happen before JAX starts its runtime (the host settings
of `rxjax.host.tune_host`; how many devices a CPU host exposes; joining a
multi-process job, `config.distributed`, see docs/distributed.md) and the
`main` that parses them and calls one function of `rxjax.experiment`; the
scripts only choose which. A bad flag or config value ends the program with
one line on stderr that names the field (`error: ...`) and exit status 2 (1
for errors found later, e.g. a corrupt checkpoint or an unreachable
coordinator); `--debug` shows the traceback instead. Processes other than
process 0 print nothing to stdout.
"""

import ast
import os
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file (configs/*.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Work directory.")
_DEBUG = flags.DEFINE_bool(
    "debug", False, "Show the full traceback of an error instead of one line.")
_CPU_DEVICES = flags.DEFINE_integer(
    "cpu_devices", None,
    "CPU devices the host exposes to JAX (0: one per core). Default: "
    "JAX_NUM_CPU_DEVICES when set, else CPU_DEVICES_DEFAULT (rxjax/cli.py). "
    "Only the CPU platform; GPUs and TPUs are used as they are.")
flags.mark_flags_as_required(["config", "workdir"])

# CPU devices when neither the flag nor JAX_NUM_CPU_DEVICES says: 1 keeps
# JAX's default (one device whose XLA thread pool uses every core); why, in
# docs/performance.md ("CPU devices for the CLI").
CPU_DEVICES_DEFAULT = 1

# Errors that a user's input causes: one line, no traceback.
_USER_ERRORS = (ValueError, OSError, FloatingPointError)


def _fail(message: str, status: int) -> None:
  print(f"error: {' '.join(str(message).split())}"
        + ("" if "--debug" in sys.argv else " (--debug: traceback)"),
        file=sys.stderr, flush=True)
  sys.exit(status)


def cpu_devices(flag: int | None, environ=os.environ) -> int | None:
  """The `jax_num_cpu_devices` to set, or None to leave JAX's setting
  (JAX_NUM_CPU_DEVICES, which JAX reads itself)."""
  if flag is None:
    if "JAX_NUM_CPU_DEVICES" in environ:
      return None
    flag = CPU_DEVICES_DEFAULT
  if flag < 0:
    raise ValueError(f"--cpu_devices must be >= 0 (0: one per core), got "
                     f"{flag}")
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


def _override_error(argv, e) -> str:
  """A config_flags parse error, as one line naming the flag typed."""
  text = e.args[0] if e.args and isinstance(e.args[0], str) else str(e)
  if text[:1] in "'\"":  # AttributeError(KeyError(...)): a repr.
    try:
      text = ast.literal_eval(text)
    except (ValueError, SyntaxError):
      pass
  text = text.replace("\n", "; ")
  name = text.split("'")[1] if text.count("'") >= 2 else None
  typed = [a for a in argv[1:] if a.startswith("--config.") and (
      name is None or name in a)]
  where = typed[0] if typed else "--config"
  return f"{where}: no such config field or bad value ({text})"


def _parse(argv):
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    if "--debug" in argv:
      raise
    _fail(e, 2)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    # config_flags raises these for `--config.<mistyped>=`.
    if "--debug" in argv:
      raise
    _fail(_override_error(argv, e), 2)


def run(entry: str) -> None:
  """Parses the flags and runs `rxjax.experiment.<entry>(config, workdir)`."""

  def main(argv):
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from rxjax import host  # pylint: disable=g-import-not-at-top
    # Before the first computation: the program owns its process.
    try:
      tuned = host.tune_host()
    except ValueError as e:  # A bad RXJAX_BLAS_THREADS / RXJAX_MALLOC.
      if _DEBUG.value:
        raise
      _fail(e, 2)
    import jax  # pylint: disable=g-import-not-at-top
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO.
    config = _CONFIG.value
    try:
      setup_host(config, _CPU_DEVICES.value)  # Starts no backend.
    except (ValueError, RuntimeError) as e:
      if _DEBUG.value:
        raise
      _fail(e, 2 if isinstance(e, ValueError) else 1)
    from rxjax import experiment  # pylint: disable=g-import-not-at-top
    from rxjax import validate  # pylint: disable=g-import-not-at-top
    try:
      overrides = config_flags.get_override_values(flags.FLAGS["config"])
      unused = validate.unused_overrides(config, overrides, entry)
      if unused:
        what = "; ".join(f"--config.{u} is not read {why}"
                         for u, why in unused.items())
        if entry == "evaluate":  # The train.py command line, reused.
          print(f"  warning: {what}", file=sys.stderr, flush=True)
        else:
          raise validate.ConfigError(next(iter(unused)), what + " (remove it)")
      validate.check(config, entry=entry)
    except validate.ConfigError as e:
      if _DEBUG.value:
        raise
      _fail(e, 2)
    if jax.process_index() != 0:
      # Process 0 reports (DESIGN 6).
      sys.stdout = open(os.devnull, "w")  # pylint: disable=consider-using-with
    print(f"  devices: {jax.device_count()} x {jax.devices()[0].device_kind}"
          f" ({jax.devices()[0].platform}), {jax.process_count()} "
          f"process(es); host: BLAS threads {tuned['blas_threads']}, malloc "
          f"{tuned['malloc']}", flush=True)
    try:
      getattr(experiment, entry)(config, _WORKDIR.value)
    except _USER_ERRORS as e:
      if _DEBUG.value:
        raise
      _fail(e, 1)

  app.run(main, flags_parser=_parse)
