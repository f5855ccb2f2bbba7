import numpy as np
import pytest

from dagnn_export.graph import correlation_matrices, cooccurrence, gat_mask, gcn_normalize, propagation_matrix

# 3 labels, 5 samples, chosen so every entry of P is easy to check by hand.
Y = np.array([
    [1, 1, 0],
    [1, 0, 0],
    [1, 1, 1],
    [0, 1, 0],
    [1, 0, 0],
], dtype=np.float32)


def test_counts_from_hand_made_labels():
    m, n = cooccurrence(Y)
    np.testing.assert_array_equal(n, [4, 3, 1])
    np.testing.assert_array_equal(m, [[4, 2, 1], [2, 3, 1], [1, 1, 1]])


def test_p_b_a_exactly():
    g = correlation_matrices(Y, tau=0.4, p=0.5)
    # P_ij = M_ij / N_j  (column j divides by the count of label j)
    expected_p = np.array([[1, 2 / 3, 1], [2 / 4, 1, 1], [1 / 4, 1 / 3, 1]], dtype=np.float32)
    np.testing.assert_allclose(g["P"], expected_p, rtol=1e-6)
    # B = P >= tau off the diagonal: 2/3, 1, 0.5, 1 pass 0.4; 0.25, 0.333 do not
    np.testing.assert_array_equal(g["B"], [[0, 1, 1], [1, 0, 1], [0, 0, 0]])
    np.testing.assert_array_equal(g["A"], [[1, 0.5, 0.5], [0.5, 1, 0.5], [0, 0, 1]])


def test_threshold_is_inclusive_and_unseen_label_has_no_edges():
    y = np.array([[1, 1, 0], [1, 0, 0]], dtype=np.float32)  # label 2 never occurs
    g = correlation_matrices(y, tau=0.5, p=0.2)
    assert g["B"][1, 0] == 1  # P(L1|L0) = 1/2 >= 0.5
    assert not g["B"][:, 2].any() and not g["B"][2, :].any()
    assert g["A"][2, 2] == 1


def test_gcn_symmetric_normalisation():
    adj = np.array([[1, 0.5, 0], [0.5, 1, 0.5], [0, 0.5, 1]], dtype=np.float32)
    d = adj.sum(1)
    expected = adj / np.sqrt(np.outer(d, d))
    np.testing.assert_allclose(gcn_normalize(adj), expected, rtol=1e-6)
    g = correlation_matrices(Y, tau=0.4, p=0.5)
    np.testing.assert_allclose(propagation_matrix(g, "gcn"), gcn_normalize(g["A"]))
    with pytest.raises(ValueError, match="self loop"):
        gcn_normalize(np.zeros((2, 2)))


def test_gat_mask_is_binary_graph_plus_self_loops():
    g = correlation_matrices(Y, tau=0.4, p=0.5)
    np.testing.assert_array_equal(gat_mask(g["B"]), [[1, 1, 1], [1, 1, 1], [0, 0, 1]])
    np.testing.assert_array_equal(propagation_matrix(g, "gat"), gat_mask(g["B"]))
    # p does not change what GAT sees
    np.testing.assert_array_equal(propagation_matrix(correlation_matrices(Y, 0.4, 0.9), "gat"),
                                  propagation_matrix(g, "gat"))


def test_transposed_direction_flips_who_reads_whom():
    g = correlation_matrices(Y, tau=0.4, p=0.5)
    # given: label 2 (rare) reads no one, everyone reads label 2; transposed: the reverse
    np.testing.assert_array_equal(propagation_matrix(g, "gat", "transposed"), [[1, 1, 0], [1, 1, 0], [1, 1, 1]])
    np.testing.assert_allclose(propagation_matrix(g, "gcn", "transposed"), gcn_normalize(g["A"].T))
    with pytest.raises(ValueError, match="direction"):
        propagation_matrix(g, "gat", "sideways")


def test_graph_direction_is_a_validated_config_option():
    from dagnn_export.config import make_config
    from dagnn_runtime.errors import InputError

    assert make_config().graph_direction == "given"
    assert make_config(graph_direction="transposed").graph_direction == "transposed"
    with pytest.raises(InputError, match="graph_direction"):
        make_config(graph_direction="up")
