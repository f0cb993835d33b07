import json
import os

import numpy as np
import pytest

from cm3jax.errors import UserError
from cm3jax.retrieval.index import (ExactIndex, ScannIndex, ScannParams, build_index, choose_backend, load_index,
                                    save_index)


def _unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def clustered(n: int, dim: int, clusters: int, seed: int, spread: float = 0.6) -> np.ndarray:
    """Unit vectors around `clusters` random unit centres (noise of norm about `spread`)."""
    rng = np.random.default_rng(seed)
    centres = _unit(rng.standard_normal((clusters, dim)))
    noise = rng.standard_normal((n, dim)) * spread / np.sqrt(dim)
    return _unit(centres[rng.integers(clusters, size=n)] + noise)


KEYS = clustered(4000, 32, 40, seed=0)


def _queries(n=200):
    # Same mixture (same centres: seed 0), fresh noise and assignments.
    rng = np.random.default_rng(7)
    centres = _unit(np.random.default_rng(0).standard_normal((40, 32)))
    return _unit(centres[rng.integers(40, size=n)] + rng.standard_normal((n, 32)) * 0.6 / np.sqrt(32))


@pytest.fixture(scope="module")
def scann_index():
    return ScannIndex.build(KEYS, ScannParams(num_leaves=40, leaves_to_search=6, reorder=50))


def test_exact_search_equals_a_numpy_argsort_reference():
    rng = np.random.default_rng(1)
    keys, queries = _unit(rng.standard_normal((500, 16))), _unit(rng.standard_normal((37, 16)))
    index = ExactIndex(keys, score_budget_bytes=8 * 4 * 500)  # batches of 8 queries: 5 batches, the last padded
    assert index.max_batch == 8
    ids, scores = index.search(queries, 7)
    reference = queries.astype(np.float64) @ keys.T.astype(np.float64)
    expected = np.argsort(-reference, axis=1, kind="stable")[:, :7]
    assert ids.dtype == np.int32 and scores.dtype == np.float32 and ids.shape == (37, 7)
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(reference, expected, 1), atol=1e-5)


def test_asking_for_more_neighbours_than_keys_pads_the_rows():
    keys = _unit(np.random.default_rng(2).standard_normal((5, 8)))
    ids, scores = ExactIndex(keys).search(keys[:2], 8)
    assert sorted(ids[0, :5].tolist()) == list(range(5)) and ids[0, 0] == 0
    assert (ids[:, 5:] == -1).all() and np.isneginf(scores[:, 5:]).all()


def test_bad_queries_are_user_errors():
    index = ExactIndex(KEYS[:10])
    with pytest.raises(UserError, match=r"\[Q, 32\]"):
        index.search(np.zeros((3, 16), np.float32), 2)
    with pytest.raises(UserError, match="positive"):
        index.search(KEYS[:2], 0)
    with pytest.raises(UserError, match="NaN"):
        index.search(np.full((1, 32), np.nan, np.float32), 2)


def test_scann_reaches_recall_at_10_of_0_9_on_clustered_keys(scann_index):
    queries = _queries()
    truth, _ = ExactIndex(KEYS).search(queries, 10)
    ids, scores = scann_index.search(queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids.tolist(), truth.tolist())])
    assert recall >= 0.9, recall
    # re-ranked scores are the exact inner products of the returned keys, best first
    np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", queries, KEYS[ids]), atol=1e-5)
    assert (np.diff(scores, axis=1) <= 1e-6).all()
    # probing one leaf without re-ranking enough loses neighbours: the knobs do something
    few, _ = scann_index.search(queries, 10, leaves_to_search=1, reorder=10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(few.tolist(), truth.tolist())]) < recall


def test_scann_with_soar_spilling_keeps_its_recall():
    index = ScannIndex.build(KEYS, ScannParams(num_leaves=40, leaves_to_search=4, reorder=50, soar_lambda=1.5))
    queries = _queries(100)
    truth, _ = ExactIndex(KEYS).search(queries, 10)
    ids, _ = index.search(queries, 10)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids.tolist(), truth.tolist())]) >= 0.9
    assert index.params()["soar_lambda"] == 1.5 and index.params()["spherical"] is True


def test_scann_round_trips_through_save_and_load(tmp_path, scann_index):
    directory = str(tmp_path / "index")
    manifest = save_index(scann_index, directory, bank={"path": "/some/bank", "fingerprint": "sha256:x"})
    os.rename(directory, str(tmp_path / "moved"))  # the saved searcher does not depend on its path
    loaded, read = load_index(str(tmp_path / "moved"))
    assert isinstance(loaded, ScannIndex) and read == manifest and read["backend"] == "scann"
    assert read["params"] == {**ScannParams(num_leaves=40, leaves_to_search=6, reorder=50).__dict__,
                              "training_sample_size": 4000}
    queries = _queries(50)
    for a, b in zip(scann_index.search(queries, 10), loaded.search(queries, 10)):
        np.testing.assert_array_equal(a, b)


def test_exact_round_trips_through_save_and_load(tmp_path):
    index = ExactIndex(KEYS[:300])
    save_index(index, str(tmp_path / "exact"))
    loaded, manifest = load_index(str(tmp_path / "exact"))
    assert manifest["backend"] == "exact" and manifest["bank"] is None and isinstance(loaded, ExactIndex)
    for a, b in zip(index.search(KEYS[:20], 5), loaded.search(KEYS[:20], 5)):
        np.testing.assert_array_equal(a, b)


def test_loading_refuses_missing_or_corrupt_directories(tmp_path, scann_index):
    with pytest.raises(UserError, match="no such directory"):
        load_index(str(tmp_path / "absent"))
    os.makedirs(tmp_path / "empty")
    with pytest.raises(UserError, match="no cm3jax_index.json"):
        load_index(str(tmp_path / "empty"))
    directory = str(tmp_path / "index")
    save_index(scann_index, directory)
    path = os.path.join(directory, "hashed_dataset.npy")
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0x01
    open(path, "wb").write(bytes(data))
    with pytest.raises(UserError, match="corrupt: hashed_dataset.npy"):
        load_index(directory)
    os.remove(path)
    with pytest.raises(UserError, match="missing hashed_dataset.npy"):
        load_index(directory)
    manifest_path = os.path.join(directory, "cm3jax_index.json")
    manifest = json.load(open(manifest_path))
    json.dump({**manifest, "backend": "faiss"}, open(manifest_path, "w"))
    with pytest.raises(UserError, match="backend 'faiss'"):
        load_index(directory)
    with pytest.raises(UserError, match="not empty"):
        save_index(scann_index, directory)


def test_the_backend_is_chosen_by_size_or_explicitly():
    assert choose_backend(49_999) == "exact" and choose_backend(50_000) == "scann"
    assert choose_backend(10, "scann") == "scann" and choose_backend(10**7, "exact") == "exact"
    with pytest.raises(UserError, match="Unknown backend"):
        choose_backend(10, "faiss")
    assert build_index(KEYS[:100]).backend == "exact"
    automatic = build_index(KEYS, exact_below=1000)
    assert automatic.backend == "scann" and automatic.params()["num_leaves"] == 63  # about sqrt(4000)


def test_scann_parameters_are_checked():
    with pytest.raises(UserError, match="leaves_to_search"):
        ScannParams(num_leaves=10, leaves_to_search=11).resolve(1000)
    with pytest.raises(UserError, match="exceeds"):
        ScannParams(num_leaves=20).resolve(10)
