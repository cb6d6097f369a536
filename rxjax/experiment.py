"""Experiments: train, re-train and evaluate networks on crossbars (RxNN VII).

This module is the edge where configs become specs (STYLE: configs stay at
the edge). It owns:

* `chip_spec`: a config's `chip` block -> `crossbar.ChipSpec` (defined in
  `rxjax.validate`, which also checks a whole config and builds every spec
  of a run before any work).
* `train_and_evaluate` (what `train.py` runs): digital training, evaluation
  on Cross-ideal and non-ideal chips of several tile sizes, RxNN re-training
  on one chip (crossbar forward, floating-point backward, digital update),
  evaluation again, a Monte-Carlo study over chip instances, the summary.
* `evaluate` (what `eval.py` runs): the network(s) the config's mode
  produced, from their checkpoints: as fp32, ideal, non-ideal without
  variation and over N chip instances with variation (modes "digital",
  "retrain"), or each TxSim network on its own chip (mode "txsim").
* Checkpoints (orbax, one directory per phase, saved every epoch, resumed
  from the latest), `metrics.jsonl`, progress lines with rate and ETA.

Everything a run computes is kept in its work directory: the config it ran
with (`config.json`, written once the config is valid; a different config
resumes or is refused by the rule in `rxjax.resume`), checkpoints with their
checksums (`rxjax.checkpoints`), finished evaluations (`results.json`, so a
resumed run does not repeat them), metrics (`rxjax.metrics`: one line per
(phase, step)) and the summary, which names the checkpoints it came from.
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

from rxjax import checkpoints as ckpt
from rxjax import circuit
from rxjax import crossbar
from rxjax import data as data_lib
from rxjax import distributed
from rxjax import device as device_lib
from rxjax import energy as energy_lib
from rxjax import finite
from rxjax import mapping as mapping_lib
from rxjax import metrics as metrics_lib
from rxjax import models
from rxjax import nn as rnn
from rxjax import optim
from rxjax import periphery
from rxjax import plots
from rxjax import resume
from rxjax import validate

# ---------------------------------------------------------------------------
# Config -> spec.


# Every chip field, its spec field, unit and range: `rxjax.validate`.
chip_spec = validate.chip_spec


def retrain_spec(config: ml_collections.ConfigDict, **kwargs) -> crossbar.ChipSpec:
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
    # Process 0 alone writes (DESIGN 6). Every process reads results.json
    # to skip a finished evaluation: they agree, since each evaluation needs
    # all of them, so none can find one that the others have not finished.
    self.main = distributed.is_main()
    self._tb = _tensorboard(self.path) if self.main else None
    self._metrics = metrics_lib.MetricsFile(
        os.path.join(self.path, "metrics.jsonl")) if self.main else None
    # {phase: {"step", "sha256"}}: the checkpoints this run saved or
    # restored, recorded in summary.json.
    self.checkpoints = {}

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
      diff = sorted(d for d in _diff(
          resume.normalize(theirs),
          resume.normalize(json.loads(json.dumps(mine))))
                    if d.split(".")[0] not in _PLACEMENT_FIELDS)
      if diff:
        # The resume rule (docs/configs.md): refused if a finished phase
        # would change; else the finished phases resume.
        resume.judge(self.path, diff)
        moved = (resume.supersede_results(self.path, diff)
                 if distributed.is_main() else None)
        print(f"  workdir: config changed ({', '.join(diff)}); finished "
              f"phases {resume.finished_phases(self.path) or 'none'} resume"
              + (f", old evaluations moved to {moved}" if moved else ""),
              flush=True)
        self.write_json("config.json", mine)
    else:
      self.write_json("config.json", mine)

  def write_json(self, name: str, value) -> str:
    path = os.path.join(self.path, name)
    return _write_json(path, value) if distributed.is_main() else path

  def read_json(self, name: str, default=None):
    path = os.path.join(self.path, name)
    if not os.path.exists(path):
      return default
    try:
      with open(path) as f:
        return json.load(f)
    except (OSError, ValueError) as e:
      raise ValueError(
          f"{path} is unreadable ({type(e).__name__}: {e}); delete it to "
          "recompute what it held (the checkpoints are kept)") from e

  def log(self, step: int, phase: str, **values):
    """Appends one metrics line (and TensorBoard scalars when available)."""
    if not self.main:
      return
    record = {"step": int(step), "phase": phase, "time": time.time()}
    record.update({k: _plain(v) for k, v in values.items()})
    self._metrics.append(record)  # Marks an older line of (phase, step).
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
                 **{f"chip.{k}": v for k, v in validate.chip_defaults().items()
                    if k not in ("tile_size", "r_min_ohm", "r_max_ohm",
                                 "device_bits", "weight_bits", "signed",
                                 "sigma", "r_row_ohm", "r_col_ohm",
                                 "r_source_ohm", "r_sense_ohm", "input_bits",
                                 "dac_bits", "dac_model", "adc_bits",
                                 "pair_subtraction", "inputs")},
                 "retrain.gain_correction": "none"}


# Where a run is placed, not what it computes: a work directory resumes with
# another device count or job layout (checkpoints are restored onto the
# current mesh).
_PLACEMENT_FIELDS = ("num_devices", "distributed")


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
               every_s: float = 5.0, stream=None):
    self.phase, self.total, self.unit = phase, total, unit
    self.every_s = every_s
    self.stream = sys.stdout if stream is None else stream  # At call time.
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
  # The devices the run uses (`config.num_devices`; default all): the
  # training batch, the test batches and the Monte-Carlo chips are split
  # over its one axis.
  mesh: jax.sharding.Mesh | None = None

  def __post_init__(self):
    if self.mesh is None:
      self.mesh = distributed.make_mesh()


def setup(config: ml_collections.ConfigDict) -> Setup:
  data = data_lib.load(config.dataset, data_dir=config.data_dir,
                       seed=config.seed, image_size=config.image_size)
  for name in ("x_train", "x_test"):
    finite.check(f"{config.dataset}.{name}", getattr(data, name),
                 f"images of dataset {config.dataset!r}")
  if data.name == "synthetic":
    print("  data: SYNTHETIC random images (smoke test only; accuracies "
          "mean nothing)", flush=True)
  model = models.get(config.model, num_classes=data.num_classes)
  rng = np.random.default_rng(config.seed)
  idx = rng.choice(len(data.x_train), min(config.eval.calibration_size,
                                          len(data.x_train)), replace=False)
  mesh = distributed.make_mesh(config.get("num_devices"))
  return Setup(model, data, data.x_train[np.sort(idx)], mesh)


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
  """Mean over the rows with a label >= 0 (-1: padding of a short batch,
  `distributed.global_batches`)."""
  real = labels >= 0
  ce = optax.softmax_cross_entropy_with_integer_labels(
      logits, jnp.where(real, labels, 0))
  return jnp.sum(jnp.where(real, ce, 0)) / jnp.maximum(jnp.sum(real), 1)


def _accuracy(logits, labels):
  """Fraction correct of the rows with a label >= 0."""
  real = labels >= 0
  return jnp.sum((jnp.argmax(logits, -1) == labels) & real) / jnp.maximum(
      jnp.sum(real), 1)


def _restore_or(manager, fresh, what: str, workdir: Workdir | None = None):
  """(state, epoch) from the latest checkpoint, or (fresh, 0); verified
  against its checksum (`rxjax.checkpoints`)."""
  step = manager.latest_step()
  if step is None:
    return fresh, 0
  state, digest = ckpt.restore(manager, step, fresh, what=what)
  if workdir is not None:
    workdir.checkpoints[what] = {"step": int(step), "sha256": digest}
  return state, int(step)


def _checkpoints(workdir: Workdir, phase: str):
  return ocp.CheckpointManager(
      os.path.join(workdir.path, "checkpoints", phase),
      options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True))


def train_step(model, opt: optax.GradientTransformation,
               spec: crossbar.ChipSpec | None = None, *, has_stats: bool = False,
               program: bool = False, mesh: jax.sharding.Mesh | None = None):
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
  batch; its tiles' solve is split over `mesh` (`crossbar.solve`).
  Benchmarks time this function.

  Data-parallel over `mesh` (DESIGN 6): pass `x` and `y` split over its
  axis (`distributed.global_batches`) and the rest replicated; every output
  comes back replicated, so XLA's collectives (the all-reduce GSPMD
  inserts) sum the gradient across devices and every device applies the
  same update. Labels -1 mark padding rows, which count for nothing.
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
                              mesh=mesh, mutable=mutable, **kw)
    else:
      logits, new = rnn.apply(model, v, chips, x, spec, refresh=True,
                              mutable=mutable, **kw)
    return _cross_entropy(logits, y), (logits, new)

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
    acc = _accuracy(logits, y)
    return {"variables": variables, "opt_state": opt_state}, chips, loss, acc

  if mesh is None:
    return jax.jit(step)
  return jax.jit(step, out_shardings=distributed.replicated(mesh))


def train(config, run: Setup, workdir: Workdir, *, phase: str, epochs: int,
          learning_rate: float, spec: crossbar.ChipSpec | None = None,
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
  mesh = run.mesh
  fresh = distributed.replicate(
      {"variables": variables, "opt_state": opt.init(variables["params"])},
      mesh)
  manager = _checkpoints(workdir, phase)
  state, start = _restore_or(manager, fresh, phase, workdir)
  if start:
    print(f"  {phase}: resumed after epoch {start}", flush=True)
    # Lines of the epoch the killed run did not finish: redone now.
    if workdir.main:
      workdir._metrics.supersede(  # pylint: disable=protected-access
          lambda r: r.get("phase") in (phase, f"{phase}/steps")
          and r.get("step", 0) > start * steps_per_epoch)
  has_stats = "batch_stats" in variables
  step = train_step(model, opt, spec, has_stats=has_stats, mesh=mesh)
  exact_step = None
  if spec is not None and program_every:
    exact_step = train_step(model, opt, spec, has_stats=has_stats,
                            program=True, mesh=mesh)

  program = None
  chip_key = distributed.replicate(
      jax.random.fold_in(jax.random.key(config.seed), 1_000_003), mesh)
  if spec is not None:
    program = functools.partial(program_fn(model, spec, mesh), key=chip_key)
  progress = Progress(phase, (epochs - start) * steps_per_epoch)
  log_every = config.log_every_steps
  for epoch in range(start, epochs):
    key = jax.random.fold_in(jax.random.key(config.seed), epoch)
    chips = None
    if program is not None and not program_every:
      chips = program(state["variables"], run.calib)
    losses, accs = [], []
    for i, (x, y) in enumerate(distributed.global_batches(
        mesh, data.x_train, data.y_train, config.batch_size,
        key_or_seed=key)):
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
                    batch_size=config.eval.batch_size, mesh=mesh)
    metrics = dict(epoch=epoch + 1, loss=float(np.mean(losses)),
                   train_accuracy=float(np.mean(accs)), test_accuracy=test)
    if not math.isfinite(metrics["loss"]):
      raise FloatingPointError(
          f"{phase}: the training loss is {metrics['loss']} in epoch "
          f"{epoch + 1}: training diverged (not checkpointed); lower the "
          "learning rate (`learning_rate` / `retrain.learning_rate`)")
    workdir.log((epoch + 1) * steps_per_epoch, phase, **metrics)
    print(f"  {phase}: epoch {epoch + 1}/{epochs} loss "
          f"{metrics['loss']:.4f} train {metrics['train_accuracy']:.4f} "
          f"test {test:.4f}", flush=True)
    digest = ckpt.save(manager, epoch + 1, state)  # With its checksum.
    workdir.checkpoints[phase] = {"step": epoch + 1, "sha256": digest}
    if on_epoch is not None:
      on_epoch(epoch + 1, state["variables"])
  manager.close()
  return state["variables"]


# ---------------------------------------------------------------------------
# Evaluation.


def accuracy(model, variables, data, spec, *, chips=None, key=None,
             batch_size: int = 500,
             mesh: jax.sharding.Mesh | None = None) -> float:
  """Test accuracy, digital (spec None) or on programmed chips.

  The test batches are split over `mesh` (None: every device), each
  process loading its share; every test image counts exactly once.
  """
  del key
  if spec is not None and chips is None:
    raise ValueError("`chips` are needed with a spec (rxjax.nn.program)")
  mesh = distributed.make_mesh() if mesh is None else mesh
  fn = _correct_fn(model, spec, mesh)
  variables, chips = distributed.on_mesh((variables, chips), mesh)
  correct = 0
  for x, y in distributed.global_batches(mesh, data.x_test, data.y_test,
                                         batch_size, key_or_seed=0,
                                         shuffle=False):
    correct += fn(variables, chips, x, y)
  return int(correct) / len(data.y_test)


# A few compiled programs per process, not one per chip setting forever:
# every kept program holds its own executable mappings, and a long sweep
# over chip settings would exhaust them (LLVM "Unable to allocate section
# memory").
_COMPILED = 8


@functools.lru_cache(maxsize=_COMPILED)
def program_fn(model, spec, mesh: jax.sharding.Mesh | None = None):
  """`rnn.program(model, variables, x, spec, key=key, mesh=mesh)` as a
  function of `(variables, x, key)`, compiled once per (model, spec, mesh).

  With the run's `mesh`, the tile axis of the network's one batched solve
  is split over its devices (`crossbar.solve`) and the solved chips come
  back replicated: every device reads the whole network. The weights and
  key must be on the mesh's devices (`distributed.on_mesh`)."""
  return jax.jit(lambda v, x, key: rnn.program(model, v, x, spec, key=key,
                                               mesh=mesh))


