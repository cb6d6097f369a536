"""Experiments: train, re-train and evaluate networks on crossbars (RxNN VII).

This module is the edge where configs become specs (STYLE: configs stay at
the edge). It owns:

* `chip_spec`: a config's `chip` block -> `crossbar.Spec`.
* `train_and_evaluate` (what `train.py` runs): digital training, evaluation
  on Cross-ideal and non-ideal chips of several tile sizes, RxNN re-training
  on one chip (crossbar forward, floating-point backward, digital update),
  evaluation again, a Monte-Carlo study over chip instances, the summary.
* `evaluate` (what `eval.py` runs): a checkpoint as fp32, ideal, non-ideal
  without variation and over N chip instances with variation.
* Checkpoints (orbax, one directory per phase, saved every epoch, resumed
  from the latest), `metrics.jsonl`, progress lines with rate and ETA.

Everything a run computes is kept in its work directory: the config it ran
with (`config.json`; a different config in the same directory is refused),
checkpoints, finished evaluations (`results.json`, so a resumed run does not
repeat them), metrics and the summary.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import sys
import time
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp

from rxjax import circuit
from rxjax import crossbar
from rxjax import data as data_lib
from rxjax import device as device_lib
from rxjax import mapping as mapping_lib
from rxjax import models
from rxjax import nn as rnn
from rxjax import optim
from rxjax import periphery
from rxjax import plots

# ---------------------------------------------------------------------------
# Config -> spec.


def _bits(value, name):
  """Config bit counts: 0 means full precision (None in the specs)."""
  if value is None or value == 0:
    return None
  if not isinstance(value, int) or value < 0:
    raise ValueError(f"`{name}` must be an int >= 0 (0 = full precision), "
                     f"got {value!r}")
  return value


def chip_spec(chip: ml_collections.ConfigDict, *, tile_size: int | None = None,
              variation: bool = True) -> crossbar.Spec:
  """The `crossbar.Spec` of a config's `chip` block.

  Args:
    chip: the block (fields documented in `configs/lenet_mnist.py`).
    tile_size: overrides `chip.tile_size` (square tiles).
    variation: False sets the process variation to 0 (the "non-ideal
      without variation" evaluations and re-training).
  """
  size = chip.tile_size if tile_size is None else tile_size
  device = device_lib.DeviceSpec(
      r_min=chip.r_min_ohm, r_max=chip.r_max_ohm,
      device_bits=_bits(chip.device_bits, "chip.device_bits"),
      sigma=chip.sigma if variation else 0.0)
  return crossbar.Spec(
      mapping=mapping_lib.MappingSpec(
          tile_rows=size, tile_cols=size,
          weight_bits=_bits(chip.weight_bits, "chip.weight_bits"),
          signed=chip.signed),
      device=device,
      wires=circuit.Wires(r_row=chip.r_row_ohm, r_col=chip.r_col_ohm,
                          r_source=chip.r_source_ohm,
                          r_sense=chip.r_sense_ohm),
      dac=periphery.DACSpec(
          input_bits=_bits(chip.input_bits, "chip.input_bits"),
          dac_bits=_bits(chip.dac_bits, "chip.dac_bits"),
          model=chip.dac_model),
      adc=periphery.ADCSpec(bits=_bits(chip.adc_bits, "chip.adc_bits")),
      inputs=chip.inputs,
      # Work directories written before this field existed read "digital".
      pair_subtraction=chip.get("pair_subtraction", "digital"))


def retrain_spec(config: ml_collections.ConfigDict, **kwargs) -> crossbar.Spec:
  """The chip re-training runs on: `chip_spec(config.chip, **kwargs)` with
  `config.retrain.gain_correction` (default "column": each layer's outputs
  get a per-column digital gain fitted when the chip is programmed, as
  real chips calibrate their readout; docs/training.md says why re-training
  needs it)."""
  gain = config.retrain.get("gain_correction", "none")
  return chip_spec(config.chip, **kwargs).replace(gain_correction=gain)


# ---------------------------------------------------------------------------
# Work directory: config, metrics, results, progress.


class Workdir:
  """A run's directory: config check, metrics and results, atomically."""

  def __init__(self, path: str, config: ml_collections.ConfigDict):
    self.path = os.path.abspath(path)
    os.makedirs(self.path, exist_ok=True)
    self._check_config(config)
    self._tb = _tensorboard(self.path)

  def _check_config(self, config):
    path = os.path.join(self.path, "config.json")
    mine = json.loads(config.to_json_best_effort())
    if os.path.exists(path):
      try:
        with open(path) as f:
          theirs = json.load(f)
      except (OSError, ValueError) as e:
        raise ValueError(f"{path} is unreadable ({e}); remove it or use "
                         "another --workdir") from e
      _fill_added_fields(theirs)
      diff = sorted(_diff(theirs, mine))
      if diff:
        raise ValueError(
            f"--workdir {self.path} holds a run with a different config "
            f"(fields {', '.join(diff)}); use another --workdir or the same "
            "config to resume")
    else:
      self.write_json("config.json", mine)

  def write_json(self, name: str, value) -> str:
    return _write_json(os.path.join(self.path, name), value)

  def read_json(self, name: str, default=None):
    path = os.path.join(self.path, name)
    if not os.path.exists(path):
      return default
    with open(path) as f:
      return json.load(f)

  def log(self, step: int, phase: str, **values):
    """Appends one metrics line (and TensorBoard scalars when available)."""
    record = {"step": int(step), "phase": phase, "time": time.time()}
    record.update({k: _plain(v) for k, v in values.items()})
    with open(os.path.join(self.path, "metrics.jsonl"), "a") as f:
      f.write(json.dumps(record) + "\n")
    if self._tb is not None:
      for k, v in values.items():
        if isinstance(v, (int, float)):
          self._tb.scalar(f"{phase}/{k}", v, step)

  def result(self, name: str, compute: Callable[[], Any]):
    """A finished evaluation, computed once per work directory."""
    results = self.read_json("results.json", {})
    if name not in results:
      results[name] = _plain(compute())
      self.write_json("results.json", results)
    return results[name]


def _write_json(path: str, value) -> str:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump(value, f, indent=2, sort_keys=True)
    f.write("\n")
  os.replace(tmp, path)  # Atomic: a killed run leaves the old file.
  return path


def _tensorboard(path):
  try:
    from flax.metrics import tensorboard  # Needs TensorFlow.
    return tensorboard.SummaryWriter(os.path.join(path, "tensorboard"))
  except Exception:  # pylint: disable=broad-except
    return None


# Config fields added after work directories were first written, with the
# value that reproduces what older rxjax did: a run started before a field
# existed resumes when the field is left at that value.
_ADDED_FIELDS = {"chip.pair_subtraction": "digital",
                 "retrain.gain_correction": "none"}


def _fill_added_fields(stored: dict) -> None:
  for dotted, value in _ADDED_FIELDS.items():
    *parents, leaf = dotted.split(".")
    node = stored
    for name in parents:
      node = node.get(name) if isinstance(node, dict) else None
    if isinstance(node, dict) and leaf not in node:
      node[leaf] = value


def _diff(a, b, prefix=""):
  if isinstance(a, dict) and isinstance(b, dict):
    for k in set(a) | set(b):
      yield from _diff(a.get(k), b.get(k), f"{prefix}{k}.")
  elif a != b:
    yield prefix[:-1]


def _plain(v):
  if isinstance(v, dict):
    return {k: _plain(x) for k, x in v.items()}
  if isinstance(v, (list, tuple)):
    return [_plain(x) for x in v]
  if isinstance(v, (np.generic, np.ndarray, jax.Array)):
    return np.asarray(v).tolist()
  return v


class Progress:
  """Prints `phase: 42% 120/288 steps, 35.1 steps/s, ETA 5s` now and then."""

  def __init__(self, phase: str, total: int, unit: str = "steps",
               every_s: float = 5.0, stream=sys.stdout):
    self.phase, self.total, self.unit = phase, total, unit
    self.every_s, self.stream = every_s, stream
    self.start = self.last = time.time()
    self.done = 0

  def update(self, n: int = 1, **extra):
    self.done += n
    now = time.time()
    if now - self.last >= self.every_s or self.done == self.total:
      self.last = now
      rate = self.done / max(now - self.start, 1e-9)
      eta = (self.total - self.done) / rate if rate > 0 else float("inf")
      # Values may be device arrays: read back only when printing, so that
      # a training loop never waits for its step to finish.
      more = "".join(f", {k} {float(v):.4g}" for k, v in extra.items())
      print(f"  {self.phase}: {100 * self.done / self.total:3.0f}% "
            f"{self.done}/{self.total} {self.unit}, {rate:.3g} {self.unit}/s,"
            f" ETA {_duration(eta)}{more}", file=self.stream, flush=True)


def _duration(seconds: float) -> str:
  if not math.isfinite(seconds):
    return "?"
  seconds = int(round(seconds))
  return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else (
      f"{seconds}s")


# ---------------------------------------------------------------------------
# Model, data and training state.


@dataclasses.dataclass
class Setup:
  """What every phase of a run shares."""
  model: nn.Module
  data: data_lib.Dataset
  calib: np.ndarray  # Calibration images (training set).


def setup(config: ml_collections.ConfigDict) -> Setup:
  data = data_lib.load(config.dataset, data_dir=config.data_dir,
                       seed=config.seed, image_size=config.image_size)
  if data.name == "synthetic":
    print("  data: SYNTHETIC random images (smoke test only; accuracies "
          "mean nothing)", flush=True)
  model = models.get(config.model, num_classes=data.num_classes)
  rng = np.random.default_rng(config.seed)
  idx = rng.choice(len(data.x_train), min(config.eval.calibration_size,
                                          len(data.x_train)), replace=False)
  return Setup(model, data, data.x_train[np.sort(idx)])


def init_variables(model, x, seed) -> dict:
  """The model's initial variables for inputs shaped like `x[:1]`, from
  `seed` (what `train` starts from)."""
  variables = jax.jit(lambda k: model.init(k, x[:1]))(
      jax.random.key(seed))
  return dict(variables)


def _optimizer(config, steps_per_epoch, epochs, learning_rate):
  total = max(steps_per_epoch * epochs, 1)
  schedule = optax.cosine_decay_schedule(learning_rate, total)
  if config.optimizer == "sgd":
    opt = optax.sgd(schedule, momentum=config.momentum or None)
  elif config.optimizer == "adam":
    opt = optax.adam(schedule)
  else:
    raise ValueError(f"`optimizer` must be 'sgd' or 'adam', got "
                     f"{config.optimizer!r}")
  if config.weight_decay:
    opt = optax.chain(optax.add_decayed_weights(config.weight_decay), opt)
  return opt


def _cross_entropy(logits, labels):
  return optax.softmax_cross_entropy_with_integer_labels(logits,
                                                         labels).mean()


def _restore_or(manager, fresh, what: str):
  """(state, epoch) from the latest checkpoint, or (fresh, 0)."""
  step = manager.latest_step()
  if step is None:
    return fresh, 0
  try:
    state = manager.restore(step, args=ocp.args.StandardRestore(fresh))
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(
        f"cannot restore the {what} checkpoint at epoch {step} in "
        f"{manager.directory}: it is corrupt or does not match this config "
        f"({type(e).__name__}: {str(e)[:300]}). Use another --workdir, or "
        "delete that checkpoint directory to start the phase over") from e
  return state, int(step)


def _checkpoints(workdir: Workdir, phase: str):
  return ocp.CheckpointManager(
      os.path.join(workdir.path, "checkpoints", phase),
      options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True))


