"""Explain images with a trained dxai model (the same as ``dxai-infer``); ``python infer.py --help``."""

import sys

from dxai.cli.infer import main

if __name__ == "__main__":
    sys.exit(main())
