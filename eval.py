"""Evaluate a trained network on simulated crossbars.

    python eval.py --config=configs/lenet_mnist.py --workdir=/tmp/lenet

Evaluates the latest checkpoint in the work directory (the re-trained one
when there is one) in floating point, on the Cross-ideal chip, on the
non-ideal chip without variation and over `eval.num_chips` chip instances
with variation in one vmapped call; writes DIR/eval.json and prints a
Markdown table.
"""

from rxjax import cli

if __name__ == "__main__":
  cli.run("evaluate")
