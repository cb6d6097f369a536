"""Straight-through vs circuit-aware re-training on one chip (issue 21.2).

    python benchmarks/circuit_retrain.py --config lowr128 --seeds 0 \\
        --backwards straight_through circuit circuit_interpolated

For each seed: the digital LeNet-5 of `benchmarks/retrain_study.py` (its
plan and seed, trained here or resumed from `--workdir`), its accuracy on
the chip configuration (`retrain_study.CONFIGS`) before re-training, with
the per-column gain fitted (the re-training default), and after 1 epoch of
re-training with each `retrain.backward` (`experiment.train`, Adam at the
config's `retrain.learning_rate`, chip programmed and calibrated at the
epoch start), with the seconds per re-training step. Also measures, once
per configuration, how far the interpolated gradient (the stored
distortion) and the straight-through one are from the exact one at the
start and at the end of a circuit re-training epoch: `||g - g_exact|| /
||g_exact||` of the loss' gradient w.r.t. all parameters on one training
batch, their cosine, the error after the best scale of `g`, and the norm
ratio.

Writes `circuit_retrain.json` in `--workdir`; prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import retrain_study  # noqa: E402  benchmarks/retrain_study.py
from rxjax import experiment  # noqa: E402
from rxjax import nn as rnn  # noqa: E402


def _grad_error(net, spec, variables, chips, x, y):
  """`||g_interp - g_exact|| / ||g_exact||` and the same for straight-through,
  of the loss' parameter gradient on one batch."""
  model = net.run.model

  def grad(backward):
    def loss(p):
      v = {**variables, "params": p}
      if backward == "straight_through":
        logits, _ = rnn.apply(model, v, chips, x, spec, refresh=True)
      else:
        logits = rnn.apply(model, v, chips, x, spec, backward=backward)
      return optax.softmax_cross_entropy_with_integer_labels(
          logits, y).mean()
    g = jax.jit(jax.grad(loss))(variables["params"])
    return np.concatenate([np.ravel(a) for a in jax.tree.leaves(g)])

  exact = grad("circuit")
  norm = np.linalg.norm(exact)
  out = {}
  for b in ("circuit_interpolated", "straight_through"):
    g = grad(b)
    out[b] = float(np.linalg.norm(g - exact) / norm)
    # Direction alone (Adam's steps hardly depend on a gradient's scale):
    # the cosine, and the relative error after the best scale of g.
    out[f"{b}_cosine"] = float(g @ exact / (np.linalg.norm(g) * norm))
    scale = float(g @ exact / (g @ g))
    out[f"{b}_scaled"] = float(np.linalg.norm(scale * g - exact) / norm)
    out[f"{b}_norm_ratio"] = float(np.linalg.norm(g) / norm)
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="lowr128",
                      choices=sorted(retrain_study.CONFIGS))
  parser.add_argument("--seeds", nargs="+", type=int, default=[0])
  parser.add_argument("--backwards", nargs="+",
                      default=["straight_through", "circuit"])
  parser.add_argument("--epochs", type=int, default=1)
  parser.add_argument("--workdir", default="/tmp/circuit_retrain")
  args = parser.parse_args()
  plan = retrain_study.PLANS["lenet5"]
  out = {"config": args.config, "label":
         retrain_study.CONFIGS[args.config]["label"], "seeds": {}}
  for seed in args.seeds:
    net = retrain_study.Net(plan, seed, args.workdir)
    spec = retrain_study.chip_spec(net.config, args.config, "column")
    row = {"fp32": net.fp32(),
           "before": net.on_chip(f"{args.config}/before",
                                 retrain_study.chip_spec(
                                     net.config, args.config, "none")),
           "before_column": net.on_chip(f"{args.config}/before_column", spec)}
    run = net.run
    steps = -(-len(run.data.y_train) // net.config.batch_size) * args.epochs
    x = jnp.asarray(run.data.x_train[:net.config.batch_size])
    y = jnp.asarray(run.data.y_train[:net.config.batch_size])
    for backward in args.backwards:
      phase = f"circuit_{args.config}_{backward}_e{args.epochs}"
      start = time.perf_counter()
      trained = []

      def train(backward=backward, phase=phase):
        v = experiment.train(net.config, run, net.wd, phase=phase,
                             epochs=args.epochs,
                             learning_rate=net.config.retrain.learning_rate,
                             spec=spec, init=net.variables,
                             backward=backward)
        trained.append(v)
        return {"seconds": time.perf_counter() - start}

      timing = net.result(f"{phase}/seconds", train)
      if not trained:  # Cached: the checkpoint is restored by `train`.
        trained.append(experiment.train(
            net.config, run, net.wd, phase=phase, epochs=args.epochs,
            learning_rate=net.config.retrain.learning_rate, spec=spec,
            init=net.variables, backward=backward))
      v = trained[0]
      row[backward] = net.on_chip(f"{phase}/after", spec, v)
      row[f"{backward}_fp32"] = net.fp32(v, f"{phase}/fp32")
      row[f"{backward}_s_per_step"] = timing["seconds"] / steps
      if backward == "circuit" and seed == args.seeds[0]:
        key = net.chip_key()
        for when, w in (("start", net.variables), ("end", v)):
          chips = experiment.program_fn(run.model, spec)(w, run.calib,
                                                         key=key)
          row[f"grad_error_{when}"] = net.result(
              f"{phase}/grad_error_{when}",
              lambda w=w, chips=chips: _grad_error(net, spec, w, chips, x, y))
    out["seeds"][str(seed)] = row
    print(json.dumps(row), flush=True)
  path = os.path.join(args.workdir, f"circuit_retrain_{args.config}.json")
  with open(path, "w") as f:
    json.dump(out, f, indent=1)
  rows = out["seeds"].values()
  keys = ["fp32", "before", "before_column"] + list(args.backwards)
  print(f"\n{out['label']}, LeNet-5, {args.epochs} epoch(s) re-training, "
        f"seeds {args.seeds}: mean +- std")
  print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
  cells = []
  for k in keys:
    a = np.array([r[k] for r in rows])
    cells.append(f"{a.mean():.4f} +- {a.std(ddof=1) if len(a) > 1 else 0:.4f}")
  print("| " + " | ".join(cells) + " |")
  for b in args.backwards:
    s = np.mean([r[f"{b}_s_per_step"] for r in rows])
    print(f"  {b}: {s:.3f} s per step (whole epoch incl. evaluation / steps)")
  print(f"  wrote {path}")


if __name__ == "__main__":
  main()