@functools.lru_cache(maxsize=_COMPILED)
def _correct_fn(model, spec, mesh):
  """`(variables, chips, x, y) -> images correct` (labels -1 skipped),
  replicated over `mesh`; compiled once per (model, spec, mesh)."""
  def correct(v, c, x, y):
    logits = rnn.apply(model, v, c, x, spec)
    return jnp.sum((jnp.argmax(logits, -1) == y) & (y >= 0))
  return jax.jit(correct, out_shardings=distributed.replicated(mesh))


def evaluate_on_chip(run: Setup, variables, spec, *, key,
                     energy: dict | None = None) -> float:
  """Programs one chip instance (calibrated on the run's calibration set)
  and returns its test accuracy; fills `energy` (if given) with
  `chip_energy` of the same programmed chip."""
  variables, key = distributed.on_mesh((variables, key), run.mesh)
  chips = program_fn(run.model, spec, run.mesh)(variables, run.calib,
                                                 key=key)
  if energy is not None:
    energy.update(chip_energy(run, variables, spec, chips=chips))
  return accuracy(run.model, variables, run.data, spec, chips=chips,
                  mesh=run.mesh)


@functools.lru_cache(maxsize=_COMPILED)
def _chips_fns(model, spec, mesh, per: int):
  """`evaluate_chips`' two programs for `per` chips on each device of
  `mesh`: `program(key, variables, x) -> chips` (chip `i` from
  `fold_in(key, i)`, the chip axis split over the mesh) and `count(chips,
  variables, x, y) -> [chips] images correct` (replicated)."""
  axis = distributed.AXIS
  P = jax.sharding.PartitionSpec  # pylint: disable=invalid-name

  def program_share(key, v, x):
    ids = jax.lax.axis_index(axis) * per + jnp.arange(per)
    keys = jax.vmap(jax.random.fold_in, (None, 0))(key, ids)
    return jax.vmap(lambda k: rnn.program(model, v, x, spec, key=k))(keys)

  def correct_share(chips, v, x, y):
    logits = jax.vmap(lambda c: rnn.apply(model, v, c, x, spec))(chips)
    return jnp.sum(jnp.argmax(logits, -1) == y, axis=-1)

  # Weights and images are arguments, not closed-over constants: XLA would
  # constant-fold everything that does not depend on the chip key (the
  # calibration images' patches and statistics), slowly, at compile time.
  program = jax.jit(jax.shard_map(
      program_share, mesh=mesh, in_specs=(P(), P(), P()),
      out_specs=P(axis), check_vma=False))
  count = jax.jit(jax.shard_map(
      correct_share, mesh=mesh, in_specs=(P(axis), P(), P(), P()),
      out_specs=P(axis), check_vma=False),
                  out_shardings=distributed.replicated(mesh))
  return program, count


