"""greedy_k_center against a per-class numpy loop (METHOD §3.4)."""

import numpy as np
import pytest

from ccpdml.proxies import greedy_k_center


def _reference(pool, initial, k):
    """Per-class farthest-first with squared distances; np.argmax = first index on ties."""
    out = []
    for c in range(pool.shape[0]):
        p = pool[c].astype(np.float64)
        if initial.shape[1] == 0:
            m = np.full(len(p), np.inf)
        else:
            m = ((p[:, None, :] - initial[c][None, :, :]) ** 2).sum(-1).min(1)
        picks = []
        for _ in range(k):
            i = int(np.argmax(m))
            picks.append(pool[c, i])
            m = np.minimum(m, ((p - p[i]) ** 2).sum(-1))
        out.append(np.stack(picks))
    return np.stack(out)


def test_matches_reference_with_random_initial_set():
    rng = np.random.default_rng(0)
    # integer coordinates: squared distances are exact in float32, so argmax is comparable
    pool = rng.integers(-5, 6, size=(6, 9, 3)).astype("float32")
    initial = rng.integers(-5, 6, size=(6, 2, 3)).astype("float32")
    got = np.asarray(greedy_k_center(pool, initial, 4))
    np.testing.assert_array_equal(got, _reference(pool, initial, 4))


def test_all_zero_initial_picks_largest_norm_first():
    pool = np.array([[[1.0, 0.0], [0.0, 3.0], [2.0, 0.0], [0.0, -2.5]]], dtype="float32")
    got = np.asarray(greedy_k_center(pool, np.zeros((1, 3, 2), "float32"), 2))
    # first: largest norm (0, 3); second: farthest from it, (0, -2.5) at squared distance 30.25
    np.testing.assert_array_equal(got[0], [[0.0, 3.0], [0.0, -2.5]])
    np.testing.assert_array_equal(got, _reference(pool, np.zeros((1, 3, 2)), 2))


def test_ties_take_first_index_and_duplicates_when_pool_is_small():
    """Zero initial set: m = ‖p‖² = [1, 9, 9], tie → index 1 (0, 3); then m = [1, 0, 9] →
    (3, 0); then [1, 0, 0] → (0, 1); then all 0 → index 0 again (a duplicate, k > M)."""
    pool = np.array([[[0.0, 1.0], [0.0, 3.0], [3.0, 0.0]]], dtype="float32")
    got = np.asarray(greedy_k_center(pool, np.zeros((1, 1, 2), "float32"), 4))
    np.testing.assert_array_equal(got[0], [[0.0, 3.0], [3.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    np.testing.assert_array_equal(got, _reference(pool, np.zeros((1, 1, 2)), 4))


def test_empty_initial_set_starts_at_index_zero():
    rng = np.random.default_rng(1)
    pool = rng.integers(-4, 5, size=(3, 5, 2)).astype("float32")
    got = np.asarray(greedy_k_center(pool, np.zeros((3, 0, 2), "float32"), 3))
    np.testing.assert_array_equal(got[:, 0], pool[:, 0])
    np.testing.assert_array_equal(got, _reference(pool, np.zeros((3, 0, 2)), 3))


def test_normalize_uses_directions_but_returns_raw_rows():
    pool = np.array([[[10.0, 0.0], [0.0, 1.0], [-1.0, 0.1]]], dtype="float32")
    initial = np.array([[[1.0, 0.0]]], dtype="float32")
    raw = np.asarray(greedy_k_center(pool, initial, 1))
    unit = np.asarray(greedy_k_center(pool, initial, 1, normalize=True))
    np.testing.assert_array_equal(raw[0, 0], [10.0, 0.0])  # raw: far in norm
    np.testing.assert_array_equal(unit[0, 0], pool[0, 2])  # normalised: opposite direction


def test_rejects_bad_shapes():
    with pytest.raises(ValueError, match="C \\(axis 0\\)"):
        greedy_k_center(np.zeros((2, 3, 4)), np.zeros((3, 1, 4)), 1)
    with pytest.raises(ValueError, match=r"\[C, M, D\]"):
        greedy_k_center(np.zeros((3, 4)), np.zeros((3, 1, 4)), 1)


@pytest.mark.slow
def test_sop_scale_matches_reference_on_sampled_classes():
    """The full SOP-sized batch (11,318 classes × 7 candidates × 128-D) runs in one call and each
    class's picks are its own (batched over classes without mixing). Speed is measured by
    `bench/bench_reinit.py` (`make bench`), not asserted here."""
    rng = np.random.default_rng(2)
    # integer coordinates keep the squared distances exact, so argmax ties compare exactly
    pool = rng.integers(-4, 5, size=(11318, 7, 128)).astype("float32")
    initial = rng.integers(-4, 5, size=(11318, 4, 128)).astype("float32")
    out = np.asarray(greedy_k_center(pool, initial, 4))
    assert out.shape == (11318, 4, 128)
    sample = rng.choice(11318, size=25, replace=False)
    np.testing.assert_array_equal(out[sample], _reference(pool[sample], initial[sample], 4))
