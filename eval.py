"""Evaluate a DNN on simulated crossbars (placeholder until training lands).

Evaluation is not implemented yet (issue "DNNs on crossbars"); this script
says so and exits with code 2, whatever the arguments.
"""

import argparse
import sys


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      description="Evaluation on crossbars is not implemented yet (issue "
                  "\"DNNs on crossbars\").")
  parser.parse_known_args(argv)
  print("eval.py: evaluation is not implemented yet (issue \"DNNs on "
        "crossbars\"); nothing was evaluated.", file=sys.stderr)
  return 2


if __name__ == "__main__":
  sys.exit(main())