# Calibration images whose layer inputs drive the array term of the energy.
_ENERGY_IMAGES = 16


def chip_energy(run: Setup, variables, spec, *, chips=None, key=None) -> dict:
  """Energy, latency and area per image of the network on the chip
  (`rxjax.energy.estimate`, ISAAC's components), as `summary.json` keeps
  it. The array term uses the programmed `chips` (or programs one with
  `key`) and the floating-point layer inputs of a few calibration images
  (one compile serves every chip of the run).
  """
  if chips is None:
    v, key = distributed.on_mesh((variables, key), run.mesh)
    chips = program_fn(run.model, spec, run.mesh)(v, run.calib, key=key)
  jax.block_until_ready(chips)  # The programming is the evaluation's.
  start = time.perf_counter()
  report = energy_lib.estimate(run.model, variables,
                               run.calib[:_ENERGY_IMAGES], spec, key=None,
                               chips=chips, inputs="digital")
  return {**report.summary(), "seconds": time.perf_counter() - start}


def _print_energy(mode: str, name: str, e: dict) -> None:
  parts = ", ".join(f"{k} {v * 1e6:.4g}" for k, v in
                    e["breakdown_j_per_image"].items()
                    if k not in ("buffer_read", "buffer_write"))
  print(f"  energy {mode} {name}: {e['j_per_image'] * 1e6:.4g} uJ/image "
        f"({parts} uJ), {e['s_per_image'] * 1e6:.4g} us/image, "
        f"{e['area_mm2']:.4g} mm^2 (estimated in {e['seconds']:.2f} s)",
        flush=True)


