"""Evaluate the networks a training run produced, on simulated crossbars.

    python eval.py --config=configs/lenet_mnist.py --workdir=/tmp/lenet

Loads the latest checkpoint of the network the config's mode produced and
prints which one it loaded: mode "digital" the digital network, mode
"retrain" the re-trained one (both in floating point, on the Cross-ideal
chip, on the non-ideal chip without variation and over `eval.num_chips` chip
instances with variation in one vmapped call); mode "txsim" the digital
network and the networks trained on the Cross-Ideal and Cross-NI chips, each
on its own chip. Writes DIR/eval.json and prints a Markdown table.
"""

from rxjax import cli

if __name__ == "__main__":
  cli.run("evaluate")
