"""Command line: ``darkknowledge {train,distill,ensemble,sweep,evaluate,demo,reproduce}`` (also
``python -m darkknowledge``; ``torchrun ... -m darkknowledge train|distill`` for one run on many processes)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from . import __version__

if TYPE_CHECKING:
    from torch import Tensor

EPILOG = """examples:
  darkknowledge demo --data-dir ../shared/data
  darkknowledge demo --quick --dataset digits
  darkknowledge train --config configs/mnist_teacher.yaml out_dir=runs/teacher
  darkknowledge distill --config configs/mnist_student.yaml --teacher runs/teacher/best.safetensors \\
      out_dir=runs/distilled distill.temperature=20
  darkknowledge evaluate runs/teacher/best.safetensors runs/distilled/best.safetensors
  darkknowledge evaluate runs/mine/best.safetensors --config my_digits.yaml --teacher runs/teacher/best.safetensors
  darkknowledge reproduce hinton-mnist --quick --workers 2
  darkknowledge ensemble --config configs/mnist_student.yaml --members 10 --workers 2 --out runs/ens
  darkknowledge distill --config configs/mnist_student.yaml --teacher runs/ens/ensemble.json --out runs/from_ens
  darkknowledge sweep --config configs/mnist_student.yaml --teacher runs/teacher/best.safetensors \
      --out runs/sweep distill.temperature=1,2,4,8 model.args.hidden=[300,300],[800,800]
  torchrun --standalone --nproc_per_node 2 -m darkknowledge train --config configs/mnist_teacher.yaml --out runs/t
