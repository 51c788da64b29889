"""PNG plots of a fold: validation curve with CCP instance boundaries, retrieval examples.

`<tag>_retrieval.png` shows example test queries (one per class, classes drawn with a fixed seed)
with their top-k neighbours, found with the metrics' conventions (`ccpdml.retrieval`: queries
against the gallery when the test split has a query block, else leave-one-out), each neighbour
framed green with "✓" when it has the query's class and red with "✗" otherwise.
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


def fold_plots(directory, tag, history, monitor, validate_every, embeddings, test, **retrieval):
    """Write `<tag>_validation.png` and `<tag>_retrieval.png` into `directory`.

    `test` is the test `Split` embedded as `embeddings`; `retrieval` goes to `retrieval_examples`
    (query_count, class_names, num_queries, k).
    """
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
    written.append(retrieval_examples(plt, directory, tag, embeddings, test, **retrieval))
    return written


def _pick_queries(labels, candidates, num_queries, seed):
    """Up to `num_queries` query rows: one random row of each of randomly drawn classes."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels[candidates])
    chosen = np.sort(rng.choice(classes, size=min(num_queries, len(classes)), replace=False))
    return np.asarray([rng.choice(candidates[labels[candidates] == c]) for c in chosen])


def _show(ax, image, frame, text):
    image = np.asarray(image)
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(image, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(frame)
        spine.set_linewidth(4)
    ax.set_title(text, fontsize=8, color=frame if frame != "black" else "black")


def retrieval_examples(
    plt, directory, tag, embeddings, test, query_count=None, class_names=None, num_queries=8, k=5
):
    """Write `<tag>_retrieval.png`: queries (rows) and their top-k neighbours (module doc)."""
    from ccpdml.retrieval import RetrievalIndex

    labels = test.labels
    n = len(labels)
    queries = np.arange(query_count) if query_count else np.arange(n)
    gallery = np.arange(query_count, n) if query_count else np.arange(n)
    k = min(k, len(gallery) - (not query_count))
    rows = _pick_queries(labels, queries, num_queries, seed=0)
    index = RetrievalIndex(embeddings[gallery], gallery.astype(str), labels[gallery])
    exclude = None if query_count else rows  # leave-one-out: never retrieve the query itself
    found = index.search(embeddings[rows], k, exclude=exclude)

    def name(label):
        return class_names[int(label)] if class_names else str(int(label))

    fig, axes = plt.subplots(
        len(rows), k + 1, figsize=(1.7 * (k + 1), 1.6 * len(rows)), squeeze=False
    )
    correct = 0
    for i, row in enumerate(rows):
        _show(axes[i, 0], test.load_image(int(row)), "black", f"query\nclass {name(labels[row])}")
        for j in range(k):
            g = int(gallery[found.indices[i, j]])
            ok = labels[g] == labels[row]
            correct += int(ok)
            mark, frame = ("✓", "tab:green") if ok else ("✗", "tab:red")
            text = f"{mark} {name(labels[g])}\nd={found.distances[i, j]:.3f}"
            _show(axes[i, j + 1], test.load_image(g), frame, text)
    fig.suptitle(
        f"{tag}: test queries and their top-{k} neighbours "
        f"({correct}/{len(rows) * k} of the shown neighbours share the query's class)",
        fontsize=9,
    )
    fig.tight_layout()
    path = os.path.join(directory, f"{tag}_retrieval.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
