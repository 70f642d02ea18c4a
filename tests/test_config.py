"""Run configuration: YAML + ``key=value`` overrides, validated; every error names the offending key."""

from __future__ import annotations

import textwrap

import pytest

import darkknowledge as dk
from darkknowledge.config import ConfigError, TrainConfig, apply_overrides, load_config, parse_overrides


def _yaml(tmp_path, text: str):
    p = tmp_path / "cfg.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def test_defaults_and_valid_file(tmp_path):
    """A valid file loads into typed sections; omitted keys take their defaults; no distill section = no teacher."""
    cfg = load_config(_yaml(tmp_path, """
        name: t
        epochs: 3
        model: {name: mlp, args: {hidden: [30, 30]}}
        optim: {name: adam, lr: 0.001}
        distill: {teachers: [a.safetensors, b.safetensors], temperature: 20, combine: geometric}
    """))
    assert isinstance(cfg, TrainConfig)
    assert cfg.epochs == 3 and cfg.optim.name == "adam" and cfg.optim.lr == 0.001
    assert cfg.model.args == {"hidden": [30, 30]}
    assert cfg.distill.teachers == ["a.safetensors", "b.safetensors"] and cfg.distill.temperature == 20.0
    assert cfg.distill.w_soft == 1.0 and cfg.distill.kind == "ce"
    assert load_config(None).distill is None
    assert dk.load_config is load_config


def test_unknown_key_names_it(tmp_path):
    """A typo such as optim.lrr is an error naming the full dotted key, not silently ignored."""
    with pytest.raises(ConfigError, match=r"optim\.lrr") as e:
        load_config(_yaml(tmp_path, """
            optim: {lrr: 0.01}
        """))
    assert "unknown key" in str(e.value)
    with pytest.raises(ConfigError, match="epochz"):
        load_config(_yaml(tmp_path, "epochz: 3\n"))
    with pytest.raises(ConfigError, match=r"distill\.temprature"):
        load_config(_yaml(tmp_path, "distill: {teachers: [a], temprature: 3}\n"))


@pytest.mark.parametrize("text, key", [
    ("optim: {lr: fast}\n", "optim.lr"),
    ("epochs: many\n", "epochs"),
    ("epochs: 0\n", "epochs"),
    ("optim: {name: rmsprop}\n", "optim.name"),
    ("data: {fraction: 1.5}\n", "data.fraction"),
    ("distill: {teachers: [a], temperature: 0}\n", "distill.temperature"),
    ("distill: {temperature: 2}\n", "distill.teachers"),
    ("model: {args: 3}\n", "model.args"),
])
def test_wrong_type_or_value_names_key(tmp_path, text, key):
    with pytest.raises(ConfigError) as e:
        load_config(_yaml(tmp_path, text))
    assert key in str(e.value)


def test_overrides_apply(tmp_path):
    """key=value overrides (values parsed as YAML) reach nested sections, dict-valued model args and lists;
    they are merged into the file's values, not replacing whole sections."""
    path = _yaml(tmp_path, """
        optim: {name: sgd, lr: 0.1, momentum: 0.5}
        model: {name: mlp, args: {hidden: [800, 800], dropout: 0.2}}
    """)
    cfg = load_config(path, ["optim.lr=0.01", "model.args.hidden=[30,30]", "distill.teachers=[a.safetensors]"])
    assert cfg.optim.lr == 0.01 and cfg.optim.momentum == 0.5 and cfg.optim.name == "sgd"
    assert cfg.model.args == {"hidden": [30, 30], "dropout": 0.2}
    assert cfg.distill is not None and cfg.distill.teachers == ["a.safetensors"]
    assert cfg.distill.temperature == 4.0
    cfg2 = apply_overrides(cfg, ["distill.temperature=20", "data.exclude_classes=[3]", "name=x"])
    assert cfg2.distill.temperature == 20.0 and cfg2.distill.teachers == ["a.safetensors"]
    assert cfg2.data.exclude_classes == [3] and cfg2.name == "x"
    assert parse_overrides(["a.b.c=1", "a.b.d=x", "e="]) == {"a": {"b": {"c": 1, "d": "x"}}, "e": None}


def test_an_override_may_supply_a_field_the_file_leaves_out(tmp_path):
    """A file's ``distill:`` block without teachers plus ``--teacher`` (an override): valid once merged,
    as ``distill --config f --teacher t`` and ``sweep --teacher t`` pass it; without it the error names it."""
    path = _yaml(tmp_path, "distill: {temperature: 5, w_hard: 0.0}\n")
    cfg = load_config(path, ['distill.teachers=["t.safetensors"]'])
    assert cfg.distill.teachers == ["t.safetensors"] and cfg.distill.temperature == 5.0
    with pytest.raises(ConfigError, match="distill.teachers"):
        load_config(path)


@pytest.mark.parametrize("item, needle", [
    ("optim.lr", "key=value"),
    ("=0.1", "empty key"),
    ("optim.lr=[1,", "optim.lr"),
    ("optim.lrr=0.1", "optim.lrr"),
    ("optim.lr=abc", "optim.lr"),
    ("distill.temperature=2", "distill.teachers"),
])
def test_malformed_overrides(item, needle):
    """Malformed or invalid overrides raise ConfigError naming the problem."""
    with pytest.raises(ConfigError) as e:
        load_config(None, [item])
    assert needle in str(e.value)


def test_override_through_a_value_is_an_error():
    with pytest.raises(ConfigError, match="section"):
        parse_overrides(["optim=3", "optim.lr=0.1"])


def test_bad_files(tmp_path):
    """Missing file, invalid YAML and a non-mapping top level raise ConfigError."""
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="YAML"):
        load_config(_yaml(tmp_path, "optim: {lr: [\n"))
    with pytest.raises(ConfigError, match="mapping"):
        load_config(_yaml(tmp_path, "- 1\n- 2\n"))
    assert load_config(_yaml(tmp_path, "")).epochs == TrainConfig().epochs


def test_scientific_notation_floats():
    """1e-3 is a float. YAML 1.1 (PyYAML) reads '1e-3' as a *string*; typed fields coerce it back."""
    assert load_config(None, ["optim.lr=1e-3"]).optim.lr == pytest.approx(1e-3)


def test_scientific_notation_in_model_args():
    cfg = load_config(None, ["model.args.max_norm=1e-3"])
    assert isinstance(cfg.model.args["max_norm"], float)


def test_infinite_temperature_rejected():
    with pytest.raises(ConfigError, match="temperature"):
        load_config(None, ["distill.teachers=[a]", "distill.temperature=.inf"])


def test_same_config_ignores_where_the_data_lives_but_not_what_it_is():
    """The same files found through ``--data-dir`` or ``$DARKKNOWLEDGE_DATA`` are the same run; another
    dataset, split or subset is not."""
    from darkknowledge.config import same_config, validate

    cfg = validate({"data": {"dataset": "mnist", "data_dir": None, "val_size": 5000}})
    rec = cfg.model_dump()
    rec["data"] = {**rec["data"], "data_dir": "/elsewhere/shared/data"}
    assert same_config(rec, cfg)
    for key, value in (("dataset", "digits"), ("val_size", 1000), ("split_seed", 3), ("fraction", 0.5)):
        other = cfg.model_dump()
        other["data"] = {**other["data"], key: value}
        assert not same_config(other, cfg), key
