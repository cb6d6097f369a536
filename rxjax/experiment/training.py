"""Training: the optimizer, the jitted training step and the epoch loop,
digital, RxNN re-training (crossbar forward, floating-point backward) and
TxSim training on a chip (transposed-read backward, device update).

Checkpoints are saved every epoch with their checksums
(`rxjax.checkpoints`) and a run resumes from the latest.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp

from rxjax import checkpoints as ckpt
from rxjax import crossbar
from rxjax import device as device_lib
from rxjax import distributed
from rxjax import nn as rnn
from rxjax import optim
from rxjax.experiment import keys
from rxjax.experiment.evaluation import accuracy, program_fn
from rxjax.experiment.progress import Progress
from rxjax.experiment.run import Setup, init_variables
from rxjax.experiment.workdir import Workdir


def optimizer(config: ml_collections.ConfigDict, steps_per_epoch: int,
              epochs: int,
              learning_rate: float) -> optax.GradientTransformation:
  """The config's optimizer (`optimizer`: "sgd" with `momentum`, or "adam";
  `weight_decay` added first) on a cosine decay of `learning_rate` over
  `epochs * steps_per_epoch` steps: what `train` runs."""
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


def _summed_cross_entropy(logits, labels):
  """Sum over the rows with a label >= 0 (-1: padding of a short batch,
  `distributed.global_batches`)."""
  real = labels >= 0
  ce = optax.softmax_cross_entropy_with_integer_labels(
      logits, jnp.where(real, labels, 0))
  return jnp.sum(jnp.where(real, ce, 0))


def _cross_entropy(logits, labels):
  """Mean over the rows with a label >= 0."""
  return _summed_cross_entropy(logits, labels) / jnp.maximum(
      jnp.sum(labels >= 0), 1)


def _accuracy(logits, labels):
  """Fraction correct of the rows with a label >= 0."""
  real = labels >= 0
  return jnp.sum((jnp.argmax(logits, -1) == labels) & real) / jnp.maximum(
      jnp.sum(real), 1)


def restore_or(manager: ocp.CheckpointManager, fresh, what: str,
               workdir: Workdir | None = None):
  """(state, epoch) from the latest checkpoint of `manager` (restored into
  the structure and placement of `fresh`), or (fresh, 0); verified against
  its checksum (`rxjax.checkpoints`). `what` names the phase in errors and
  in `workdir.checkpoints`."""
  step = manager.latest_step()
  if step is None:
    return fresh, 0
  state, digest = ckpt.restore(manager, step, fresh, what=what)
  if workdir is not None:
    workdir.checkpoints[what] = {"step": int(step), "sha256": digest}
  return state, int(step)


def checkpoint_manager(workdir: Workdir, phase: str) -> ocp.CheckpointManager:
  """The checkpoints of one phase of a run: `<workdir>/checkpoints/<phase>`,
  the latest two steps kept."""
  return ocp.CheckpointManager(
      os.path.join(workdir.path, "checkpoints", phase),
      options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True))


# `config.grad_blocks` where a config leaves it out (configs/lenet_mnist.py).
GRAD_BLOCKS = 4


def train_step(model, opt: optax.GradientTransformation,
               spec: crossbar.ChipSpec | None = None, *, has_stats: bool = False,
               program: bool = False, mesh: jax.sharding.Mesh | None = None,
               backward: str = "straight_through",
               grad_blocks: int = GRAD_BLOCKS):
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

  `backward` (`config.retrain.backward`): "straight_through" as above;
  "circuit" / "circuit_interpolated" read the current weights on `chips`
  (their calibration kept, `G_eff` solved exactly every step or from the
  stored distortion) and differentiate the loss through the linear read,
  `G_eff` and the mapping (`rxjax.circuit_grad`); `chips` come back as
  they went in.

  Data-parallel over `mesh` (DESIGN 6): pass `x` and `y` split over its
  axis (`distributed.global_batches`) and the rest replicated; every output
  comes back replicated and every device applies the same update. Labels
  -1 mark padding rows, which count for nothing.

  The gradient is the same on every device count that divides
  `grad_blocks` (`config.grad_blocks`), bit for bit: the batch is cut into
  `distributed.gradient_blocks(grad_blocks, mesh)` equal blocks (0: no
  blocks, XLA's all-reduce as below, what rxjax did before), each
  device differentiates its blocks one by one (the same shapes, so the
  same kernels and roundings, whatever the device count; XLA:CPU's
  products round differently for a different number of rows), and the
  blocks' gradients are gathered and added in a fixed order
  (`distributed.block_sum`). The batch must split into those blocks. Steps
  whose forward pass couples the rows of a batch (batch statistics, or
  `program=True`, which calibrates on the batch) and the circuit-aware
  backwards (whose solve's derivative would be repeated per block) take the
  whole local batch at once and let XLA's all-reduce sum the gradient:
  equal across device counts to float rounding only.
  """
  mutable = ["batch_stats"] if has_stats else []
  if program and spec is None:
    raise ValueError("`program=True` needs a chip `spec`")
  if backward != "straight_through" and (spec is None or program):
    raise ValueError(f"`backward` = {backward!r} needs a chip `spec` and "
                     "programmed chips (not `program=True`)")

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
    elif backward != "straight_through":
      out = rnn.apply(model, v, chips, x, spec, backward=backward,
                      mutable=mutable, **kw)
      logits, new = out if mutable else (out, {})
    else:
      logits, new = rnn.apply(model, v, chips, x, spec, refresh=True,
                              mutable=mutable, **kw)
    return _cross_entropy(logits, y), (logits, new)

  blocks = distributed.gradient_blocks(grad_blocks, mesh)
  blocked = bool(blocks) and not (has_stats or program
                                  or backward != "straight_through")

  def block_loss(params, variables, chips, x, y, count):
    # One block's share of the batch's mean loss: its labelled rows' summed
    # cross-entropy over the batch's count of labelled rows.
    v = {**variables, "params": params}
    logits = (model.apply(v, x, train=True) if spec is None else
              rnn.apply(model, v, chips, x, spec, train=True))
    return _summed_cross_entropy(logits, y) / count, logits

  def blocked_grad(params, variables, chips, x, y, axis):
    # (loss, logits, grads, chips) of the batch from its blocks; `axis`: the
    # mesh axis `x` and `y` are split over here (inside shard_map), or None.
    if spec is not None:
      # The current weights onto the chips with the stored distortion, once
      # (it does not depend on the inputs); every block reads them.
      _, new = rnn.apply(model, {**variables, "params": params}, chips,
                         x[:1], spec, refresh=True, train=True)
      chips = new[rnn.COLLECTION]
    count = jnp.sum(y >= 0)
    if axis is not None:
      count = jax.lax.psum(count, axis)
    count = jnp.maximum(count, 1).astype(jnp.float32)
    here = blocks // (1 if axis is None else distributed.mesh_size(mesh))
    xb = x.reshape((here, -1) + x.shape[1:])
    yb = y.reshape((here, -1))
    grad_fn = jax.value_and_grad(block_loss, has_aux=True)
    # A Python loop, not lax.map or vmap: a vmap merges the blocks into
    # larger products (other roundings) and XLA:CPU runs a loop's body
    # several times slower; unrolled blocks cost about one whole-batch step.
    outs = [grad_fn(params, variables, chips, xb[i], yb[i], count)
            for i in range(here)]
    (loss, logits), grads = jax.tree.map(lambda *a: jnp.stack(a), *outs)
    if axis is not None:
      gather = lambda a: jax.lax.all_gather(a, axis, tiled=True)
      loss, logits, grads = jax.tree.map(gather, (loss, logits, grads))
    logits = logits.reshape((-1,) + logits.shape[2:])
    return (distributed.block_sum(loss), logits,
            distributed.block_sum(grads), chips)

  def value_and_grad(variables, chips, x, y):
    # ((loss, (logits, new collections)), grads) of the step.
    params = variables["params"]
    if not blocked:
      return jax.value_and_grad(loss_fn, has_aux=True)(
          params, variables, chips, x, y)
    if x.shape[0] % blocks:
      raise ValueError(
          f"a batch of {x.shape[0]} rows does not split into the step's "
          f"{blocks} gradient blocks (`grad_blocks`): pad it "
          "(distributed.global_batches(multiple=))")
    fn = functools.partial(blocked_grad, axis=None)
    if mesh is not None:
      rep, rows = jax.sharding.PartitionSpec(), jax.sharding.PartitionSpec(
          distributed.AXIS)
      # Every output is the same on every device (gathered, or computed
      # from replicated inputs only), which the varying-axes check cannot
      # see through the gathers' tree sum.
      fn = jax.shard_map(functools.partial(blocked_grad,
                                           axis=distributed.AXIS),
                         mesh=mesh, in_specs=(rep, rep, rep, rows, rows),
                         out_specs=rep, check_vma=False)
    loss, logits, grads, chips = fn(params, variables, chips, x, y)
    new = {} if spec is None else {rnn.COLLECTION: chips}
    return (loss, (logits, new)), grads

  def step(state, chips, x, y):
    variables, opt_state = state["variables"], state["opt_state"]
    (loss, (logits, new)), grads = value_and_grad(variables, chips, x, y)
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
          on_epoch: Callable[[int, dict], Any] | None = None,
          backward: str = "straight_through") -> dict:
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
  `backward` (`config.retrain.backward`, `train_step`): the re-training
  gradient, "straight_through" or circuit-aware.

  Returns:
    The trained variables.
  """
  model, data = run.model, run.data
  variables = init if init is not None else init_variables(
      model, data.x_train, config.seed)
  steps_per_epoch = math.ceil(len(data.x_train) / config.batch_size)
  opt = optimizer(config, steps_per_epoch, epochs, learning_rate)
  if update is not None:
    # Raw uint32 key: the optimizer state is checkpointed.
    opt = optax.chain(opt, optim.apply_device_response(
        update, spec.device if spec is not None else None,
        key=keys.update_key(config.seed)))
  mesh = run.mesh
  fresh = distributed.replicate(
      {"variables": variables, "opt_state": opt.init(variables["params"])},
      mesh)
  manager = checkpoint_manager(workdir, phase)
  state, start = restore_or(manager, fresh, phase, workdir)
  if start:
    print(f"  {phase}: resumed after epoch {start}", flush=True)
    # Lines of the epoch the killed run did not finish: redone now.
    workdir.supersede_metrics(
        lambda r: r.get("phase") in (phase, f"{phase}/steps")
        and r.get("step", 0) > start * steps_per_epoch)
  has_stats = "batch_stats" in variables
  grad_blocks = config.get("grad_blocks", GRAD_BLOCKS)
  step = train_step(model, opt, spec, has_stats=has_stats, mesh=mesh,
                    backward=backward, grad_blocks=grad_blocks)
  exact_step = None
  if spec is not None and program_every:
    exact_step = train_step(model, opt, spec, has_stats=has_stats,
                            program=True, mesh=mesh)

  program = None
  chip_key = distributed.replicate(
      keys.chip_key(config.seed), mesh)
  if spec is not None:
    program = functools.partial(program_fn(model, spec, mesh), key=chip_key)
  progress = Progress(phase, (epochs - start) * steps_per_epoch)
  log_every = config.log_every_steps
  # Every data-parallel step has an all-reduce: the loop stays at most a
  # few steps ahead of the devices (`distributed.Pace`: XLA:CPU hangs when
  # it runs far ahead).
  pace = distributed.Pace()
  for epoch in range(start, epochs):
    key = keys.epoch_key(config.seed, epoch)
    chips = None
    if program is not None and not program_every:
      chips = program(state["variables"], run.calib)
    losses, accs = [], []
    for i, (x, y) in enumerate(distributed.global_batches(
        mesh, data.x_train, data.y_train, config.batch_size,
        key_or_seed=key,
        multiple=max(distributed.gradient_blocks(grad_blocks, mesh), 1))):
      if exact_step is not None and i % program_every == 0:
        state, chips, loss, acc = exact_step(state, chip_key, x, y)
      else:
        state, chips, loss, acc = step(state, chips, x, y)
      losses.append(pace(loss))
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

