"""The k-nearest-neighbour graph over teacher embeddings that NSL trains the student with.

Similarity is cosine, as in NSL's graph builder (``nsl.tools.build_graph``): emotion is
carried more by the direction of an embedding than by its length, which also depends on
loudness. The graph is exact (all pairs), which is cheap for corpora of a few thousand
utterances.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ser.errors import SERError


@dataclass(frozen=True)
class Graph:
    """Row i lists utterance i's neighbours (most similar first) and the edge weights.

    Missing edges (fewer than k neighbours above the threshold) have index -1 and weight 0.
    """

    neighbors: np.ndarray  # (N, k) int64
    weights: np.ndarray  # (N, k) float32

    @property
    def n_edges(self) -> int:
        return int((self.neighbors >= 0).sum())

    def label_agreement(self, labels: np.ndarray) -> float:
        """Share of edges joining two utterances with the same label: how much the graph knows."""
        mask = self.neighbors >= 0
        if not mask.any():
            return float("nan")
        rows = np.broadcast_to(np.arange(len(labels))[:, None], self.neighbors.shape)
        return float((labels[rows[mask]] == labels[self.neighbors[mask]]).mean())


def chance_agreement(labels: np.ndarray) -> float:
    """Label agreement of a random graph: the probability that two random utterances share a label."""
    shares = np.bincount(labels) / len(labels)
    return float((shares**2).sum())


def knn_graph(embeddings: np.ndarray, k: int, threshold: float | None = None) -> Graph:
    """Each utterance's ``k`` most cosine-similar others, optionally only those with similarity >= ``threshold``.

    Edges need a positive similarity: the weight multiplies a distance that training shrinks,
    so a negative one would push dissimilar utterances apart instead. Ties go to the lower
    index, so the graph does not depend on sort internals.
    """
    embeddings = np.asarray(embeddings, dtype=np.float64)
    n = len(embeddings)
    if not 1 <= k < n:
        raise SERError(f"transfer.k={k} must be between 1 and the number of training utterances minus one ({n - 1})")
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    unit = embeddings / np.where(norms > 0, norms, 1.0)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    # Stable sort of the negated similarities: equal similarities keep index order.
    neighbors = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    weights = np.take_along_axis(similarity, neighbors, axis=1)
    keep = weights > 0 if threshold is None else (weights > 0) & (weights >= threshold)
    neighbors, weights = np.where(keep, neighbors, -1), np.where(keep, weights, 0.0)
    return Graph(neighbors.astype(np.int64), weights.astype(np.float32))
