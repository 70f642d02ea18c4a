"""``darkknowledge reproduce hinton-mnist``: the bias-shift helper, and the quick suite end to end (with resume)."""

import json
import time

import pytest
import torch

from darkknowledge.data import load_dataset
from darkknowledge.experiments import get_experiment
from darkknowledge.experiments.hinton_mnist import PAPER, STAGES, apply_bias_shift, best_bias_shift, summary_keys
from darkknowledge.models import load_model
from darkknowledge.report import fmt


def test_summary_keys_spelling():
    keys = summary_keys()
    assert "sweep_800_T2.5_errors" in keys and "sweep_30_T20_errors" in keys and "best_T_30" in keys
    assert "reg3pct_soft_train_acc" in keys and "reg10pct_hard_test_acc" in keys and "gap_closed" in keys
    assert len(keys) == len(set(keys)) == 5 + 27 + 3 + 7 + 12 + 3


def test_apply_bias_shift_only_touches_given_classes():
    z = torch.zeros(4, 5)
    out = apply_bias_shift(z, [1, 3], -2.0)
    assert torch.equal(out[:, [1, 3]], torch.full((4, 2), -2.0))
    assert torch.equal(out[:, [0, 2, 4]], torch.zeros(4, 3))
    assert torch.equal(z, torch.zeros(4, 5))  # not in place


def test_best_bias_shift_recovers_an_offset_on_synthetic_logits():
    g = torch.Generator().manual_seed(0)
    n, k = 3000, 10
    y = torch.randint(0, k, (n,), generator=g)
    logits = torch.randn(n, k, generator=g)
    logits[torch.arange(n), y] += 4.0  # a well-separated classifier ...
    logits[:, 3] -= 5.0  # ... whose class-3 bias is 5 too low, as after a transfer set without 3s
    before = int((logits.argmax(1) != y).sum())
    shift, errs = best_bias_shift(logits, y, [3])
    assert 3.5 <= shift <= 6.5
    assert errs < before / 3
    assert errs == int((apply_bias_shift(logits, [3], shift).argmax(1) != y).sum())
    # two classes lowered together (the only-7s-and-8s correction)
    logits2 = torch.randn(n, k, generator=g)
    logits2[torch.arange(n), y] += 4.0
    logits2[:, [7, 8]] += 6.0
    shift2, errs2 = best_bias_shift(logits2, y, [7, 8])
    assert -8.5 <= shift2 <= -4.0
    assert errs2 < int((logits2.argmax(1) != y).sum()) / 3


def test_best_bias_shift_breaks_ties_at_the_median():
    # every shift in [-1, 1] is perfect here: the median of the plateau is 0
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    y = torch.tensor([0, 1])
    shift, errs = best_bias_shift(logits, y, [1], grid=torch.linspace(-5, 5, 101))
    assert errs == 0 and abs(shift) < 1e-6


def test_unknown_stage_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="unknown stage"):
        get_experiment("hinton-mnist")(out=tmp_path, quick=True, only="nope", progress=False)


