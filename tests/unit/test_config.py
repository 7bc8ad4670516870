"""The typed config: the embedded default loads, and every mistake names its key."""

from __future__ import annotations

import pytest

from core.config import DEFAULT_CONFIG_PATH, ConfigError, load_config


def test_embedded_default_loads_with_every_section():
    cfg = load_config()
    assert cfg.source == str(DEFAULT_CONFIG_PATH)
    assert cfg.spark.master.startswith("local")
    assert set(cfg.corpora) == {"feeds", "articles", "images"}
    assert cfg.models["lm"].preset == "tiny"
    assert cfg.resolve_path(cfg.feature_spec).is_file()


def test_lake_override_replaces_root_only(tmp_path):
    cfg = load_config(lake_root=str(tmp_path))
    assert cfg.lake.root == str(tmp_path)
    assert cfg.spark.database == "shardforge"


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("spark:\n  mastr: local[1]\n", "spark.mastr: unknown key"),
        ("spark:\n  master: 3\n", "spark.master: Input should be a valid string"),
        ("sample:\n  posts: many\n", "sample.posts: Input should be a valid integer"),
        ("sample:\n  dt: 2026-13-01\n", "month must be in 1..12"),
        ("sample:\n  dt: '2026-13-01'\n", "sample.dt"),
        ("corpora:\n  feeds: {format: csv}\n", "corpora.feeds.format"),
        ("dataset:\n  splits: {train: 0.5, eval: 0.4}\n", "dataset.splits"),
        ("dataset:\n  shards: {train: 0, eval: 1}\n", "shards.train must be >= 1, got 0"),
        ("dataset:\n  shards: {train: 2}\n", "must name the same splits"),
        ("lake: [1, 2]\n", "lake"),
        ("- just a list\n", "expected a mapping"),
        ("spark: {master: [unclosed\n", "not valid YAML"),
        ("models:\n  a: {train: {init_from: a}}\n", "models: Value error, a.train.init_from: a cycle a -> a"),
        ("models:\n  a: {train: {init_from: b}}\n  b: {train: {init_from: a}}\n",
         "a cycle a -> b -> a"),
        ("models:\n  vq: {kind: vqvae}\n  m: {train: {init_from: vq}}\n",
         "m.train.init_from: 'vq' is a vqvae model"),
        ("models:\n  vq: {kind: vqvae, train: {init_from: m}}\n  m: {}\n",
         "vq.train.init_from: 'vq' is a vqvae model"),
        ("models:\n  prior: {tokens_of: gan}\n", "prior.tokens_of: 'gan' is no such model"),
        ("models:\n  lm: {}\n  prior: {tokens_of: lm}\n", "prior.tokens_of: 'lm' is a lm model"),
        ("models:\n  gan: {kind: vqgan}\n  p: {kind: vae, tokens_of: gan}\n",
         "p.tokens_of: a vae model; only an lm"),
    ],
)
def test_mistakes_name_the_key(tmp_path, yaml_text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_unquoted_yaml_dates_are_partitions(tmp_path):
    path = tmp_path / "dates.yaml"
    path.write_text("corpora:\n  feeds: {format: feed_dump, dt: [2026-11-01]}\nsample: {dt: 2026-11-02}\n")
    cfg = load_config(path)
    assert cfg.corpora["feeds"].dt == ["2026-11-01"]
    assert cfg.sample.dt == "2026-11-02"


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "nope.yaml")