def train_step(model, opt: optax.GradientTransformation,
               spec: crossbar.Spec | None = None, *, has_stats: bool = False,
               program: bool = False):
  """The jitted training step that `train` runs.

  `step(state, chips, x, y) -> (state, chips, loss, accuracy)` with `state =
  {"variables", "opt_state"}`. Digital when `spec` is None (`chips` is then
  ignored); otherwise the forward pass runs on `chips` (from
  `rxjax.nn.program`), reprogrammed with their stored distortion to the
  current weights (`refresh=True`: TxSim's interpolated FCM), and the
  backward pass as `spec.backward` says. With `program=True` the second
  argument is the chip instance's key instead: the step programs the
  current weights exactly on that chip (every `G_eff` solved, ADCs
  calibrated on `x`: TxSim's exact FCM) in its own forward pass, which
  equals `nn.program` followed by the step without a second pass over the
  batch. Benchmarks time this function.
  """
  mutable = ["batch_stats"] if has_stats else []
  if program and spec is None:
    raise ValueError("`program=True` needs a chip `spec`")

  def loss_fn(params, variables, chips, x, y):
    v = {**variables, "params": params}
    kw = dict(train=True)
    if spec is None:
      out = model.apply(v, x, mutable=mutable, **kw) if mutable else (
          model.apply(v, x, **kw), {})
      logits, new = out
    elif program:
      logits, new = rnn.apply(model, v, None, x, spec, program_key=chips,
                              mutable=mutable, **kw)
    else:
      logits, new = rnn.apply(model, v, chips, x, spec, refresh=True,
                              mutable=mutable, **kw)
    return _cross_entropy(logits, y), (logits, new)

  @jax.jit
  def step(state, chips, x, y):
    variables, opt_state = state["variables"], state["opt_state"]
    (loss, (logits, new)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        variables["params"], variables, chips, x, y)
    updates, opt_state = opt.update(grads, opt_state, variables["params"])
    params = optax.apply_updates(variables["params"], updates)
    variables = {**variables, "params": params}
    if has_stats:
      variables["batch_stats"] = new["batch_stats"]
    chips = new[rnn.COLLECTION] if program else new.get(rnn.COLLECTION, chips)
    acc = jnp.mean(jnp.argmax(logits, -1) == y)
    return {"variables": variables, "opt_state": opt_state}, chips, loss, acc

  return step


