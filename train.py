"""Train dxai on a data set (the same as ``dxai-train``); ``python train.py --help`` for the flags."""

import sys

from dxai.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
