"""What the energy estimate costs against the evaluation it accompanies.

    PYTHONPATH=. python benchmarks/energy_cost.py [--model lenet5]

For every chip the main job evaluates (Cross-ideal and non-ideal, Cross16 /
32 / 64), times `experiment.evaluate_on_chip` (programming and the test-set
accuracy, compiles included, as the main job pays them) and, on the same
programmed chips, `experiment.chip_energy`. Prints both and their ratio.
"""

import argparse
import time

import jax

from configs import lenet_mnist
from rxjax import experiment
from rxjax import nn as rnn


def main():
  parser = argparse.ArgumentParser()
  parser.add_argument("--model", default="lenet5")
  args = parser.parse_args()
  config = lenet_mnist.get_config()
  config.model = args.model
  run = experiment.setup(config)
  variables = experiment.init_variables(run.model, run.data.x_train, 0)
  total_eval = total_energy = 0.0
  print("| chip | evaluation s | energy estimate s | ratio |")
  print("|---|---|---|---|")
  for size in config.eval.tile_sizes:
    for mode in ("ideal", "nonideal"):
      spec = rnn.mode_spec(mode, experiment.chip_spec(
          config.chip, tile_size=size, variation=False))
      key = jax.random.key(size)
      start = time.perf_counter()
      chips = experiment.program_fn(run.model, spec)(variables, run.calib,
                                                     key=key)
      experiment.accuracy(run.model, variables, run.data, spec, chips=chips)
      t_eval = time.perf_counter() - start
      t_energy = experiment.chip_energy(run, variables, spec,
                                        chips=chips)["seconds"]
      total_eval += t_eval
      total_energy += t_energy
      print(f"| {mode} Cross{size} | {t_eval:.2f} | {t_energy:.3f} | "
            f"{100 * t_energy / t_eval:.2f}% |", flush=True)
  print(f"| all | {total_eval:.2f} | {total_energy:.3f} | "
        f"{100 * total_energy / total_eval:.2f}% |")


if __name__ == "__main__":
  main()