def train(config, run: Setup, workdir: Workdir, *, phase: str, epochs: int,
          learning_rate: float, spec: crossbar.Spec | None = None,
          init: dict | None = None, update: device_lib.UpdateSpec | None = None,
          program_every: int | None = None,
          on_epoch: Callable[[int, dict], Any] | None = None) -> dict:
  """Trains digitally (spec None), re-trains (RxNN VII) or trains on a chip.

  With a spec, the forward pass runs on the chip and the backward pass as
  `spec.backward` says: "straight_through" (floating point: RxNN
  re-training) or "transposed_read" (the errors read backwards through the
  chip: TxSim). With `update`, the optimizer's requested updates go through
  the device response (`optim.apply_device_response`, TxSim eq. 1) last in
  the chain; otherwise the update is digital. The chip (one instance, the
  same all run) is programmed exactly (fresh `G_eff`, ADC ranges calibrated
  on the current training batch: TxSim IV-B) every `program_every` steps
  (None: at the start of every epoch) and reprogrammed with the stored
  distortion at every step in between (`crossbar.reprogram`: TxSim's
  interpolated FCM; `program_every=1` is the exact FCM every step).
  Checkpoints every epoch; resumes. Logs the epoch's metrics (phase
  `phase`) and, every `config.log_every_steps` steps, the mean training loss
  and accuracy of those steps (phase `phase + "/steps"`). `on_epoch(epoch,
  variables)`, if given, is called after each epoch it trains (diagnostics).

  Returns:
    The trained variables.
  """
  model, data = run.model, run.data
  variables = init if init is not None else init_variables(
      model, data.x_train, config.seed)
  steps_per_epoch = math.ceil(len(data.x_train) / config.batch_size)
  opt = _optimizer(config, steps_per_epoch, epochs, learning_rate)
  if update is not None:
    # Raw uint32 key: the optimizer state is checkpointed.
    opt = optax.chain(opt, optim.apply_device_response(
        update, spec.device if spec is not None else None,
        key=jax.random.PRNGKey(config.seed + 1)))
  fresh = {"variables": variables, "opt_state": opt.init(
      variables["params"])}
  manager = _checkpoints(workdir, phase)
  state, start = _restore_or(manager, fresh, phase)
  if start:
    print(f"  {phase}: resumed after epoch {start}", flush=True)
  has_stats = "batch_stats" in variables
  step = train_step(model, opt, spec, has_stats=has_stats)
  exact_step = None
  if spec is not None and program_every:
    exact_step = train_step(model, opt, spec, has_stats=has_stats,
                            program=True)

  program = None
  chip_key = jax.random.fold_in(jax.random.key(config.seed), 1_000_003)
  if spec is not None:
    program = functools.partial(program_fn(model, spec), key=chip_key)
  progress = Progress(phase, (epochs - start) * steps_per_epoch)
  log_every = config.log_every_steps
  for epoch in range(start, epochs):
    key = jax.random.fold_in(jax.random.key(config.seed), epoch)
    chips = None
    if program is not None and not program_every:
      chips = program(state["variables"], run.calib)
    losses, accs = [], []
    for i, (x, y) in enumerate(data_lib.batches(
        data.x_train, data.y_train, config.batch_size, key_or_seed=key)):
      if exact_step is not None and i % program_every == 0:
        state, chips, loss, acc = exact_step(state, chip_key, x, y)
      else:
        state, chips, loss, acc = step(state, chips, x, y)
      losses.append(loss)
      accs.append(acc)
      progress.update(loss=loss)
      if log_every and (i + 1) % log_every == 0:
        workdir.log(epoch * steps_per_epoch + i + 1, f"{phase}/steps",
                    loss=float(np.mean(losses[-log_every:])),
                    train_accuracy=float(np.mean(accs[-log_every:])))
    test = accuracy(model, state["variables"], data, spec,
                    chips=None if spec is None else program(
                        state["variables"], run.calib),
                    batch_size=config.eval.batch_size)
    metrics = dict(epoch=epoch + 1, loss=float(np.mean(losses)),
                   train_accuracy=float(np.mean(accs)), test_accuracy=test)
    workdir.log((epoch + 1) * steps_per_epoch, phase, **metrics)
    print(f"  {phase}: epoch {epoch + 1}/{epochs} loss "
          f"{metrics['loss']:.4f} train {metrics['train_accuracy']:.4f} "
          f"test {test:.4f}", flush=True)
    manager.save(epoch + 1, args=ocp.args.StandardSave(state))
    manager.wait_until_finished()
    if on_epoch is not None:
      on_epoch(epoch + 1, state["variables"])
  manager.close()
  return state["variables"]