@pytest.mark.slow  # end-to-end tier: the quick reproduction (minutes)
def test_quick_suite_end_to_end_and_resume(shared_data, tmp_path):
    run = get_experiment("hinton-mnist")
    out = tmp_path / "hm"
    t0 = time.perf_counter()
    summary = run(out=out, data_dir=shared_data, quick=True, progress=False)
    first = time.perf_counter() - t0
    for k in summary_keys():
        assert k in summary, k
        assert set(summary[k]) >= {"mean", "std", "n", "values"}, k
    assert json.loads((out / "summary.json").read_text()).keys() == summary.keys()
    report = (out / "report.md").read_text()
    for title in ("Stages 1–4", "Stage 5", "Stage 6", "Stage 7", "Stage 8", "Wall time per stage",
                  "tuned on test, as the paper did", "Where the student departs from its teacher"):
        assert title in report, title
    # each headline row carries the paper's number beside ours, both as written by the formatter
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in report.splitlines() if " | " in line}
    for label, key in (("1. teacher test errors", "teacher_errors"), ("2. baseline test errors", "baseline_errors"),
                       ("3. distilled test errors", "distilled_errors")):
        row = next(v for k, v in rows.items() if k.startswith(label))
        assert row[1] == str(PAPER[key]) and row[2].rstrip(" |") == fmt(summary[key], 1), row
    assert (out / "temperature.png").stat().st_size > 1000 and (out / "regulariser.png").stat().st_size > 1000
    prov = json.loads((out / "provenance.json").read_text())
    assert set(prov["stage_wall_time_s"]["train"]) == set(STAGES)
    # stage 6's counts, recomputed here from the student's weights and the validation-chosen shift
    splits = load_dataset("mnist", shared_data, 5000, 0)
    student = load_model(out / "runs" / "omit3" / "omit3_seed0" / "best.safetensors").eval()
    logits = student(splits.test.x)
    wrong = apply_bias_shift(logits, [3], summary["omit3_bias_shift"]["mean"]).argmax(1) != splits.test.y
    assert summary["omit3_errors_on3_after"]["mean"] == int(wrong[splits.test.y == 3].sum())
    assert summary["omit3_errors_before"]["mean"] == int((logits.argmax(1) != splits.test.y).sum())
    assert (out / "runs" / "baseline" / "baseline_seed0" / "run.json").exists()
    # the shifted-image diagnostic evaluates the same weights the run records scored
    sk = json.loads((out / "details.json").read_text())["distilled"]["shift_knowledge"][0]
    assert sk["distilled"]["test"]["errors"] == summary["distilled_errors"]["values"][0]
    assert sk["baseline"]["test"]["errors"] == summary["baseline_errors"]["values"][0]
    assert sk["teacher"]["test"]["disagree_teacher"] == 0 and sk["teacher"]["test"]["errors"] == \
        summary["teacher_errors"]["values"][0]

    # a rerun reuses every finished run: fast, same numbers
    t0 = time.perf_counter()
    again = run(out=out, data_dir=shared_data, quick=True, progress=False)
    assert again == summary
    assert time.perf_counter() - t0 < max(0.5 * first, 20)

    # a run whose record is gone (killed after its last checkpoint) resumes from checkpoint.pt, not from scratch
    rec_path = out / "runs" / "baseline" / "baseline_seed0" / "run.json"
    old = json.loads(rec_path.read_text())
    rec_path.unlink()
    only = run(out=out, data_dir=shared_data, quick=True, progress=False, only="baseline")
    new = json.loads(rec_path.read_text())
    assert new["final"]["test"] == old["final"]["test"] and new["epochs"] == old["epochs"]
    assert only["baseline_errors"] == summary["baseline_errors"]
    # --only still reports the other (cached) stages
    assert only.keys() == summary.keys()

    # a fresh clone holds the run records and evaluation caches but no weights or checkpoints:
    # it re-renders every stage without training and gets the same numbers
    def strip(what: tuple[str, ...]) -> None:
        for f in list((out / "runs").rglob("*")):
            if f.name in what or f.suffix in (".safetensors", ".pt"):
                f.unlink()

    import darkknowledge.engine.jobs as runner

    strip(())
    real_train = runner.train

    def no_train(*a, **k):
        raise AssertionError("a cached suite must re-render without training")

    runner.train = no_train
    try:
        assert run(out=out, data_dir=shared_data, quick=True, progress=False) == summary
    finally:
        runner.train = real_train
    # without the evaluation caches, the runs whose weights stages 6–7 need (and their teacher) are
    # retrained from scratch; training is deterministic, so the numbers do not move
    strip(("eval.json",))
    assert run(out=out, data_dir=shared_data, quick=True, progress=False) == summary
    assert (out / "runs" / "omit3" / "omit3_seed0" / "best.safetensors").exists()
    assert (out / "runs" / "teacher" / "teacher_seed0" / "best.safetensors").exists()
    # the baseline's weights are needed again (stage 3's shifted-image diagnostic); logit matching's are not
    assert (out / "runs" / "baseline" / "baseline_seed0" / "best.safetensors").exists()
    assert not (out / "runs" / "logit_matching" / "logits_seed0" / "best.safetensors").exists()


