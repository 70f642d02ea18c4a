"""Run configuration: YAML + ``key=value`` overrides, validated; every error names the offending key."""

from __future__ import annotations

import inspect
import json
import textwrap
from pathlib import Path

import pytest

import darkknowledge as dk
from darkknowledge.config import (
    ConfigError,
    KDArgs,
    TrainConfig,
    apply_overrides,
    load_config,
    parse_overrides,
    same_config,
)

REPO = Path(__file__).resolve().parents[1]


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
    assert cfg.distill.teachers == ["a.safetensors", "b.safetensors"] and cfg.method_args["temperature"] == 20.0
    assert cfg.method_args == {"temperature": 20.0, "w_soft": 1.0, "w_hard": 0.5, "kind": "ce"}  # kd's, filled in
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
    assert cfg.method_args["temperature"] == 4.0
    cfg2 = apply_overrides(cfg, ["distill.temperature=20", "data.exclude_classes=[3]", "name=x"])
    assert cfg2.method_args["temperature"] == 20.0 and cfg2.distill.teachers == ["a.safetensors"]
    assert cfg2.data.exclude_classes == [3] and cfg2.name == "x"
    assert parse_overrides(["a.b.c=1", "a.b.d=x", "e="]) == {"a": {"b": {"c": 1, "d": "x"}}, "e": None}


def test_an_override_may_supply_a_field_the_file_leaves_out(tmp_path):
    """A file's ``distill:`` block without teachers plus ``--teacher`` (an override): valid once merged,
    as ``distill --config f --teacher t`` and ``sweep --teacher t`` pass it; without it the error names it."""
    path = _yaml(tmp_path, "distill: {temperature: 5, w_hard: 0.0}\n")
    cfg = load_config(path, ['distill.teachers=["t.safetensors"]'])
    assert cfg.distill.teachers == ["t.safetensors"] and cfg.method_args == {"temperature": 5.0, "w_soft": 1.0,
                                                                             "w_hard": 0.0, "kind": "ce"}
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


# --------------------------------------------------------------------------- method settings: one route


OLD_KD = {"teachers": ["t.safetensors"], "combine": "arithmetic", "temperature": 8.0, "w_soft": 1.0, "w_hard": 0.3,
          "kind": "ce", "cache": True}


def test_kd_settings_are_method_args_and_the_old_distill_keys_migrate():
    """kd reads method_args like every method; a config written with distill.temperature / w_soft / w_hard / kind
    validates to the same config as the new form, and the two compare equal both ways (same_config)."""
    old = TrainConfig.model_validate({"distill": OLD_KD})
    new = TrainConfig.model_validate({"distill": {"teachers": ["t.safetensors"]},
                                      "method_args": {"temperature": 8, "w_hard": 0.3}})
    assert old == new and old.model_dump() == new.model_dump()
    assert new.method_args == {"temperature": 8.0, "w_soft": 1.0, "w_hard": 0.3, "kind": "ce"}
    assert set(new.model_dump()["distill"]) == {"teachers", "combine", "cache"}
    assert same_config({"distill": OLD_KD}, new) and same_config(new.model_dump(), old)
    assert not same_config({"distill": {**OLD_KD, "temperature": 4.0}}, new)
    # explicit kd; method_args win over the old keys (as they did); other methods never read them: dropped
    both = TrainConfig.model_validate({"distill": OLD_KD, "method": "kd", "method_args": {"temperature": 2}})
    assert both.method == "kd" and both.method_args["temperature"] == 2.0 and both.method_args["w_hard"] == 0.3
    sub = TrainConfig.model_validate({"distill": OLD_KD, "method": "subclass_kd", "method_args": {"alpha": 0.5}})
    assert sub.method_args == {"alpha": 0.5} and "temperature" not in sub.model_dump()["distill"]
    assert TrainConfig().method_args == {}  # no teacher, no kd


def test_kd_defaults_are_the_methods_own():
    """KDArgs fills in exactly the defaults of the kd method's constructor (no second set of numbers)."""
    from darkknowledge.methods import KD

    sig = inspect.signature(KD.__init__).parameters
    assert KDArgs().model_dump() == {k: sig[k].default for k in KDArgs.model_fields}


@pytest.mark.parametrize("args, needle", [
    ({"temperature": 0}, "method_args.temperature"),
    ({"w_soft": float("nan")}, "method_args.w_soft"),
    ({"kind": "mse"}, "method_args.kind"),
    ({"alpha": 0.5}, "method_args.alpha: unknown key"),
])
def test_kd_method_args_are_checked(args, needle):
    with pytest.raises(ConfigError, match="invalid config") as e:
        apply_overrides({"distill": {"teachers": ["t"]}}, {"method_args": args})
    assert needle in str(e.value)
    assert "\n" not in str(e.value).split(":\n", 1)[1]  # one line below the header


def test_old_style_overrides_reach_method_args():
    """``distill.temperature=20`` on the command line sets kd's method_args.temperature even over a config in the
    new form (whose completed method_args would otherwise win); for another method it is a one-line error naming
    the new route."""
    cfg = load_config(None, ["distill.teachers=[t]", "method_args.temperature=8"])
    assert cfg.method_args["temperature"] == 8.0
    assert apply_overrides(cfg, ["distill.temperature=20"]).method_args["temperature"] == 20.0
    assert apply_overrides(cfg, ["method_args.temperature=3"]).method_args["temperature"] == 3.0
    sub = apply_overrides(cfg, ["method=subclass_kd", "method_args={temperature: 4, alpha: 0.5}"])
    with pytest.raises(ConfigError, match=r"distill.w_hard: method 'subclass_kd' .* method_args") as e:
        apply_overrides(sub, ["distill.w_hard=0"])
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("record", ["results/demo/runs/distilled/run.json",
                                    "results/hinton-mnist/runs/distilled/distilled_T20_clip5_seed0/run.json",
                                    "results/hinton-mnist/runs/baseline/baseline_seed0/run.json"])
def test_committed_run_records_match_the_new_form(record):
    """Committed run records (written with distill.temperature etc.) validate and compare equal to the same run
    in the new form — built here by moving the keys by hand — so the experiments keep reusing them."""
    rec = json.loads((REPO / record).read_text())["config"]
    cfg = TrainConfig.model_validate(rec)
    assert same_config(rec, cfg)
    new = json.loads(json.dumps(rec))
    if new.get("distill"):
        assert "temperature" in new["distill"]  # the old form, really
        moved = {k: new["distill"].pop(k) for k in ("temperature", "w_soft", "w_hard", "kind")}
        new["method_args"] = {**moved, **new.get("method_args", {})}
    assert same_config(rec, TrainConfig.model_validate(new)) and same_config(new, cfg)
    assert TrainConfig.model_validate(new).method_args == new["method_args"]
    if new.get("distill"):  # another temperature is another run
        new["method_args"]["temperature"] += 1
        assert not same_config(rec, TrainConfig.model_validate(new))


def test_the_demo_builds_configs_equal_to_its_committed_records():
    """The demo's config functions today give the configs of its committed runs (records of the old form)."""
    from darkknowledge.experiments.demo import demo_configs

    for name, cfg in demo_configs("mnist", Path("results/demo/runs"), 0, False, None).items():
        rec = json.loads((REPO / "results/demo/runs" / name / "run.json").read_text())["config"]
        assert same_config(rec, TrainConfig.model_validate(cfg)), name