# ---------------------------------------------------------------------------
# Evaluation.


def accuracy(model, variables, data, spec, *, chips=None, key=None,
             batch_size: int = 500) -> float:
  """Test accuracy, digital (spec None) or on programmed chips."""
  if spec is not None and chips is None:
    raise ValueError("`chips` are needed with a spec (rxjax.nn.program)")
  fn = _logits_fn(model, spec)
  correct = 0
  for x, y in data_lib.batches(data.x_test, data.y_test, batch_size,
                               key_or_seed=0, shuffle=False):
    logits = fn(variables, chips, x)
    correct += int(jnp.sum(jnp.argmax(logits, -1) == y))
  return correct / len(data.y_test)


# A few compiled programs per process, not one per chip setting forever:
# a sweep over 21 chips exhausted the process's memory mappings (LLVM
# "Unable to allocate section memory") while every program was kept.
_COMPILED = 8


@functools.lru_cache(maxsize=_COMPILED)
def program_fn(model, spec):
  """`rnn.program(model, variables, x, spec, key=key)` as a function of
  `(variables, x, key)`, compiled once per (model, spec)."""
  return jax.jit(lambda v, x, key: rnn.program(model, v, x, spec, key=key))


@functools.lru_cache(maxsize=_COMPILED)
def _logits_fn(model, spec):
  """Compiled once per (model, spec), not once per evaluation."""
  return jax.jit(lambda v, c, x: rnn.apply(model, v, c, x, spec))


