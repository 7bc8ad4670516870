"""The lake the CLI tests of the image kinds start from: the sample config with extra
``models:`` entries, 40 posts and 48 images sampled, the images cleaned and encoded."""

from __future__ import annotations

from pathlib import Path

from shardforge.cli import main

ROOT = Path(__file__).resolve().parents[2]


def image_lake(tmp: Path, models_yaml: str) -> tuple[Path, list[str]]:
    """``(lake folder, ["--config", …, "--lake", …])`` of a lake under ``tmp`` whose config
    is ``conf/sample.yaml`` (spec paths made absolute) with ``models_yaml`` prepended to
    its ``models:``, after ``sample``, ``images`` and ``encode --dataset images``."""
    text = (ROOT / "conf" / "sample.yaml").read_text(encoding="utf-8")
    text = text.replace("feature_spec: features/posts.yaml",
                        f"feature_spec: {ROOT / 'conf/features/posts.yaml'}")
    text = text.replace("spec: features/images.yaml", f"spec: {ROOT / 'conf/features/images.yaml'}")
    assert "\nmodels:\n" in text
    text = text.replace("\nmodels:\n", "\nmodels:\n" + models_yaml.lstrip("\n"), 1)
    config = tmp / "config.yaml"
    config.write_text(text, encoding="utf-8")
    common = ["--config", str(config), "--lake", str(tmp / "lake")]
    assert main(["sample", *common, "--posts", "40", "--images", "48"]) == 0
    assert main(["images", *common]) == 0
    assert main(["encode", *common, "--dataset", "images"]) == 0
    return tmp / "lake", common
