"""Train, re-train and evaluate a network on simulated crossbars.

    python train.py --config=configs/lenet_mnist.py --workdir=/tmp/lenet

The config file says what runs (see its docstring); fields are overridden
with `--config.<field>=<value>`. Checkpoints, metrics.jsonl and
summary.json go to the work directory; run the same command again to resume.
"""

from rxjax import cli

if __name__ == "__main__":
  cli.run("train_and_evaluate")