def evaluate_on_chip(run: Setup, variables, spec, *, key) -> float:
  """Programs one chip instance (calibrated on the run's calibration set)
  and returns its test accuracy."""
  chips = program_fn(run.model, spec)(variables, run.calib, key=key)
  return accuracy(run.model, variables, run.data, spec, chips=chips)


def evaluate_chips(run: Setup, variables, spec, *, key, n: int,
                   batch_size: int = 500) -> dict:
  """Accuracy over `n` chip instances (one vmapped call per test batch).

  Chip `i` is programmed with `fold_in(key, i)`: the same key gives the
  same chips. Each test batch is split into sub-batches of `batch_size / n`
  images (at least 1) so that the `n` chips' currents fit in memory.

  Returns:
    {"n", "mean", "std", "min", "max", "accuracies"}.
  """
  keys = jnp.stack([jax.random.fold_in(key, i) for i in range(n)])
  # Weights and images are arguments, not closed-over constants: XLA would
  # constant-fold everything that does not depend on the chip key (the
  # calibration images' patches and statistics), slowly, at compile time.
  program = jax.jit(jax.vmap(
      lambda k, v, x: rnn.program(run.model, v, x, spec, key=k),
      in_axes=(0, None, None)))
  chips = program(keys, variables, run.calib)
  logits = jax.jit(jax.vmap(
      lambda c, v, x: rnn.apply(run.model, v, c, x, spec),
      in_axes=(0, None, None)))
  sub = max(1, batch_size // n)
  correct = np.zeros(n)
  data = run.data
  progress = Progress(f"{n} chips", len(data.y_test), unit="images")
  for x, y in data_lib.batches(data.x_test, data.y_test, sub,
                               key_or_seed=0, shuffle=False):
    out = logits(chips, variables, x)
    correct += np.asarray(jnp.sum(jnp.argmax(out, -1) == y, axis=-1))
    progress.update(len(y))
  acc = correct / len(data.y_test)
  return {"n": n, "mean": float(acc.mean()), "std": float(acc.std()),
          "min": float(acc.min()), "max": float(acc.max()),
          "accuracies": acc.tolist()}


# ---------------------------------------------------------------------------
# The two entry points.


def _cross(size):
  return f"cross{size}"


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str) -> dict:
  """`train.py`: the run a config describes; returns the summary.

  mode "digital": trains in floating point for `num_epochs`; then, for each
  of `eval.tile_sizes`, evaluates the network on the Cross-ideal chip and on
  the non-ideal chip without variation; re-trains for `retrain.num_epochs`
  on the non-ideal chip of `retrain.tile_size` (if > 0) and evaluates it
  again; finally evaluates the final network over `eval.num_chips` chip
  instances with variation. mode "retrain": starts from the final digital
  checkpoint of `init_workdir` (or of this work directory) and runs only
  the re-training and its evaluations.

  Writes `summary.json` (accuracies as fractions) and prints a Markdown
  table.
  """
  start = time.time()
  wd = Workdir(workdir, config)
  run = setup(config)
  print(f"  data: {run.data.name}, {len(run.data.y_train)} train / "
        f"{len(run.data.y_test)} test images; model: {config.model}",
        flush=True)
  key = jax.random.key(config.seed)
  if config.mode == "txsim":
    return _txsim(config, run, wd, start)
  if config.mode == "digital":
    variables = train(config, run, wd, phase="digital",
                      epochs=config.num_epochs,
                      learning_rate=config.learning_rate)
  elif config.mode == "retrain":
    variables = _load_digital(config, run, wd)
  else:
    raise ValueError(f"`mode` must be 'digital', 'retrain' or 'txsim', got "
                     f"{config.mode!r}")
  summary = {"fp32": wd.result("fp32", lambda: accuracy(
      run.model, variables, run.data, None))}
  summary["ideal"], summary["nonideal"] = {}, {}
  for size in config.eval.tile_sizes:
    name = _cross(size)
    for mode, variation in (("ideal", False), ("nonideal", False)):
      spec = rnn.mode_spec(mode, chip_spec(config.chip, tile_size=size,
                                           variation=variation))
      summary[mode][name] = wd.result(f"{mode}/{name}", lambda: (
          evaluate_on_chip(run, variables, spec,
                           key=jax.random.fold_in(key, size))))
      print(f"  {mode} {name}: {summary[mode][name]:.4f}", flush=True)
      wd.log(0, f"eval/{mode}", **{name: summary[mode][name]})
  final = variables
  size = config.retrain.tile_size
  spec = retrain_spec(config, tile_size=size, variation=False)
  if config.retrain.num_epochs > 0:
    final = train(config, run, wd, phase="retrain",
                  epochs=config.retrain.num_epochs,
                  learning_rate=config.retrain.learning_rate, spec=spec,
                  init=variables)
    summary["retrained"] = {_cross(size): wd.result(
        f"retrained/{_cross(size)}", lambda: evaluate_on_chip(
            run, final, spec, key=jax.random.fold_in(key, size)))}
    print(f"  retrained {_cross(size)}: "
          f"{summary['retrained'][_cross(size)]:.4f}", flush=True)
  if config.eval.num_chips > 0:
    # The re-trained network on the chips it was re-trained for (with their
    # gain correction); the digital one on the plain chips.
    chips_spec = (retrain_spec(config, tile_size=size)
                  if config.retrain.num_epochs > 0 else
                  chip_spec(config.chip, tile_size=size))
    summary["chips"] = wd.result("chips", lambda: evaluate_chips(
        run, final, chips_spec, key=jax.random.fold_in(key, 10_000),
        n=config.eval.num_chips, batch_size=config.eval.batch_size))
    summary["chips"]["tile_size"] = size
    summary["chips"]["network"] = ("retrained" if
                                   config.retrain.num_epochs > 0 else
                                   "digital")
  summary["seconds"] = time.time() - start
  wd.write_json("summary.json", summary)
  print(table(summary))
  print(f"  wrote {os.path.join(wd.path, 'summary.json')} "
        f"({summary['seconds']:.0f} s)")
  return summary


