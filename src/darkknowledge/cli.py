"""Command line: ``darkknowledge {train,distill,evaluate,demo,reproduce}`` (also ``python -m darkknowledge``)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from . import __version__

EPILOG = """examples:
  darkknowledge demo --data-dir ../shared/data
  darkknowledge train --config configs/mnist_teacher.yaml out_dir=runs/teacher
  darkknowledge distill --config configs/mnist_student.yaml --teacher runs/teacher/best.safetensors \\
      out_dir=runs/distilled distill.temperature=20
  darkknowledge evaluate runs/teacher/best.safetensors runs/distilled/best.safetensors
  darkknowledge reproduce hinton-mnist --quick
"""


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None,
                   help="folder holding the datasets (default: $DARKKNOWLEDGE_DATA, then ~/.cache/darkknowledge)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="darkknowledge", description="Knowledge distillation on PyTorch.",
                                 epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=f"darkknowledge {__version__}")
    ap.add_argument("-v", "--verbose", action="store_true")
    sub = ap.add_subparsers(dest="command", required=True)

    for name, help_ in (("train", "train a model from labels"), ("distill", "distill from teacher checkpoint(s)")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--config", help="YAML config (see configs/)")
        if name == "distill":
            p.add_argument("--teacher", action="append", required=True,
                           help="teacher model file; repeat for an ensemble")
            p.add_argument("--combine", choices=["arithmetic", "geometric"], default=None)
        p.add_argument("--out", help="output directory (same as out_dir=...)")
        p.add_argument("--resume", action="store_true", help="continue the run in the output directory")
        p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.lr=0.01 epochs=5")
        _add_common(p)

    p = sub.add_parser("evaluate", help="metrics table for one or more model files")
    p.add_argument("models", nargs="+")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--teacher", help="model file whose agreement with each model is reported")
    p.add_argument("--json", help="also write the metrics to this JSON file")
    _add_common(p)

    p = sub.add_parser("demo", help="teacher, label-trained and distilled student, then a results table")
    p.add_argument("--out", default="results/demo")
    p.add_argument("--quick", action="store_true", help="fewer epochs (about a minute)")
    p.add_argument("--seed", type=int, default=0)
    _add_common(p)

    p = sub.add_parser("reproduce", help="rerun a paper experiment (see `darkknowledge reproduce --list`)")
    p.add_argument("name", nargs="?")
    p.add_argument("--list", action="store_true", help="list experiments")
    p.add_argument("--out", default=None, help="results folder (default results/<name>)")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds for the headline rows")
    p.add_argument("--quick", action="store_true", help="a few-minute version on a subset")
    p.add_argument("--only", default=None, help="run only this stage")
    _add_common(p)
    return ap


def _train_cmd(args: argparse.Namespace) -> int:
    from .config import load_config
    from .training import train

    overrides = list(args.overrides)
    if args.out:
        overrides.append(f"out_dir={args.out}")
    cfg = load_config(args.config, overrides)
    if args.data_dir:
        cfg.data.data_dir = args.data_dir
    if args.command == "distill":
        d = cfg.distill.model_dump() if cfg.distill else {}
        d["teachers"] = args.teacher
        if args.combine:
            d["combine"] = args.combine
        from .config import DistillConfig, validate

        cfg.distill = validate(d, DistillConfig, "distill")
    rec = train(cfg, resume=args.resume, progress=not args.no_progress)
    _print_metrics({cfg.name: rec["final"]["test"]}, title=f"test metrics (model selected at epoch "
                   f"{rec['final']['selected_epoch']} on validation); run record {Path(cfg.out_dir) / 'run.json'}")
    return 0


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
    from .data import load_dataset
    from .metrics import evaluate, predict_logits
    from .models import load_model
    from .utils import atomic_write_json

    splits = load_dataset(args.dataset, args.data_dir, val_size=0)
    x, y = splits.test.x, splits.test.y
    t_logits = predict_logits(load_model(args.teacher), x) if args.teacher else None
    rows = {}
    for m in args.models:
        model = load_model(m)
        out = getattr(model, "num_classes", splits.num_classes)
        if out != splits.num_classes:
            raise ValueError(f"{m} has {out} outputs but {args.dataset} has {splits.num_classes} classes")
        rows[m] = evaluate(model, x, y, t_logits)
    _print_metrics(rows, title=f"{args.dataset} test set ({len(y)} examples)")
    if args.json:
        atomic_write_json(args.json, rows)
    return 0


def _demo_cmd(args: argparse.Namespace) -> int:
    from .experiments import get_experiment

    get_experiment("demo")(out=args.out, data_dir=args.data_dir, quick=args.quick, seed=args.seed,
                           progress=not args.no_progress)
    return 0


def _reproduce_cmd(args: argparse.Namespace) -> int:
    from .experiments import get_experiment, list_experiments

    if args.list or not args.name:
        print("experiments:\n  " + "\n  ".join(list_experiments()))
        return 0
    fn = get_experiment(args.name)
    kw = {"out": args.out or f"results/{args.name}", "data_dir": args.data_dir, "quick": args.quick,
          "progress": not args.no_progress}
    if args.seeds is not None:
        kw["seeds"] = args.seeds
    if args.only is not None:
        kw["only"] = args.only
    fn(**kw)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    if getattr(args, "data_dir", None):
        os.environ.setdefault("DARKKNOWLEDGE_DATA", args.data_dir)
    from .cache import CacheError
    from .config import ConfigError
    from .data import ChecksumError, DatasetNotFoundError, IDXFormatError
    from .models import ModelFileError
    from .training import RunExistsError, TrainingDivergedError

    handlers = {"train": _train_cmd, "distill": _train_cmd, "evaluate": _evaluate_cmd, "demo": _demo_cmd,
                "reproduce": _reproduce_cmd}
    try:
        return handlers[args.command](args)
    except (ConfigError, DatasetNotFoundError, ChecksumError, IDXFormatError, ModelFileError, CacheError,
            RunExistsError, TrainingDivergedError, ValueError, KeyError) as e:
        if args.verbose:
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        print(f"darkknowledge {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun with --resume to continue from the last checkpoint", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