def evaluate_chips(run: Setup, variables, spec, *, key, n: int,
                   batch_size: int = 500) -> dict:
  """Accuracy over `n` chip instances, the chips split over `run.mesh`.

  Chip `i` is programmed with `fold_in(key, i)` wherever it is solved: the
  same key gives the same chips on any device count. The `n` chips are
  padded to a multiple of the mesh size (the extra chips are programmed
  and dropped); each device programs and reads its share, vmapped, on
  every test image. Each test batch is split into sub-batches of
  `batch_size / (chips per device)` images (at least 1) so that a device's
  chips' currents fit in memory.

  Returns:
    {"n", "mean", "std", "min", "max", "accuracies"}.
  """
  mesh = run.mesh
  per = distributed.padded_size(n, distributed.mesh_size(mesh)) // (
      distributed.mesh_size(mesh))
  program, count = _chips_fns(run.model, spec, mesh, per)
  key, variables = distributed.on_mesh((key, variables), mesh)
  chips = program(key, variables, run.calib)
  sub = max(1, batch_size // per)
  correct = 0
  data = run.data
  progress = Progress(f"{n} chips", len(data.y_test), unit="images")
  for x, y in data_lib.batches(data.x_test, data.y_test, sub,
                               key_or_seed=0, shuffle=False):
    correct += count(chips, variables, x, y)
    progress.update(len(y))
  acc = np.asarray(correct)[:n] / len(data.y_test)
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
  # Every field and every spec the run needs, before data or work directory
  # (config.json is written only once the config is valid).
  plan = validate.check(config)
  if config.mode == "retrain":
    _digital_source(config, workdir)  # Exists before any work.
  run = setup(config)
  wd = Workdir(workdir, config)
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
  else:  # "retrain" (validate.check knows the modes).
    variables = _load_digital(config, run, wd)
  summary = {"fp32": wd.result("fp32", lambda: accuracy(
      run.model, variables, run.data, None, mesh=run.mesh))}
  summary["ideal"], summary["nonideal"] = {}, {}
  summary["energy"] = {"ideal": {}, "nonideal": {}}
  for size in config.eval.tile_sizes:
    name = _cross(size)
    for mode in ("ideal", "nonideal"):
      spec = plan.eval_specs[(mode, size)]
      energy = {}
      summary[mode][name] = wd.result(f"{mode}/{name}", lambda: (
          evaluate_on_chip(run, variables, spec,
                           key=jax.random.fold_in(key, size), energy=energy)))
      print(f"  {mode} {name}: {summary[mode][name]:.4f}", flush=True)
      summary["energy"][mode][name] = wd.result(
          f"energy/{mode}/{name}", lambda: energy or chip_energy(
              run, variables, spec, key=jax.random.fold_in(key, size)))
      _print_energy(mode, name, summary["energy"][mode][name])
      wd.log(0, f"eval/{mode}/{name}", accuracy=summary[mode][name])
  final = variables
  size = plan.retrain_size  # retrain.tile_size, or chip.tile_size.
  spec = plan.retrain_spec
  if config.retrain.num_epochs > 0:
    final = train(config, run, wd, phase="retrain",
                  epochs=config.retrain.num_epochs,
                  learning_rate=config.retrain.learning_rate, spec=spec,
                  init=variables)
    energy = {}
    summary["retrained"] = {_cross(size): wd.result(
        f"retrained/{_cross(size)}", lambda: evaluate_on_chip(
            run, final, spec, key=jax.random.fold_in(key, size),
            energy=energy))}
    print(f"  retrained {_cross(size)}: "
          f"{summary['retrained'][_cross(size)]:.4f}", flush=True)
    summary["energy"]["retrained"] = {_cross(size): wd.result(
        f"energy/retrained/{_cross(size)}", lambda: energy or chip_energy(
            run, final, spec, key=jax.random.fold_in(key, size)))}
    _print_energy("retrained", _cross(size),
                  summary["energy"]["retrained"][_cross(size)])
  if config.eval.num_chips > 0:
    chips_spec = plan.chips_spec
    summary["chips"] = wd.result("chips", lambda: evaluate_chips(
        run, final, chips_spec, key=jax.random.fold_in(key, 10_000),
        n=config.eval.num_chips, batch_size=config.eval.batch_size))
    summary["chips"]["tile_size"] = size
    summary["chips"]["network"] = ("retrained" if
                                   config.retrain.num_epochs > 0 else
                                   "digital")
  summary["checkpoints"] = wd.checkpoints  # What the numbers came from.
  summary["devices"] = distributed.devices_info(run.mesh)
  summary["seconds"] = time.time() - start
  wd.write_json("summary.json", summary)
  print(table(summary))
  print(f"  wrote {os.path.join(wd.path, 'summary.json')} "
        f"({summary['seconds']:.0f} s)")
  return summary


def txsim_specs(config) -> dict:
  """Cross-Ideal and Cross-NI (spec, update) pairs of a txsim config
  (`validate.txsim_plan`: errors name the config field)."""
  return validate.txsim_plan(config)


def _txsim_accuracy(config, run: Setup, variables, spec) -> float:
  """A network trained on a chip, evaluated on that chip (forward reads;
  the backward pass does not matter here)."""
  return evaluate_on_chip(
      run, variables, spec.replace(backward="straight_through"),
      key=jax.random.fold_in(jax.random.key(config.seed), 1_000_003))


def _txsim(config, run: Setup, wd: Workdir, start: float) -> dict:
  """TxSim: digital, Cross-Ideal and Cross-NI training from one init."""
  t = config.txsim
  every = t.interval if t.g_eff == "interpolated" else 1
  summary = {}
  digital = train(config, run, wd, phase="digital", epochs=config.num_epochs,
                  learning_rate=config.learning_rate)
  summary["digital"] = wd.result("digital", lambda: accuracy(
      run.model, digital, run.data, None, mesh=run.mesh))
  for name, (spec, update) in txsim_specs(config).items():
    variables = train(config, run, wd, phase=name, epochs=config.num_epochs,
                      learning_rate=config.learning_rate, spec=spec,
                      update=update, program_every=every)
    summary[name] = wd.result(name, lambda: _txsim_accuracy(
        config, run, variables, spec))
    print(f"  {name}: {summary[name]:.4f}", flush=True)
  summary["checkpoints"] = wd.checkpoints
  summary["devices"] = distributed.devices_info(run.mesh)
  summary["seconds"] = time.time() - start
  wd.write_json("summary.json", summary)
  if wd.main:
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
    restored, digest = ckpt.restore(manager, step)  # Checksum verified.
  finally:
    manager.close()
  variables = jax.tree.map(jnp.asarray, dict(restored["variables"]))
  if (jax.tree.structure(variables) != jax.tree.structure(fresh)
      or jax.tree.map(jnp.shape, variables) != jax.tree.map(jnp.shape,
                                                            fresh)):
    raise ckpt.CheckpointError(f"checkpoint {path}/{step} does not match "
                               "the model of this config")
  finite.check("variables", variables, f"weights of checkpoint {path}/{step}",
               "the training that wrote it diverged: train again with a "
               "lower learning rate, or delete that step directory to use "
               "the previous checkpoint")
  _LOADED[os.path.abspath(path)] = {"step": int(step), "sha256": digest}
  return variables, step


# {checkpoint directory: {"step", "sha256"}} of what `_latest_variables`
# loaded: eval.json and summary.json name the checkpoint they came from.
_LOADED = {}


def _digital_source(config, workdir: str) -> str:
  """The digital checkpoint directory that mode "retrain" starts from.

  Raises:
    FileNotFoundError: it has no checkpoint (checked before any work).
  """
  source = config.init_workdir or workdir
  path = os.path.join(os.path.abspath(source), "checkpoints", "digital")
  if "digital" not in resume.finished_phases(os.path.abspath(source)):
    raise FileNotFoundError(
        f"mode 'retrain' needs a digital checkpoint: {path} has none (set "
        "--config.init_workdir to the work directory of a digital run)")
  return path


def _load_digital(config, run: Setup, wd: Workdir):
  path = _digital_source(config, wd.path)
  fresh = init_variables(run.model, run.data.x_train, config.seed)
  found = _latest_variables(path, fresh)
  if found is None:
    raise FileNotFoundError(
        f"mode 'retrain' needs a digital checkpoint: {path} has none (set "
        "--config.init_workdir to the work directory of a digital run)")
  wd.checkpoints["digital"] = {"path": path, **_LOADED[path]}
  return distributed.replicate(found[0], run.mesh)


# The checkpoint phase(s) whose networks each mode produces, as eval.py
# evaluates them.
_EVAL_PHASES = {"digital": ("digital",), "retrain": ("retrain",),
                "txsim": ("digital", "cross_ideal", "cross_ni")}


def _load_phase(wd: str, phase: str, fresh, mode: str):
  """(variables, "phase (epoch n)", {"phase", "step", "sha256"}) of a
  phase's latest checkpoint; a clear error naming the directory when it has
  none."""
  path = os.path.join(wd, "checkpoints", phase)
  found = _latest_variables(path, fresh)
  if found is None:
    there = sorted(p for p in os.listdir(os.path.join(wd, "checkpoints"))
                   if os.path.isdir(os.path.join(wd, "checkpoints", p)))
    raise FileNotFoundError(
        f"mode {mode!r} evaluates the {phase!r} network, but {path} holds no "
        f"checkpoint (this work directory has: {', '.join(there) or 'none'}); "
        "run train.py with this config and --workdir first, or set "
        "--config.mode to the mode the directory was trained in")
  variables, step = found
  network = f"{phase} (epoch {step})"
  print(f"  loaded {network} from {path}", flush=True)
  return variables, network, {"phase": phase, **_LOADED[os.path.abspath(path)]}


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """`eval.py`: the network(s) the config's mode produced, from the latest
  checkpoints of the work directory.

  mode "digital": the digital network; mode "retrain": the re-trained one
  (both as fp32, ideal, non-ideal and over `eval.num_chips` chips). mode
  "txsim": the digital network in fp32 and the networks trained on the
  Cross-Ideal and Cross-NI chips, each on its own chip, as
  `"digital"`, `"cross_ideal"` and `"cross_ni"` (as in summary.json).
  `"network"` / `"networks"` and `"checkpoint"` / `"checkpoints"` (step and
  checksum) say which checkpoint each came from. Writes `eval.json` and
  prints a Markdown table.
  """
  start = time.time()
  plan = validate.check(config, entry="evaluate")
  wd = os.path.abspath(workdir)
  if not os.path.isdir(os.path.join(wd, "checkpoints")):
    raise FileNotFoundError(
        f"{wd}/checkpoints does not exist: run train.py with this "
        "--workdir first")
  run = setup(config)
  fresh = init_variables(run.model, run.data.x_train, config.seed)
  loaded = {phase: _load_phase(wd, phase, fresh, config.mode)
            for phase in _EVAL_PHASES[config.mode]}
  if config.mode == "txsim":
    variables = loaded["digital"][0]
    result = {"networks": {p: n for p, (_, n, _) in loaded.items()},
              "checkpoints": {p: c for p, (_, _, c) in loaded.items()},
              "digital": accuracy(run.model, variables, run.data, None,
                                  mesh=run.mesh)}
    for name, (spec, _) in txsim_specs(config).items():
      result[name] = _txsim_accuracy(config, run, loaded[name][0], spec)
      print(f"  {name}: {result[name]:.4f}", flush=True)
    result["devices"] = distributed.devices_info(run.mesh)
    result["seconds"] = time.time() - start
    path = os.path.join(wd, "eval.json")
    if distributed.is_main():
      _write_json(path, result)
    print("| trained on | test accuracy |\n|---|---|\n" + "\n".join(
        f"| {k} | {result[k]:.4f} |" for k in ("digital", "cross_ideal",
                                                "cross_ni")))
    print(f"  wrote {path} ({result['seconds']:.0f} s)")
    return result
  (variables, network, checkpoint), = loaded.values()
  variables = distributed.replicate(variables, run.mesh)
  key = jax.random.key(config.seed)
  size = config.chip.tile_size
  name = _cross(size)
  result = {"network": network, "checkpoint": checkpoint,
            "fp32": accuracy(run.model, variables, run.data, None,
                             mesh=run.mesh)}
  result["energy"] = {}
  for mode in ("ideal", "nonideal"):
    spec = plan.eval_specs[(mode, size)]
    energy = {}
    result[mode] = {name: evaluate_on_chip(run, variables, spec,
                                           key=jax.random.fold_in(key, size),
                                           energy=energy)}
    print(f"  {mode} {name}: {result[mode][name]:.4f}", flush=True)
    result["energy"][mode] = {name: energy}
    _print_energy(mode, name, energy)
  if config.eval.num_chips > 0:
    result["chips"] = evaluate_chips(
        run, variables, plan.chips_spec,
        key=jax.random.fold_in(key, 10_000), n=config.eval.num_chips,
        batch_size=config.eval.batch_size)
    result["chips"]["tile_size"] = size
  result["devices"] = distributed.devices_info(run.mesh)
  result["seconds"] = time.time() - start
  path = os.path.join(wd, "eval.json")
  if distributed.is_main():
    _write_json(path, result)
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