def test_student_recipes_override_the_shared_recipe_and_the_report_follows_validation():
    import dataclasses

    from darkknowledge.experiments.hinton_mnist_report import _student_recipes
    from darkknowledge.experiments.hinton_mnist_setup import (
        STUDENT_ALTERNATIVES,
        STUDENT_PROBES,
        settings_for,
        with_recipe,
    )

    base = {"epochs": 30, "optim": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
            "distill": {"temperature": 20.0, "w_hard": 0.1}}
    r = with_recipe(base, "T4_adam")
    assert r["distill"] == {"temperature": 4.0, "w_hard": 0.1} and r["optim"] == {"name": "adam", "lr": 1e-3,
                                                                                  "momentum": 0.9}
    assert base["distill"]["temperature"] == 20.0 and with_recipe(base, "base") == base
    assert "distill" not in with_recipe({"epochs": 30, "optim": {}}, "T4")
    assert with_recipe(base, "T4_100ep")["epochs"] == 100

    assert with_recipe({**base, "batch_size": 128}, "T4_batch32")["batch_size"] == 32
    assert with_recipe({**base, "batch_size": 128}, "T4")["batch_size"] == 128

    def rec(vals: list[int], t: float, epochs: int = 30) -> dict:
        return {"seeds": list(range(len(vals))), "val_errors": vals, "test_errors": [2 * v for v in vals],
                "epochs": epochs, "selected_epoch": [20] * len(vals), "temperature": t, "optim": {},
                "val_curve": [90, vals[0]], "wall_time_s": [60.0] * len(vals)}

    # the choice is on the mean over seeds: base wins seed 0, T4 the mean; an incomplete candidate does not count
    details = {"distilled": {"recipes": {"base": rec([48, 70, 70], 20.0), "T4": rec([50, 52, 54], 4.0),
                                         "T10": rec([10], 10.0)}}}
    details["distilled"]["recipes"]["T4_100ep"] = {**rec([40], 4.0, 100), "val_curve": list(range(140, 40, -1))}
    for used, says in (("base", "Validation prefers `T4`** among the 30-epoch recipes (52.0 vs 62.7 mean errors)"),
                       ("T4", "fewest mean validation errors")):
        lines: list[str] = []
        _student_recipes(lines.append, dataclasses.replace(settings_for(False), student_recipe=used), details)
        text = "\n".join(lines)
        assert says in text and "distill.temperature=4" in text and set(STUDENT_ALTERNATIVES) >= {"base", "T4"}
        assert "52.0 (50, 52, 54)" in text and "span 52.0–62.7" in text
        assert "Longer schedule (`T4_100ep`, seed 0, 100 epochs" in text and "41 at the end" in text
        # a probe is compared with the recipe it lengthens (seed 0's T4: 50), whichever recipe is used
        assert "40 validation errors at its selected epoch against 50 for `T4` in 30" in text, text
    from darkknowledge.experiments.hinton_mnist_recipes import probe_base

    assert [probe_base(k) for k in ("T4_100ep", "T20_clip5_100ep", "T4_lr0.1", "base", "x_ep")] == [
        "T4", "T20_clip5", "T4_lr0.1", "base", "x_ep"]
    assert all(probe_base(k) in STUDENT_ALTERNATIVES and k != probe_base(k) for k in STUDENT_PROBES)


