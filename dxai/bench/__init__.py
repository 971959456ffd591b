"""Benchmarks: ``python -m dxai.bench {flops|cartoonx|train|infer|gpu|all} [--json]``.

Each benchmark is a module ``dxai.bench.<name>`` with a ``main(argv)`` that prints its
results (one JSON line with ``--json``).
"""

BENCHMARKS = ("flops", "cartoonx", "train", "infer", "gpu")
