"""The k-nearest-neighbour graph over teacher embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from ser.errors import SERError
from ser.transfer.graph import chance_agreement, knn_graph

# Four directions on the plane: 0 and 1 are 10 degrees apart, 2 is 80 degrees from 0, 3 is opposite 0.
ANGLES = np.deg2rad([0.0, 10.0, 80.0, 180.0])
POINTS = np.stack([np.cos(ANGLES), np.sin(ANGLES)], axis=1) * np.array([[1.0], [5.0], [0.2], [3.0]])


def test_neighbours_are_the_most_cosine_similar_others_regardless_of_length():
    graph = knn_graph(POINTS, k=2)
    assert graph.neighbors[:3].tolist() == [[1, 2], [0, 2], [1, 0]]
    np.testing.assert_allclose(graph.weights[0], np.cos(np.deg2rad([10.0, 80.0])), atol=1e-6)
    np.testing.assert_allclose(graph.weights[2], np.cos(np.deg2rad([70.0, 80.0])), atol=1e-6)


def test_dissimilar_utterances_get_no_edge():
    graph = knn_graph(POINTS, k=2)  # point 3 is more than 90 degrees from every other
    assert graph.neighbors[3].tolist() == [-1, -1] and graph.weights[3].tolist() == [0.0, 0.0]
    assert graph.n_edges == 6


def test_threshold_drops_weak_edges_and_marks_them_missing():
    graph = knn_graph(POINTS, k=2, threshold=0.5)  # cos 70 = 0.34 and cos 80 = 0.17 go
    assert graph.neighbors.tolist() == [[1, -1], [0, -1], [-1, -1], [-1, -1]]
    assert graph.weights[2].tolist() == [0.0, 0.0] and graph.n_edges == 2


def test_ties_go_to_the_lower_index():
    same = np.ones((4, 3))
    assert knn_graph(same, k=2).neighbors.tolist() == [[1, 2], [0, 2], [0, 1], [0, 1]]


def test_k_must_leave_room_for_the_node_itself():
    with pytest.raises(SERError, match="transfer.k=4"):
        knn_graph(POINTS, k=4)


def test_label_agreement_counts_edges_between_equal_labels():
    graph = knn_graph(POINTS, k=1)  # edges 0-1, 1-0, 2-1 (3 has none)
    assert graph.label_agreement(np.array([0, 0, 1, 1])) == pytest.approx(2 / 3)
    assert chance_agreement(np.array([0, 0, 1, 1])) == pytest.approx(0.5)