def txsim_specs(config) -> dict:
  """Cross-Ideal and Cross-NI (spec, update) pairs of a txsim config."""
  t = config.txsim
  spec = chip_spec(config.chip).replace(backward="transposed_read")
  if t.g_eff == "none":
    spec = spec.replace(wires=circuit.Wires.ideal())
  elif t.g_eff == "aam":
    spec = spec.replace(solver="aam", aam_paths=t.aam_paths)
  elif t.g_eff not in ("exact", "interpolated"):
    raise ValueError(f"`txsim.g_eff` must be 'exact', 'interpolated', 'aam' "
                     f"or 'none', got {t.g_eff!r}")
  return {
      "cross_ideal": (spec.cross_ideal(), device_lib.UpdateSpec.ideal()),
      "cross_ni": (spec, device_lib.UpdateSpec(nu=t.nu, gamma=t.gamma)),
  }


def _txsim(config, run: Setup, wd: Workdir, start: float) -> dict:
  """TxSim: digital, Cross-Ideal and Cross-NI training from one init."""
  t = config.txsim
  every = t.interval if t.g_eff == "interpolated" else 1
  summary = {}
  digital = train(config, run, wd, phase="digital", epochs=config.num_epochs,
                  learning_rate=config.learning_rate)
  summary["digital"] = wd.result("digital", lambda: accuracy(
      run.model, digital, run.data, None))
  for name, (spec, update) in txsim_specs(config).items():
    variables = train(config, run, wd, phase=name, epochs=config.num_epochs,
                      learning_rate=config.learning_rate, spec=spec,
                      update=update, program_every=every)
    summary[name] = wd.result(name, lambda: evaluate_on_chip(
        run, variables, spec.replace(backward="straight_through"),
        key=jax.random.fold_in(jax.random.key(config.seed), 1_000_003)))
    print(f"  {name}: {summary[name]:.4f}", flush=True)
  summary["seconds"] = time.time() - start
  wd.write_json("summary.json", summary)
  curves = plots.training_curves(
      wd.path, {"digital": "digital", "cross_ideal": "Cross-Ideal",
                "cross_ni": "Cross-NI"},
      title=f"{config.model} trained on crossbars (TxSim): nu = {t.nu}, "
      f"gamma = {t.gamma}, G_eff {t.g_eff}")
  print(f"  wrote {curves}")
  print("| trained on | test accuracy |\n|---|---|\n" + "\n".join(
      f"| {k} | {summary[k]:.4f} |" for k in ("digital", "cross_ideal",
                                               "cross_ni")))
  print(f"  wrote {os.path.join(wd.path, 'summary.json')} "
        f"({summary['seconds']:.0f} s)")
  return summary


