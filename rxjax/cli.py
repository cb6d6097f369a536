"""The command line shared by `train.py` and `eval.py` (absl + config flags).

Owns the `--config` / `--workdir` / `--debug` flags and the `main` that
parses them, applies the host settings (`rxjax.host.tune_host`) and calls
one function of `rxjax.experiment`; the scripts only choose which. A bad
flag or config value ends the program with one line on stderr that names
the field (`error: ...`) and exit status 2 (1 for errors found later, e.g.
a corrupt checkpoint); `--debug` shows the traceback instead.
"""

import ast
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
flags.mark_flags_as_required(["config", "workdir"])

# Errors that a user's input causes: one line, no traceback.
_USER_ERRORS = (ValueError, OSError, FloatingPointError)


def _fail(message: str, status: int) -> None:
  print(f"error: {' '.join(str(message).split())}"
        + ("" if "--debug" in sys.argv else " (--debug: traceback)"),
        file=sys.stderr, flush=True)
  sys.exit(status)


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
    from rxjax import experiment  # pylint: disable=g-import-not-at-top
    from rxjax import validate  # pylint: disable=g-import-not-at-top
    logging.set_verbosity(logging.WARNING)  # Orbax logs every save at INFO.
    config = _CONFIG.value
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
    print(f"  devices: {jax.devices()}; host: BLAS threads "
          f"{tuned['blas_threads']}, malloc {tuned['malloc']}", flush=True)
    try:
      getattr(experiment, entry)(config, _WORKDIR.value)
    except _USER_ERRORS as e:
      if _DEBUG.value:
        raise
      _fail(e, 1)

  app.run(main, flags_parser=_parse)
