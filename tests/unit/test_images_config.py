"""The ``images:`` config section: the sample file states the defaults, mistakes name their key."""

from __future__ import annotations

import pytest
import yaml

from core.config import DEFAULT_CONFIG_PATH, ConfigError, ImagesConfig, load_config


def test_sample_yaml_images_block_is_the_defaults():
    block = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text(encoding="utf-8"))["images"]
    assert ImagesConfig.model_validate(block) == ImagesConfig()
    assert load_config().images == ImagesConfig()


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("images: {heigth: 32}\n", "images.heigth: unknown key"),
        ("images: {height: '32'}\n", "images.height: Input should be a valid integer"),
        ("images: {allowed_modes: [RGB, rgb]}\n", "images.allowed_modes"),
        ("images: {labels: [a, a]}\n", "images.labels"),
        ("images: {manifest: labels.txt}\n", "images.manifest"),
        ("images: {fit: squash}\n", "images.fit"),
        ("images: {phash_max_distance: 64}\n", "images.phash_max_distance"),
        ("images: {min_side: 100, max_side: 50}\n", "min_side 100 is above max_side 50"),
    ],
)
def test_images_mistakes_name_the_key(tmp_path, yaml_text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert expected in str(err.value)
