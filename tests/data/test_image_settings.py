"""Image settings from the backbone id alone (no weights built), equal to what the loaded backbone reports, so data
code can build its transforms without the model."""

from __future__ import annotations

import pytest

from clip_agiqa.backbone import image_settings_of, load_backbone
from clip_agiqa.data import MOSFolder
from clip_agiqa.errors import InputError
from clip_agiqa.frozen import ImageSettings


def test_a_random_preset_and_a_saved_folder_give_the_loaded_backbones_settings(tmp_path):
    loaded = load_backbone("random:tiny")
    assert image_settings_of("random:tiny") == loaded.image_settings == ImageSettings(32)
    loaded.clip.save_pretrained(tmp_path / "clip")
    loaded.tokenizer.save_pretrained(tmp_path / "clip")
    assert image_settings_of(str(tmp_path / "clip")) == load_backbone(str(tmp_path / "clip")).image_settings
    with pytest.raises(InputError, match="unknown random backbone preset"):
        image_settings_of("random:huge")


def test_a_datamodule_given_settings_builds_its_transforms_without_a_model(synthetic_root):
    data = MOSFolder(str(synthetic_root), num_workers=0, image_settings=image_settings_of("random:tiny"))
    data.setup("fit")
    assert data.make_dataset("train")[0]["image"].shape == (3, 32, 32)