def test_the_teacher_recipe_setting_picks_every_seeds_teacher_and_names_its_students(tmp_path):
    import dataclasses

    from darkknowledge.config import validate
    from darkknowledge.engine.stages import Context
    from darkknowledge.experiments.hinton_mnist import (
        distilled_cfg,
        other_teacher_student_cfg,
        recipe_cfg,
        recipe_cfgs,
    )
    from darkknowledge.experiments.hinton_mnist_report import _settings_section
    from darkknowledge.experiments.hinton_mnist_setup import (
        TEACHER_ALTERNATIVES,
        settings_for,
        student_cfg,
        teacher_cfg,
    )
    from darkknowledge.experiments.hinton_mnist_transfer import distilled_jitter_cfg

    s = settings_for(False)
    c = Context("hinton-mnist", tmp_path, None, s, [0, 1, 2], progress=False)
    t1 = teacher_cfg(c, 1)
    tr = "adam_300ep_bf16_batch256"
    assert s.teacher_recipe == tr and t1["epochs"] == TEACHER_ALTERNATIVES[tr]["epochs"] == 300
    assert t1["out_dir"].endswith(f"teacher_recipes/{tr}_seed1") and t1["optim"] == teacher_cfg(c, 1, "base")["optim"]
    assert teacher_cfg(c, 1, "base")["epochs"] == s.teacher_epochs == 200
    # the suite's recipe is the 300-epoch fp32 one with bf16 autocast and batch 256, nothing else; the bf16 one
    # differs from the fp32 one in its precision only
    f1, b1 = teacher_cfg(c, 1, "adam_300ep"), teacher_cfg(c, 1, "adam_300ep_bf16")
    assert t1["precision"] == b1["precision"] == "bf16" and "precision" not in f1
    assert t1["batch_size"] == 256 and b1["batch_size"] == f1["batch_size"] == s.batch_size == 128
    assert {k for k in f1 if f1[k] != b1.get(k)} == {"name", "out_dir"}
    assert {k for k in f1 if f1[k] != t1.get(k)} == {"name", "out_dir", "batch_size"}
    for cfg in (t1, f1, b1):
        validate(cfg)
    # a student of seed k distils from that teacher, and its folder says so; labels-only students keep their names
    st = student_cfg(c, "distilled", "distilled", 1, distil=True)
    assert st["distill"]["teachers"] == [t1["out_dir"] + "/best.safetensors"]
    assert st["out_dir"].endswith(f"distilled/distilled_from_{tr}_seed1")
    assert student_cfg(c, "baseline", "baseline", 1)["out_dir"].endswith("baseline/baseline_seed1")
    # the student-recipe comparison: every seed against its own suite teacher (the chosen recipe's runs are the
    # headline's); the "other teacher" student is pinned to the 200-epoch seed-0 teacher
    base0 = teacher_cfg(c, 0, "base")["out_dir"] + "/best.safetensors"
    assert recipe_cfg(c, "T4_adam", 1)["distill"]["teachers"] == [t1["out_dir"] + "/best.safetensors"]
    assert recipe_cfg(c, "T4_adam", 1)["out_dir"].endswith(f"student_recipes/T4_adam_from_{tr}_seed1")
    assert recipe_cfg(c, s.student_recipe, 2) == distilled_cfg(c, 2)
    cfgs = recipe_cfgs(c)
    assert {k for (n, k) in cfgs if n == "T20_clip5_100ep"} == {0} and {k for (n, k) in cfgs if n == "T10"} == {0, 1, 2}
    other = other_teacher_student_cfg(c)
    assert other["distill"]["teachers"] == [base0] and "_from_" not in other["out_dir"], other["out_dir"]
    t2 = teacher_cfg(c, 2)["out_dir"] + "/best.safetensors"
    j2 = distilled_jitter_cfg(c, 2)
    assert j2["distill"]["teachers"] == [t2] and j2["name"] == f"distilled_jitter_from_{tr}_seed2"
    pinned = Context("hinton-mnist", tmp_path, None, dataclasses.replace(s, jitter_teacher="base"), [0], progress=False)
    assert distilled_jitter_cfg(pinned, 2)["distill"]["teachers"] == [base0.replace("seed0", "seed2")]
    # quick mode keeps the one base teacher everywhere
    q = Context("hinton-mnist", tmp_path, None, settings_for(True), [0], progress=False)
    assert teacher_cfg(q, 0)["out_dir"].endswith("teacher/teacher_seed0")
    assert "_from_" not in student_cfg(q, "distilled", "distilled", 0, distil=True)["out_dir"]

    # the report's teacher table marks the recipe used, and says so when validation prefers another
    def rec(val: int, epochs: int) -> dict:
        return {"val_errors": val, "test_errors": 2 * val, "epochs": epochs, "optim": {"name": "adam", "lr": 1e-3},
                "max_norm": 15.0, "val_curve": [90] * (epochs - 1) + [val], "wall_time_s": 60.0}

    for used, says in (("adam_300ep", "The recipe used has the fewest validation errors"),
                       ("base", "Validation prefers `adam_300ep`** (34 vs 41 errors); the suite still uses `base`")):
        lines: list[str] = []
        details = {"teacher": {"recipes": {"base": rec(41, 200), "adam_300ep": {**rec(34, 300), "wall_time_s": 1200.0}},
                               "wall_time_s": [3600.0, 4800.0, 6000.0]}}
        _settings_section(lines.append, dataclasses.replace(s, teacher_recipe=used), details, {}, 3)
        text = "\n".join(lines)
        assert says in text and f"`{used}` (used for every seed)" in text, text
        # the budget of three teachers: the used recipe's own runs, the others' seed-0 run × 3 (1.5–2 on two cores)
        assert f"the 3 teachers of `{used}` took 240 min of training (60, 80, 100), at least 120 min" in text
        other = "base" if used == "adam_300ep" else "adam_300ep"
        assert (f"`{other}` ~3 min of training, 2–2 min" if other == "base" else
                "`adam_300ep` ~60 min of training, 30–40 min of wall time") in text, text
        assert ("Within the ~120 min budget the recipe used is also validation's choice" if used == "adam_300ep" else
                "**validation prefers `adam_300ep`** (34 errors); the suite still uses `base`") in text, text
    # a recipe over the budget (1.5 × 100 min > 120): the report names validation's choice among those that fit
    recipes = {"base": {**rec(41, 200), "wall_time_s": 3000.0}, "adam_300ep": {**rec(34, 300), "wall_time_s": 6000.0},
               "adam_300ep_bf16": {**rec(36, 300), "wall_time_s": 2400.0}}
    lines = []
    _settings_section(lines.append, dataclasses.replace(s, teacher_recipe="adam_300ep"), {"teacher": {"recipes": recipes}},
                      {}, 3)
    text = "\n".join(lines)
    assert ("**validation prefers `adam_300ep_bf16`** (36 errors vs 34 for `adam_300ep`, which does not fit); the "
            'suite still uses `adam_300ep` — rerun with `teacher_recipe="adam_300ep_bf16"`') in text, text
    lines = []
    _settings_section(lines.append, dataclasses.replace(s, teacher_budget_min=None), {"teacher": {"recipes": recipes}},
                      {}, 3)
    assert "budget" not in "\n".join(lines).split("**Teacher budget**")[0]
    # the suite's own case: the budget recipe in use, the fp32 one preferred by validation alone but over budget
    recipes["adam_300ep_bf16_batch256"] = {**rec(35, 300), "wall_time_s": 2400.0, "batch_size": 256}
    lines = []
    _settings_section(lines.append, s, {"teacher": {"recipes": recipes}}, {}, 3)
    text = "\n".join(lines)
    assert ("Validation alone prefers `adam_300ep` (34 vs 35 errors), but its three seeds do not fit the ~120 min "
            "budget (below).") in text, text
    assert "the suite still uses" not in text and "Within the ~120 min budget the recipe used is also" in text, text
    assert "Adam lr 0.001, cosine, batch 256, bf16 autocast | 300 |" in text, text
    # a tie on validation within the budget keeps the recipe used, and the report names the tie
    recipes["adam_400ep_bf16_batch256"] = {**rec(35, 400), "wall_time_s": 2600.0, "batch_size": 256}
    for first in (True, False):  # whichever order the recipes come in
        order = recipes if first else dict(reversed(list(recipes.items())))
        lines = []
        _settings_section(lines.append, s, {"teacher": {"recipes": order}}, {}, 3)
        text = "\n".join(lines)
        assert ("Within the ~120 min budget the recipe used is also validation's choice (tied at 35 errors with "
                "`adam_400ep_bf16_batch256`: a tie keeps the recipe used).") in text, text


