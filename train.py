"""Train a DNN on simulated crossbars (placeholder until training lands).

    python train.py

Training is not implemented yet (issue "DNNs on crossbars"). Until it is,
`python train.py` with no arguments runs the 64 x 64 tile IR-drop demo
(`rxjax.demo`); any argument is refused with exit code 2 rather than ignored.
"""

import argparse
import sys


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      description="Training on crossbars is not implemented yet (issue "
                  "\"DNNs on crossbars\"). Without arguments this runs the "
                  "64x64 tile IR-drop demo.")
  _, extra = parser.parse_known_args(argv)
  if extra:
    print(f"train.py: training is not implemented yet (issue \"DNNs on "
          f"crossbars\"); refusing arguments {' '.join(extra)}. Run "
          "`python train.py` without arguments for the 64x64 tile demo.",
          file=sys.stderr)
    return 2
  from rxjax import demo
  demo.main()
  return 0


if __name__ == "__main__":
  sys.exit(main())
