"""tuneserve's HTTP API and control plane.

Importing this package must stay light: no torch, vllm, deepspeed or ray at module load
(tests/unit/test_imports.py checks it). Import those inside the function that needs them.
"""

__version__ = "0.1.0"
