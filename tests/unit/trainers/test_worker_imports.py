"""A training worker hides mlflow from DeepSpeed's import (its autotuner would load it: 4 s of the worker's
start); the module imports as usual afterwards, and one imported before is left alone."""

from __future__ import annotations

import sys

import pytest

from trainers.lora_sft import _hidden


def test_a_hidden_module_fails_to_import_inside_and_imports_after() -> None:
    sys.modules.pop("colorsys", None)
    with _hidden("colorsys"), pytest.raises(ImportError):
        import colorsys  # noqa: F401
    import colorsys

    assert colorsys.rgb_to_hsv(1, 0, 0) == (0, 1, 1)


def test_a_module_imported_before_is_left_alone() -> None:
    import colorsys

    with _hidden("colorsys"):
        import colorsys as again

    assert again is colorsys and sys.modules["colorsys"] is colorsys