def test_models_train_after_the_model_their_init_from_names(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text("models:\n  heads: {train: {init_from: lm}}\n  other: {}\n"
                    "  lm: {}\n  warm: {train: {init_from: /ckpts/run-1}}\n")
    cfg = load_config(conf)
    assert cfg.train_order() == ["lm", "heads", "other", "warm"]
    assert [cfg.init_from_model(m) for m in cfg.models] == ["lm", None, None, None]
    assert load_config().train_order() == ["lm", "medusa"]  # the sample's Medusa-1 entry


def test_init_from_a_model_means_its_run_of_this_run_id_else_its_latest(tmp_path):
    from core.lake import Lake
    from shardforge.training import resolve_init_from

    conf = tmp_path / "c.yaml"
    conf.write_text("models:\n  lm: {}\n  heads: {train: {init_from: lm}}\n"
                    "  warm: {train: {init_from: /ckpts/run-1}}\n")
    cfg, lake = load_config(conf), Lake(str(tmp_path / "lake"))
    with pytest.raises(FileNotFoundError, match="model 'lm' has no run yet"):
        resolve_init_from(cfg, lake, "heads", run_id="run-b")
    for run in ("run-a", "run-b", "run-c"):
        path = lake.local_path(lake.model_run("lm", run)) / "ckpt.pt"
        path.parent.mkdir(parents=True)
        path.write_bytes(b"")
    assert resolve_init_from(cfg, lake, "heads", run_id="run-b").endswith("/lm/run-b/ckpt.pt")
    assert resolve_init_from(cfg, lake, "heads", run_id="run-x").endswith("/lm/run-c/ckpt.pt")
    assert resolve_init_from(cfg, lake, "warm", run_id="run-x") == "/ckpts/run-1"  # as written
    assert resolve_init_from(cfg, lake, "lm", run_id="run-x") is None
    (lake.local_path(lake.model_run("lm", "run-d"))).mkdir()  # a run that died before saving
    with pytest.raises(FileNotFoundError, match="has no checkpoint"):
        resolve_init_from(cfg, lake, "heads", run_id="run-x")


@pytest.mark.parametrize(
    ("models_yaml", "expected"),
    [
        ("  lm: {kind: gpt}\n", "models.lm.kind: Value error, unknown model kind 'gpt'"),
        ("  lm: {model: {n_hed: 4}}\n", "models.lm.model.n_hed"),
        ("  lm: {train: {lr: -1}}\n", "models.lm.train.lr"),
        ("  lm: {train: {stpes: 3}}\n", "models.lm.train.stpes"),
        ("  lm: {preset: enormous}\n", "models.lm.preset"),
        ("  vq: {kind: vqvae, model: {codebook_size: 0}}\n", "models.vq"),
        ("  net: {kind: efficientnet}\n", "no image_dataset section"),
    ],
)
def test_model_blocks_are_checked_when_the_file_loads(tmp_path, models_yaml, expected):
    path = tmp_path / "bad.yaml"
    images = "image_dataset: {}\n" if "vqvae" in models_yaml else ""
    path.write_text(images + "models:\n" + models_yaml, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and expected in str(err.value)
    assert "\n" not in str(err.value)


def test_a_copy_of_the_sample_elsewhere_fails_at_load_naming_the_spec(tmp_path):
    copy = tmp_path / "copied.yaml"
    copy.write_text(DEFAULT_CONFIG_PATH.read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"feature_spec: features/posts.yaml does not exist"):
        load_config(copy)


def test_paths_are_absolute_once_loaded_and_unset_specs_are_the_embedded_ones(tmp_path):
    cfg = load_config()
    assert cfg.feature_spec == str(DEFAULT_CONFIG_PATH.parent / "features" / "posts.yaml")
    assert cfg.image_dataset.spec == str(DEFAULT_CONFIG_PATH.parent / "features" / "images.yaml")
    bare = tmp_path / "bare.yaml"
    bare.write_text("image_dataset: {name: pics}\n", encoding="utf-8")
    loaded = load_config(bare)
    assert loaded.feature_spec == cfg.feature_spec and loaded.image_dataset.spec == cfg.image_dataset.spec


def test_a_config_that_is_not_utf8_names_the_file(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("sample: {dt: '2026-11-01'}  # caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1.yaml: not UTF-8 text"):
        load_config(path)


def test_an_lm_with_tokens_of_trains_after_its_vq_model_on_its_codebook(tmp_path):
    from core.model_entries import model_configs
    from shardforge.pipeline import declared_stages

    conf = tmp_path / "c.yaml"
    conf.write_text("image_dataset: {name: images}\n"
                    "models:\n  prior: {preset: tiny, tokens_of: gan}\n  lm: {preset: tiny}\n"
                    "  gan: {kind: vqgan, preset: tiny, model: {codebook_size: 40}}\n")
    cfg = load_config(conf)
    assert cfg.train_order() == ["gan", "prior", "lm"]
    prior, _ = model_configs(cfg, "prior")
    assert prior.vocab_size == 40 + 3  # the codes shifted past pad, bos, eos
    assert model_configs(cfg, "lm")[0].vocab_size != prior.vocab_size  # the posts' tokenizer
    stage = {s.name: s for s in declared_stages(cfg)}["train_prior"]
    assert stage.after == ("train_gan",) and stage.inputs == ("records/gan-tokens",)


def test_tokens_of_reads_this_runs_codes_else_the_newest_committed(tmp_path):
    from core.lake import Lake
    from shardforge.training import tokens_dataset_uri

    lake = Lake(str(tmp_path / "lake"))
    with pytest.raises(FileNotFoundError, match="run `shardforge tokens gan` first"):
        tokens_dataset_uri(lake, "gan", run_id="r2")
    for run in ("r1", "r2", "r3"):
        folder = lake.local_path(lake.records("gan-tokens", run))
        folder.mkdir(parents=True)
        if run != "r3":  # r3's export never committed
            (folder / "_SUCCESS").write_text("")
    assert lake.committed_versions("gan-tokens") == ["r1", "r2"]
    assert tokens_dataset_uri(lake, "gan", run_id="r1") == lake.records("gan-tokens", "r1")
    assert tokens_dataset_uri(lake, "gan", run_id="r9") == lake.records("gan-tokens", "r2")
    assert tokens_dataset_uri(lake, "gan") == lake.records("gan-tokens", "r2")