def _latest_variables(path: str, fresh) -> tuple[dict, int] | None:
  """The variables of the newest checkpoint under `path`, or None.

  Checked against `fresh` (the config's model): a checkpoint of another
  model, or one that cannot be read, raises a ValueError naming it.
  """
  if not os.path.isdir(path):
    return None
  manager = ocp.CheckpointManager(path)
  step = manager.latest_step()
  try:
    if step is None:
      return None
    try:
      restored = manager.restore(step, args=ocp.args.StandardRestore())
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(f"cannot read checkpoint {path}/{step}: corrupt "
                       f"({type(e).__name__}: {str(e)[:300]})") from e
  finally:
    manager.close()
  variables = jax.tree.map(jnp.asarray, dict(restored["variables"]))
  if (jax.tree.structure(variables) != jax.tree.structure(fresh)
      or jax.tree.map(jnp.shape, variables) != jax.tree.map(jnp.shape,
                                                            fresh)):
    raise ValueError(f"checkpoint {path}/{step} does not match the model of "
                     "this config")
  return variables, step


def _load_digital(config, run: Setup, wd: Workdir):
  source = config.init_workdir or wd.path
  path = os.path.join(os.path.abspath(source), "checkpoints", "digital")
  fresh = init_variables(run.model, run.data.x_train, config.seed)
  found = _latest_variables(path, fresh)
  if found is None:
    raise FileNotFoundError(
        f"mode 'retrain' needs a digital checkpoint: {path} has none (set "
        "--config.init_workdir to the work directory of a digital run)")
  return found[0]


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """`eval.py`: the latest checkpoint as fp32, ideal, non-ideal, N chips.

  Uses the re-trained network when the work directory has one, else the
  digital one. Writes `eval.json` and prints a Markdown table.
  """
  start = time.time()
  wd = os.path.abspath(workdir)
  if not os.path.isdir(os.path.join(wd, "checkpoints")):
    raise FileNotFoundError(
        f"{wd}/checkpoints does not exist: run train.py with this "
        "--workdir first")
  run = setup(config)
  fresh = init_variables(run.model, run.data.x_train, config.seed)
  for phase in ("retrain", "digital"):
    found = _latest_variables(os.path.join(wd, "checkpoints", phase), fresh)
    if found is not None:
      variables, step = found
      network = f"{phase} (epoch {step})"
      break
  else:
    raise FileNotFoundError(f"no checkpoint under {wd}/checkpoints")
  key = jax.random.key(config.seed)
  size = config.chip.tile_size
  name = _cross(size)
  result = {"network": network, "fp32": accuracy(run.model, variables,
                                                 run.data, None)}
  for mode in ("ideal", "nonideal"):
    spec = rnn.mode_spec(mode, chip_spec(config.chip, variation=False))
    result[mode] = {name: evaluate_on_chip(run, variables, spec,
                                           key=jax.random.fold_in(key, size))}
    print(f"  {mode} {name}: {result[mode][name]:.4f}", flush=True)
  if config.eval.num_chips > 0:
    result["chips"] = evaluate_chips(
        run, variables, chip_spec(config.chip),
        key=jax.random.fold_in(key, 10_000), n=config.eval.num_chips,
        batch_size=config.eval.batch_size)
    result["chips"]["tile_size"] = size
  result["seconds"] = time.time() - start
  path = _write_json(os.path.join(wd, "eval.json"), result)
  print(table(result))
  print(f"  wrote {path} ({result['seconds']:.0f} s)")
  return result


def table(summary: dict) -> str:
  """A Markdown table of a summary or an eval result."""
  rows = [("fp32 (digital)", summary["fp32"])]
  for group, label in (("ideal", "ideal"), ("nonideal", "non-ideal"),
                       ("retrained", "re-trained, non-ideal")):
    for name, acc in sorted(summary.get(group, {}).items(),
                            key=lambda kv: int(kv[0][5:])):
      rows.append((f"{label} {name.replace('cross', 'Cross')}", acc))
  lines = ["| network on | test accuracy |", "|---|---|"]
  lines += [f"| {k} | {v:.4f} |" for k, v in rows]
  if "chips" in summary:
    c = summary["chips"]
    lines.append(
        f"| {c['n']} chips with variation, Cross{c.get('tile_size', '')} "
        f"| {c['mean']:.4f} +- {c['std']:.4f} (min {c['min']:.4f}, max "
        f"{c['max']:.4f}) |")
  return "\n".join(lines)