def test_the_report_checks_the_targets_met_or_missed_by_how_much():
    from darkknowledge.experiments.hinton_mnist_report import _targets_text
    from darkknowledge.experiments.hinton_mnist_setup import settings_for

    summary = {"teacher_errors": {"mean": 77.0}, "distilled_errors": {"mean": 103.25}, "gap_closed": {"mean": 0.7}}
    text = _targets_text(summary.get, settings_for(False).targets)
    assert text == ("**Targets** (`Settings.targets`, means over the seeds): `teacher_errors` ≤ 80: **met** (77.0); "
                    "`distilled_errors` ≤ 90: **missed by 13.2** (103.2); `gap_closed` ≥ 0.85: **missed by 0.150** "
                    "(0.700)."), text
    assert "`gap_closed` ≥ 0.6: **met** (0.700)" in _targets_text(summary.get, {"gap_closed": (">=", 0.6)})
    assert _targets_text({}.get, {"gap_closed": (">=", 0.6)}).endswith("`gap_closed` ≥ 0.6: no result.")
    with pytest.raises(ValueError, match="operator"):
        _targets_text(summary.get, {"gap_closed": ("<", 0.6)})
    assert settings_for(True).targets == {}


def test_a_stage_runs_the_teachers_of_its_students_first_and_counts_only_its_own_runs(tmp_path):
    """The teachers a stage's students distil from are jobs of that stage (so the pool trains them first, and
    rebuilds their weights when a student must train); stage 1's training time holds the teachers, a run shared
    by two stages counts once, under the first."""
    from darkknowledge.engine.jobs import _dependencies
    from darkknowledge.engine.stages import Context
    from darkknowledge.experiments.hinton_mnist import EXPERIMENT, baseline_cfg, stage_train_times
    from darkknowledge.experiments.hinton_mnist_setup import settings_for, teacher_cfg

    stages = {st.name: st for st in EXPERIMENT.stages}
    assert list(stages) == list(STAGES)
    ctx = Context("hinton-mnist", tmp_path, None, settings_for(False), [0, 1], progress=False)
    jobs = stages["distilled"].jobs(ctx)
    dirs = [j.out_dir for j in jobs]
    suite = [teacher_cfg(ctx, k)["out_dir"] for k in (0, 1)]
    other = teacher_cfg(ctx, 0, "base")["out_dir"]  # the "what the teacher is worth" student's teacher
    assert dirs[:3] == suite + [other]
    assert [baseline_cfg(ctx, k)["out_dir"] for k in (0, 1)] == dirs[3:5]  # read by the shifted-image diagnostic
    deps = _dependencies(jobs)
    assert all(deps[i] <= {0, 1, 2} and deps[i] for i in range(5, len(jobs)))  # every student waits for a teacher
    assert len(set(dirs)) == len(dirs)
    for name in ("omit3", "only78", "regulariser", "jitter", "logit_matching", "temperature"):
        assert set(suite) <= {j.out_dir for j in stages[name].jobs(ctx)}, name

    # training time per stage: the records of its own runs (seconds: 10, 20, 30 in the order first made)
    q = Context("hinton-mnist", tmp_path, None, settings_for(True), [0], progress=False)
    seen = {}
    for st in ("teacher", "baseline", "distilled"):
        for j in stages[st].jobs(q):
            seen.setdefault(j.out_dir, {"config": j.config, "seed": j.config["seed"], "wall_time_s": 10.0 * (len(seen) + 1)})
    q.records = seen
    q.details = {st: {"seeds": [0]} for st in ("teacher", "baseline", "distilled")}
    q.times = {"teacher": 1.0, "baseline": 2.0, "distilled": 3.0, "temperature": 4.0}
    order = list(seen)  # teacher_seed0, baseline_seed0, distilled_seed0 (the distilled stage's teacher is shared)
    assert [p.split("/")[-2] for p in order] == ["teacher", "baseline", "distilled"]
    assert stage_train_times(q) == {"train": {"teacher": 10.0, "baseline": 20.0, "distilled": 30.0},
                                    "invocation": {"teacher": 1.0, "baseline": 2.0, "distilled": 3.0},
                                    "single_seed": 60.0}
