"""PNG plots of a fold: validation curve with CCP instance boundaries, 2-D view of test embeddings.

matplotlib is optional (`pip install ccpdml[plots]`); without it the plots are skipped with a note.
"""

from __future__ import annotations

import os

import numpy as np


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - depends on the environment
        print("[ccpdml] matplotlib is not installed: skipping plots (pip install matplotlib)")
        return None
    return plt


def _pca_2d(x: np.ndarray, extra: np.ndarray | None = None):
    mean = x.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    basis = vt[:2].T
    return (x - mean) @ basis, None if extra is None else (extra - mean) @ basis


def _ball(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(norms > 1.0, x / np.maximum(norms, 1e-12), x)


def fold_plots(directory, tag, history, monitor, validate_every, embeddings, labels, proxies=None):
    """Write `<tag>_validation.png` and `<tag>_embeddings.png` into `directory`."""
    plt = _pyplot()
    if plt is None:
        return []
    os.makedirs(directory, exist_ok=True)
    written = []
    points = [(h["epoch"], h[monitor]) for h in history if monitor in h]
    if points:
        fig, ax = plt.subplots(figsize=(7, 4))
        steps = [(e + 1) * validate_every for e, _ in points]
        ax.plot(steps, [v for _, v in points], marker=".", label=monitor)
        instances = [(h["epoch"], h.get("ccp_instance")) for h in history]
        previous = None
        for epoch, inst in instances:
            if inst is not None and previous is not None and inst != previous:
                ax.axvline((epoch + 1) * validate_every, color="tab:red", alpha=0.4, linestyle="--")
            previous = inst
        ax.set_xlabel("training step")
        ax.set_ylabel(monitor)
        ax.set_title(f"{tag}: validation (dashed: new CCP problem instance)")
        ax.grid(alpha=0.3)
        path = os.path.join(directory, f"{tag}_validation.png")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    emb = _ball(np.asarray(embeddings, dtype=np.float64))
    prox = None if proxies is None else _ball(np.asarray(proxies, dtype=np.float64))
    xy, pxy = _pca_2d(emb, prox)
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.scatter(xy[:, 0], xy[:, 1], c=np.asarray(labels) % 20, cmap="tab20", s=6, alpha=0.7)
    if pxy is not None:
        ax.scatter(pxy[:, 0], pxy[:, 1], marker="x", c="black", s=12, label="training proxies")
        ax.legend(loc="best")
    ax.set_title(f"{tag}: test embeddings (PCA of ball-normalised vectors)")
    path = os.path.join(directory, f"{tag}_embeddings.png")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    written.append(path)
    return written
