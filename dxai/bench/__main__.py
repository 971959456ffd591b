"""Dispatch ``python -m dxai.bench NAME [options]`` to ``dxai.bench.NAME.main(options)``.

``all`` runs every benchmark module that exists, in the order of ``BENCHMARKS``, with the
same options (e.g. ``--json``).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

from dxai.allocator import keep_freed_memory
from dxai.bench import BENCHMARKS


def available_benchmarks() -> list[str]:
    return [name for name in BENCHMARKS if importlib.util.find_spec(f"dxai.bench.{name}") is not None]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    choices = (*BENCHMARKS, "all")
    if not argv or argv[0] not in choices:
        print(f"usage: python -m dxai.bench {{{'|'.join(choices)}}} [--json] [options]", file=sys.stderr)
        return 2
    name, options = argv[0], argv[1:]
    keep_freed_memory()
    names = available_benchmarks() if name == "all" else [name]
    if name != "all" and name not in available_benchmarks():
        print(f"the {name} benchmark is not available (no module dxai.bench.{name})", file=sys.stderr)
        return 2
    status = 0
    for benchmark in names:  # a benchmark whose main returns a nonzero int (gpu without CUDA) sets the status
        result = importlib.import_module(f"dxai.bench.{benchmark}").main(options)
        status = max(status, result) if isinstance(result, int) and not isinstance(result, bool) else status
    return status


if __name__ == "__main__":
    sys.exit(main())
