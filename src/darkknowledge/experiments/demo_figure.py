"""The demo's figure: test errors per model (beside the reference runs), and "the dark knowledge" — the
teacher's soft targets at several temperatures for a few test images, naming the classes it thinks they
resemble (Hinton et al. 2015 §2: the small probabilities a high T brings out)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..data import load_dataset
from ..losses import soft_targets
from ..models import load_model
from ..report import pyplot, save_figure

__all__ = ["demo_figure"]

TEMPERATURES = (1.0, 4.0, 20.0)


def demo_figure(path: Path, recs: dict[str, dict[str, Any]], values: dict[str, float], ref: dict[str, Any] | None,
                dataset: str, data_dir: str | None, n_images: int = 3) -> None:
    plt = pyplot()
    teacher = load_model(Path(recs["teacher"]["config"]["out_dir"]) / "best.safetensors").eval()
    test = load_dataset(dataset, data_dir, val_size=0).test
    with torch.no_grad():
        logits = teacher(test.x[:500])
    # the test images the teacher gets right with the most mass off the top class: the richest soft targets
    p1 = torch.softmax(logits, 1)
    right = logits.argmax(1) == test.y[:500]
    pick = torch.where(right, 1 - p1.max(1).values, torch.full_like(p1[:, 0], -1.0)).argsort(descending=True)[:n_images]

    fig = plt.figure(figsize=(4 + 3.2 * n_images, 3.8))
    grid = fig.add_gridspec(2, n_images + 1, width_ratios=[1.3] + [1] * n_images, height_ratios=[1, 1.4])
    ax = fig.add_subplot(grid[:, 0])
    models = ("teacher", "baseline", "distilled")
    ours = [values[f"{m}_errors"] for m in models]
    ax.bar(range(3), ours, color=["tab:gray", "tab:red", "tab:blue"], label="this run")
    if ref:
        ax.errorbar(range(3), [ref[f"{m}_errors"]["mean"] for m in models],
                    yerr=[ref[f"{m}_errors"]["std"] for m in models], fmt="k_", ms=18, capsize=4,
                    label=f"reference (mean ± std, n={ref['teacher_errors']['n']})")
        ax.legend(fontsize=7)
    ax.set_xticks(range(3), models)
    ax.set_ylabel(f"test errors (of {len(test)})")
    ax.set_title("test errors")
    shape = test.x.shape[1:]
    side = int(round(test.x[0].numel() ** 0.5))
    for j, i in enumerate(pick.tolist()):
        img = fig.add_subplot(grid[0, j + 1])
        img.imshow((test.x[i].reshape(side, side) if len(shape) <= 2 or shape[0] == 1 else test.x[i, 0]).numpy(),
                   cmap="gray")
        top = p1[i].argsort(descending=True)[:3].tolist()
        img.set_title(f"label {int(test.y[i])}; resembles {top[1]}, {top[2]}", fontsize=8)
        img.axis("off")
        bars = fig.add_subplot(grid[1, j + 1])
        k = logits.shape[1]
        for n, t in enumerate(TEMPERATURES):
            bars.bar((torch.arange(k) + (n - 1) * 0.27).numpy(), soft_targets(logits[i:i + 1], t)[0].numpy(),
                     width=0.27, label=f"T = {t:g}")
        bars.set_yscale("log")
        bars.set_ylim(1e-6, 1.5)
        bars.set_xticks(range(k))
        bars.tick_params(labelsize=7)
        if j == 0:
            bars.set_ylabel("teacher's soft target")
            bars.legend(fontsize=7)
    fig.suptitle("darkknowledge demo: errors, and the dark knowledge in the teacher's soft targets", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
