import numpy as np
import pytest

from cm3jax.retrieval import scann_kernels
from cm3jax.retrieval.index import ScannIndex, ScannParams

pytestmark = pytest.mark.skipif(not scann_kernels.current(), reason="this ScaNN build has no kernel flags")


def clustered_keys(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((16, dim)).astype(np.float32)
    x = centres[rng.integers(0, 16, n)] + 0.5 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_building_an_index_switches_on_every_level_the_cpu_runs():
    scann_kernels.select([])
    ScannIndex.build(clustered_keys(2000, 32, 0), ScannParams(num_leaves=8, leaves_to_search=2))
    assert {level for level, on in scann_kernels.current().items() if on} >= set(scann_kernels.cpu_levels())


@pytest.mark.skipif(not scann_kernels.cpu_levels(), reason="the CPU runs no wide kernels")
def test_wide_kernels_find_what_the_sse4_kernels_find():
    keys, queries = clustered_keys(20_000, 64, 1), clustered_keys(200, 64, 2)
    index = ScannIndex.build(keys, ScannParams(num_leaves=40, leaves_to_search=8, reorder=50))
    results = {}
    try:
        for levels in ([], scann_kernels.cpu_levels()):
            scann_kernels.select(levels)
            results[tuple(levels)] = index.search(queries, 10)
    finally:
        scann_kernels.enable()
    (narrow_ids, narrow_scores), (wide_ids, wide_scores) = results.values()
    np.testing.assert_allclose(wide_scores, narrow_scores, rtol=1e-5, atol=1e-6)
    assert np.mean(wide_ids == narrow_ids) > 0.99  # only ties may swap


def test_unknown_or_unsupported_levels_are_refused():
    with pytest.raises(ValueError, match="unknown"):
        scann_kernels.select(["avx1024"])
    if "avx512" not in scann_kernels.cpu_levels():
        with pytest.raises(ValueError, match="cannot run"):
            scann_kernels.select(["avx512"])


def test_builds_with_working_detection_are_left_alone(monkeypatch):
    try:
        scann_kernels.select([])
        monkeypatch.setattr(scann_kernels.importlib.metadata, "version", lambda name: "9.9.9")
        assert not scann_kernels.needs_enabling()
        assert scann_kernels.enable() == [] and not any(scann_kernels.current().values())
    finally:
        monkeypatch.undo()
        scann_kernels.enable()
    assert {level for level, on in scann_kernels.current().items() if on} == set(scann_kernels.cpu_levels())
