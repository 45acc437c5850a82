"""Benchmarks and the GPU check, run by hand from the repository root as modules: ``python -m bench.<name>``.

They measure neobert_tasks (speed, memory, agreement of the attention backends) on the machine at hand and
are not part of the installed package; ``bench/README.md`` lists them with the figures of past runs.
``common.py``, ``interleave.py`` and ``routes.py`` are the helpers the scripts share.
"""
