"""Choosing the specialists' class subsets: Hinton, Vinyals & Dean (2015), §5.1 (spec §3.2).

The paper does not use the confusion matrix (it needs true labels): it clusters the covariance matrix of
the generalist's predicted distributions, so classes that are often predicted together fall into one
special set. With ``P`` the ``[N, C]`` generalist probabilities,

    Σ = cov(P) over examples  (C × C),        K-means on the C columns Σ[:, c], one point per class.

The paper used online K-means; we use scikit-learn's (batch, k-means++ seeded) :class:`~sklearn.cluster.KMeans`
with a fixed ``n_init`` and ``random_state`` ("other clustering algorithms gave similar clusters").
Plain K-means gives disjoint sets, whereas the paper's 61 sets of 300 classes out of 15,000 overlap; how
is not said. Our option ``overlap=r`` also puts each class into the ``r`` clusters whose centres are next
nearest to its column (spec §6.1 claim 7 suggests the 2 nearest clusters, i.e. ``overlap=1``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from torch import Tensor

__all__ = ["Clustering", "prediction_covariance", "confusable_clusters", "special_sets", "clusters_by_temperature"]


@dataclass
class Clustering:
    """The result of :func:`confusable_clusters`.

    ``clusters``: sorted class ids of each special set (with overlap), clusters ordered by their smallest
    own member; ``labels`` [C]: each class's own (nearest-centre) cluster; ``covariance`` [C, C];
    ``centers`` [K, C]; ``distances`` [C, K]: Euclidean distance of each class's column to each centre;
    ``order`` [C]: the classes grouped by own cluster (within a cluster, nearest its centre first) — index
    ``covariance[np.ix_(order, order)]`` for a block-diagonal figure.
    """

    clusters: list[list[int]]
    labels: np.ndarray
    covariance: np.ndarray
    centers: np.ndarray
    distances: np.ndarray
    order: np.ndarray


def prediction_covariance(probs: Tensor | np.ndarray) -> np.ndarray:
    """``cov(P)`` [C, C] of predicted distributions ``P`` [N, C] over the ``N`` examples (float64,
    normalised by ``N − 1``)."""
    p = probs.detach().cpu().double().numpy() if isinstance(probs, Tensor) else np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] < 2:
        raise ValueError(f"probs must be [N, C] with N >= 2 examples, got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("probs contain NaN or inf")
    return np.cov(p, rowvar=False).reshape(p.shape[1], p.shape[1])


def confusable_clusters(probs: Tensor | np.ndarray, k: int, overlap: int = 0, seed: int = 0,
                        n_init: int = 10) -> Clustering:
    """Special sets from the generalist's predictions ``probs`` [N, C] (Hinton et al. 2015, §5.1).

    K-means (``k`` clusters, ``n_init`` restarts, ``random_state=seed``) on the columns of
    ``Σ = cov(probs)``; each class belongs to the cluster of its nearest centre and, with ``overlap=r``,
    also to the ``r`` clusters with the next nearest centres (distance of its column ``Σ[:, c]`` to the
    centre). If K-means leaves a cluster empty (fewer distinct columns than ``k``), it is dropped with a
    warning. Returns a :class:`Clustering`.

    Caveat of the overlap rule: when the blocks are well separated, every other centre is about equally far
    from a class's column, and the next nearest is the centre of smallest norm — so the added memberships
    pile into a few clusters (a warning is given if one of them grows to every class). With genuine
    confusion between two groups, each group's next nearest cluster is the other one.
    """
    from sklearn.cluster import KMeans

    cov = prediction_covariance(probs)
    c = cov.shape[0]
    if not 1 <= k <= c:
        raise ValueError(f"k must be in 1..{c} (the number of classes), got {k}")
    if not 0 <= overlap < k:
        raise ValueError(f"overlap must be in 0..{k - 1} (fewer than k clusters), got {overlap}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)  # sklearn's own empty-cluster notice; ours below
        km = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(cov)
    dist = km.transform(cov)  # [C, k]
    raw = km.labels_
    used = sorted(set(raw.tolist()), key=lambda j: int(np.flatnonzero(raw == j).min()))  # by smallest member
    if len(used) < k:
        warnings.warn(f"K-means found only {len(used)} non-empty clusters of the {k} asked for "
                      "(classes with identical covariance columns); the empty ones are dropped", stacklevel=2)
    relabel = {old: new for new, old in enumerate(used)}
    labels = np.array([relabel[j] for j in raw], dtype=np.int64)
    centers, dist = km.cluster_centers_[used], dist[:, used]
    members: list[set[int]] = [set(np.flatnonzero(labels == j).tolist()) for j in range(len(used))]
    if overlap:
        for cls in range(c):
            others = [j for j in np.argsort(dist[cls], kind="stable") if j != labels[cls]]
            for j in others[:overlap]:
                members[j].add(cls)
    if any(len(m) == c for m in members):
        warnings.warn(f"with overlap={overlap} a special set holds all {c} classes: its specialist would have an "
                      "empty dustbin (make_specialist refuses it); use less overlap or more clusters", stacklevel=2)
    order = np.lexsort((dist[np.arange(c), labels], labels))
    return Clustering([sorted(m) for m in members], labels, cov, centers, dist, order)


def special_sets(clustering: Clustering, overlap_ratio: float | None = None) -> list[list[int]]:
    """The special sets of a clustering: its ``clusters`` or, with ``overlap_ratio = r``, for every cluster ``j``
    the classes ``c`` whose covariance column is at most ``1 + r`` times as far from centre ``j`` as from their
    own centre, ``d(c, j) ≤ (1 + r) · d(c, own(c))`` — so, unlike ``overlap=``, the number of specialists covering
    a class varies between classes, as in the paper's Table 4. Sets holding every class (a specialist needs a
    non-empty dustbin) or none are dropped."""
    if overlap_ratio is None:
        sets = [list(map(int, c)) for c in clustering.clusters]
    else:
        if overlap_ratio < 0:
            raise ValueError(f"overlap_ratio must be >= 0, got {overlap_ratio}")
        dist = clustering.distances
        own = dist[np.arange(dist.shape[0]), clustering.labels]
        inside = dist <= own[:, None] * (1 + overlap_ratio) + 1e-12
        sets = [np.flatnonzero(inside[:, j]).tolist() for j in range(inside.shape[1])]
    n_cls = len(clustering.labels)
    return [s for s in sets if 0 < len(s) < n_cls]


def clusters_by_temperature(logits: Tensor, k: int, temperatures: Sequence[float], max_share: float = 2.0,
                            overlap: int = 0, seed: int = 0) -> tuple[float, Clustering, dict[str, list[int]]]:
    """:func:`confusable_clusters` of ``softmax(logits / T)`` at the smallest ``T`` of ``temperatures`` for which no
    own cluster holds more than ``max_share · C / k`` classes (the last ``T`` if none does). A label-free rule: a
    confident generalist's ``T = 1`` distributions give one giant cluster plus singletons (the covariance columns
    are dominated by their diagonal). Returns ``(T, clustering, {f"{T:g}": own-cluster sizes, largest first})``
    for every ``T`` tried."""
    import torch

    if not temperatures:
        raise ValueError("temperatures must not be empty")
    z = logits.double()
    n_cls = z.shape[1]
    tried: dict[str, list[int]] = {}
    for t in temperatures:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cl = confusable_clusters(torch.softmax(z / t, 1), k, overlap=overlap, seed=seed)
        sizes = np.bincount(cl.labels, minlength=len(cl.clusters)).tolist()
        tried[f"{t:g}"] = sorted(sizes, reverse=True)
        if max(sizes) <= max_share * n_cls / k:
            break
    return float(t), cl, tried