"""


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None,
                   help="folder holding the datasets (default: $DARKKNOWLEDGE_DATA, then ~/.cache/darkknowledge)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def _add_overwrite(p: argparse.ArgumentParser, help_: str) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help=help_ + "; a finished run is otherwise never written over")


def _add_pool(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=_positive_int, default=1,
                   help="runs at once (default 1; each gets cores // workers torch threads)")
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="local process pool (default) or Ray (pip install 'darkknowledge[ray]')")
    p.add_argument("--ray-address", default=None, help="a running Ray cluster (e.g. auto); default: a local Ray")


class _Parser(argparse.ArgumentParser):
    """argparse with its usage errors in one line (the usage is in ``--help``)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="darkknowledge", description="Knowledge distillation on PyTorch.", epilog=EPILOG,
                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=f"darkknowledge {__version__}")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging (and tracebacks, as --debug)")
    ap.add_argument("--debug", action="store_true",
                    help=f"show the traceback of every error (also ${DEBUG_ENV}=1); by default a user's mistake or an "
                         "OS error is one line")
    sub = ap.add_subparsers(dest="command", required=True)

    for name, help_ in (("train", "train a model from labels"), ("distill", "distill from teacher checkpoint(s)")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--config", help="YAML config (see configs/)")
        if name == "distill":
            p.add_argument("--teacher", action="append", required=True,
                           help="teacher model file; repeat for an ensemble")
            p.add_argument("--combine", choices=["arithmetic", "geometric"], default=None)
        p.add_argument("--out", help="output directory (same as out_dir=...)")
        p.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps (same as device=...)")
        p.add_argument("--resume", action="store_true", help="continue the run in the output directory")
        _add_overwrite(p, "replace the run in the output directory (finished or not)")
        p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.lr=0.01 epochs=5")
        _add_common(p)

    p = sub.add_parser("ensemble", help="train N members differing only in seed; writes ensemble.json for distill")
    p.add_argument("--config", help="YAML config of one member")
    p.add_argument("--members", type=_positive_int, required=True, help="number of members (seeds seed..seed+N-1)")
    p.add_argument("--out", required=True, help="output folder (member<i>/ and ensemble.json)")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the member config")
    _add_overwrite(p, "retrain members whose inputs changed (else such a member is refused)")
    _add_pool(p)
    _add_common(p)

    p = sub.add_parser("sweep", help="one run per cell of a grid: key=v1,v2 ... ; a results table")
    p.add_argument("--config", help="YAML config")
    p.add_argument("--teacher", action="append", default=None, help="teacher file or ensemble.json (distills)")
    p.add_argument("--out", required=True, help="output folder (one run folder per cell, sweep.json)")
    p.add_argument("overrides", nargs="*", help="key=value (fixed) or key=v1,v2,... (a grid axis)")
    p.add_argument("--no-baseline", action="store_true",
                   help="no labels-only baseline row (a distillation sweep trains one per non-distillation cell)")
    _add_overwrite(p, "retrain cells whose inputs changed (else such a cell is refused)")
    _add_pool(p)
    _add_common(p)

    p = sub.add_parser("evaluate", help="metrics table (accuracy, calibration, agreement) for model files on the "
                                        "data a config names, or a built-in dataset")
    p.add_argument("models", nargs="+")
    p.add_argument("--config", help="a config whose data section names the data (your own files or a built-in set)")
    p.add_argument("--data", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="data keys as in a config's data section, e.g. format=npz files.train=a.npz files.test=b.npz")
    p.add_argument("--dataset", default=None, help="a built-in dataset (default mnist when no --config / --data)")
    p.add_argument("--split", choices=["test", "val"], default="test", help="which split to score (default test)")
    p.add_argument("--download", action="store_true", help="download a built-in dataset that is not found locally")
    p.add_argument("--teacher", help="model file whose agreement with each model is reported")
    p.add_argument("--json", help="also write the metrics to this JSON file")
    _add_common(p)

    p = sub.add_parser("demo", help="train a teacher, a label-trained and a distilled student; a results table")
    p.add_argument("--out", default=None, help="output folder (default: a fresh runs/demo/<time stamp>/)")
    p.add_argument("--resume", action="store_true", help="continue the newest unfinished demo (or --out)")
    p.add_argument("--quick", action="store_true", help="fewer epochs (about a minute)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dataset", choices=["mnist", "digits"], default=None,
                   help="default: MNIST when its files are found, else scikit-learn's digits")
    _add_common(p)

    p = sub.add_parser("reproduce", help="rerun a paper experiment (see `darkknowledge reproduce --list`)")
    p.add_argument("name", nargs="?")
    p.add_argument("--list", action="store_true", help="list experiments")
    p.add_argument("--out", default=None, help="results folder (default results/<name>)")
    p.add_argument("--seeds", type=_positive_int, default=None, help="number of seeds (>= 1)")
    p.add_argument("--quick", action="store_true", help="a few-minute version on a subset")
    p.add_argument("--only", default=None, help="run only this stage")
    _add_pool(p)
    _add_common(p)
    return ap


def _train_cmd(args: argparse.Namespace) -> int:
    from .config import load_config
    from .engine import train

    overrides = list(args.overrides)
    if args.out:
        overrides.append(f"out_dir={args.out}")
    if args.device:
        overrides.append(f"device={args.device}")
    if args.command == "distill":  # before the overrides are validated: distill.* overrides need the teachers
        overrides.append("distill.teachers=" + json.dumps(args.teacher))
        if args.combine:
            overrides.append(f"distill.combine={args.combine}")
    if args.resume and args.overwrite:
        raise ValueError("--resume continues the run in the output directory, --overwrite replaces it: give one")
    cfg = load_config(args.config, overrides)
    if args.data_dir:
        cfg.data.data_dir = args.data_dir
    rec = train(cfg, resume=args.resume, progress=not args.no_progress, overwrite=args.overwrite)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun: rank 0 reports
        return 0
    rows = {cfg.name: rec["final"]["test"]}
    if "teacher_test" in rec["final"]:  # the teacher beside its student
        rows = {f"teacher ({', '.join(Path(t).name for t in cfg.distill.teachers)})": rec["final"]["teacher_test"],
                **rows}
    _print_metrics(rows, title=f"test metrics (model selected at epoch "
                   f"{rec['final']['selected_epoch']} on validation); run record {Path(cfg.out_dir) / 'run.json'}")
    return 0


def _pool_args(args: argparse.Namespace) -> dict:
    kw = {"executor": args.executor, "workers": args.workers}
    if args.ray_address:
        if args.executor != "ray":
            raise ValueError("--ray-address needs --executor ray")
        kw["address"] = args.ray_address
    return kw


def _ensemble_cmd(args: argparse.Namespace) -> int:
    from .config import load_config
    from .engine.fanout import train_ensemble

    cfg = load_config(args.config, list(args.overrides))
    if args.data_dir:
        cfg.data.data_dir = args.data_dir
    m = train_ensemble(cfg, args.members, args.out, progress=not args.no_progress, overwrite=args.overwrite,
                       **_pool_args(args))
    rows = {f"member{i} (seed {r['seed']})": r["test"] for i, r in enumerate(m["members"])}
    rows[f"ensemble of {len(m['members'])} ({m['combine']})"] = m["ensemble"]["test"]
    _print_metrics(rows, title=f"ensemble members, test metrics; manifest {Path(args.out) / 'ensemble.json'} "
                         "(pass it to distill --teacher)")
    return 0


def _sweep_cmd(args: argparse.Namespace) -> int:
    from .config import load_config
    from .engine.fanout import parse_grid, sweep
    from .report import markdown_table

    fixed, _ = parse_grid(list(args.overrides))
    if args.teacher:
        fixed.append("distill.teachers=" + json.dumps(args.teacher))
    cfg = load_config(args.config, fixed)
    if args.data_dir:
        cfg.data.data_dir = args.data_dir
    res = sweep(cfg, [o for o in args.overrides if o not in fixed], args.out, progress=not args.no_progress,
                baseline=not args.no_baseline, overwrite=args.overwrite, **_pool_args(args))
    keys = [a["key"] for a in res["axes"]]
    print(f"sweep of {len(res['cells'])} runs; {Path(args.out) / 'sweep.json'}; best on validation: "
          f"{res['best_on_validation']}")
    print(markdown_table(keys + ["val acc", "test acc", "test errors", "epoch"], [
        [_cell(c["values"][k]) if k in c["values"] else c["baseline"] for k in keys]
        + [f"{c['val_accuracy']:.4f}" if c["val_accuracy"] is not None else "–", f"{c['test_accuracy']:.4f}",
           c["test_errors"], c["selected_epoch"]]
        for c in res["cells"] + res["baseline"]]))
    return 0


def _cell(v) -> str:
    """A grid value in a table: as written (strings without quotes, lists and numbers as JSON)."""
    return v if isinstance(v, str) else json.dumps(v)


def _print_metrics(rows: dict[str, dict], title: str = "") -> None:
    from .report import markdown_table

    cols = ["errors", "accuracy", "nll", "ece", "brier", "agreement", "kl_teacher_student"]
    present = [c for c in cols if any(c in r for r in rows.values())]
    table = markdown_table(["model"] + present, [[k] + [
        ("–" if c not in r else (f"{r[c]:.4f}" if isinstance(r[c], float) else r[c])) for c in present]
        for k, r in rows.items()])
    if title:
        print(title)
    print(table)


def _evaluate_cmd(args: argparse.Namespace) -> int:
    from .config import ConfigError, load_config
    from .data import load_splits
    from .metrics import agreement_metrics, classification_metrics, predict_logits
    from .models import ModelFileError, load_model
    from .utils import atomic_write_json

    if args.dataset and (args.config or args.data):
        raise ValueError("--dataset names a built-in dataset; with --config / --data set data.dataset instead")
    builtin = not (args.config or args.data)  # --dataset: the whole training set is not needed for the test split
    overrides = [f"data.{kv}" for kv in args.data] + ([f"data.dataset={args.dataset or 'mnist'}"] if builtin else []) \
        + (["data.val_size=0"] if builtin and args.split == "test" else [])
    for m in [*args.models, *([args.teacher] if args.teacher else [])]:  # before the data is loaded
        if not Path(m).is_file():
            raise ModelFileError(f"model file not found: {m}")
    try:
        cfg = load_config(args.config, overrides).data
    except ConfigError as e:  # a distill config whose teachers come from `distill --teacher`: only its data is read
        if "distill.teachers" not in str(e):
            raise
        cfg = load_config(args.config, [*overrides, "distill.teachers=[]"]).data
    if args.data and not args.config and cfg.format and not any(kv.startswith("dataset=") for kv in args.data):
        cfg.dataset = f"{cfg.format} files"  # the name in the table (a config's data.dataset names them otherwise)
    if args.data_dir:
        cfg.data_dir = args.data_dir
    splits = load_splits(cfg, download=args.download)
    part = getattr(splits, args.split)
    if len(part) == 0:
        raise ValueError(f"{cfg.dataset}: the {args.split} split is empty (data.val_size is 0?)")
    x, y, what = part.x, part.y, f"{cfg.dataset!r} inputs of shape {tuple(part.x.shape[1:])}"

    def logits(path: str, who: str = "") -> Tensor:
        model = load_model(path)
        out = getattr(model, "num_classes", splits.num_classes)
        if out != splits.num_classes:
            raise ValueError(f"{who}{path} has {out} outputs but {cfg.dataset} has {splits.num_classes} classes")
        try:
            return predict_logits(model, x)
        except RuntimeError as e:
            raise ValueError(f"{who}{path} cannot take {what}: {str(e).splitlines()[0]}") from None

    t_logits = logits(args.teacher, "teacher ") if args.teacher else None
    rows = {m: {**classification_metrics(lg, y), **(agreement_metrics(lg, t_logits) if t_logits is not None else {})}
            for m in args.models for lg in [logits(m)]}
    if t_logits is not None and args.teacher not in rows:
        rows[f"{args.teacher} (teacher)"] = classification_metrics(t_logits, y)
    _print_metrics(rows, title=f"{cfg.dataset} {args.split} split ({len(y)} examples)")
    if args.json:
        atomic_write_json(args.json, rows)
    return 0


def _demo_cmd(args: argparse.Namespace) -> int:
    from .experiments.demo import run_demo

    run_demo(out=args.out, data_dir=args.data_dir, quick=args.quick, seed=args.seed, progress=not args.no_progress,
             dataset=args.dataset, resume=args.resume)
    return 0


def _reproduce_cmd(args: argparse.Namespace) -> int:
    from .experiments import get_experiment, list_experiments

    if args.list or not args.name:
        print("experiments:\n  " + "\n  ".join(list_experiments()))
        return 0
    fn = get_experiment(args.name)
    kw = {"out": args.out or f"results/{args.name}", "data_dir": args.data_dir, "quick": args.quick,
          "progress": not args.no_progress}
    from .report.results import claim

    claim(kw["out"], f"darkknowledge reproduce {args.name}")  # not over another experiment's results
    import inspect

    accepted = inspect.signature(fn).parameters
    pool = _pool_args(args)
    for opt, value in (("seeds", args.seeds), ("only", args.only),
                       ("workers", pool if args.workers > 1 or args.executor != "local" else None)):
        if value is not None:
            param = "pool" if opt == "workers" else opt
            if param not in accepted:
                raise ValueError(f"experiment {args.name!r} takes no --{opt} — run it without --{opt}")
            kw[param] = value
    fn(**kw)
    return 0


#: commands that continue an interrupted run with --resume; the others continue when rerun as they were
RESUMABLE = {"train", "distill", "demo"}
DEBUG_ENV = "DARKKNOWLEDGE_DEBUG"


def _user_errors() -> tuple[type[BaseException], ...]:
    """The errors a user's input or the machine causes (one line, no traceback); any other is a bug."""
    from .config import ConfigError
    from .data import ChecksumError, DatasetNotFoundError, IDXFormatError
    from .engine import CheckpointError, RunExistsError, RunLockedError, TeacherMismatchError, TrainingDivergedError
    from .engine.jobs import JobsFailedError
    from .models import ModelFileError
    from .store import StoreError

    return (ConfigError, DatasetNotFoundError, ChecksumError, IDXFormatError, ModelFileError, StoreError,
            RunExistsError, RunLockedError, CheckpointError, TeacherMismatchError, TrainingDivergedError, ValueError,
            KeyError, JobsFailedError, OSError)


def error_line(e: BaseException) -> str:
    """A user error as one line: an OS error names the path and what to do; a message of several lines is
    joined."""
    import errno

    if isinstance(e, OSError) and e.strerror:  # raised by the OS (a library's own OSError subclasses carry text)
        name = e.filename2 or e.filename  # of a rename: the destination
        where = f"{name}: " if name else ""
        hint = {errno.ENOSPC: "no space left on the device — free some space and rerun (files written before are "
                              "kept as they were)",
                errno.EDQUOT: "disk quota exceeded — free some space and rerun",
                errno.EACCES: "permission denied — choose a folder you can write to (--out)",
                errno.EPERM: "operation not permitted — choose a folder you can write to (--out)",
                errno.EROFS: "read-only file system — choose a writable folder (--out)",
                errno.ENOTDIR: "a part of this path is a file, not a folder",
                errno.EEXIST: "a file is in the way of a folder",
                errno.EISDIR: "a folder where a file was expected"}.get(e.errno, e.strerror)
        return where + hint
    msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    return " ".join(line.strip() for line in str(msg).splitlines() if line.strip()) or type(e).__name__


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if getattr(args, "data_dir", None):
        os.environ.setdefault("DARKKNOWLEDGE_DATA", args.data_dir)
    debug = args.debug or args.verbose or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    handlers = {"train": _train_cmd, "distill": _train_cmd, "ensemble": _ensemble_cmd, "sweep": _sweep_cmd,
                "evaluate": _evaluate_cmd, "demo": _demo_cmd, "reproduce": _reproduce_cmd}
    try:
        return handlers[args.command](args)
    except _user_errors() as e:
        if debug:
            raise
        print(f"darkknowledge {args.command}: error: {error_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        how = ("rerun with --resume to continue from the last checkpoint" if args.command in RESUMABLE else
               "rerun the same command to continue (finished runs are kept, interrupted ones resume)"
               if args.command in ("ensemble", "sweep", "reproduce") else "nothing was written")
        print(f"darkknowledge {args.command}: interrupted; {how}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
