"""Helpers shared by the test layers (core, faces, tiers, proofs).

Importable from every test directory as ``support.<module>``: pytest puts
``tests/`` on ``sys.path`` (``pythonpath`` in pyproject.toml); subprocesses
that need it get ``tests/`` on their ``PYTHONPATH``.
"""
