"""The lwpd benchmarks: one script per area, and ``python -m benchmarks`` for one report.

Each ``bench_*.py`` runs on its own (``python benchmarks/bench_kernels.py --help``);
``python -m benchmarks`` runs them all and writes one Markdown report (see ``__main__``).
"""
