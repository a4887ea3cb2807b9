"""What a base model folder takes as input, read from its config (once per folder, but not before the folder
is built)."""

from __future__ import annotations

import json
from pathlib import Path

from service.models.base_models import modalities


def test_a_vision_tower_in_the_config_means_images(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"vision_config": {}, "text_config": {}}))
    assert modalities(tmp_path) == ["text", "image"]


def test_a_folder_not_built_yet_is_text_until_its_config_appears(tmp_path: Path) -> None:
    assert modalities(tmp_path) == ["text"]
    (tmp_path / "config.json").write_text("{not json")
    assert modalities(tmp_path) == ["text"]
    (tmp_path / "config.json").write_text(json.dumps({"vision_config": {}}))
    assert modalities(tmp_path) == ["text", "image"]  # the failed reads were not remembered
