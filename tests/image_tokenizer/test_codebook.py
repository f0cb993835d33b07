import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cm3jax.image_tokenizer.codebook import (FACTOR_FEATURES, FACTOR_PATTERNS, batch_usage_and_perplexity,
                                             code_bits_given_patch, code_factors, code_histogram, codebook_features,
                                             ema_entries, ema_update, pixel_features, restart_dead_codes,
                                             usage_and_perplexity)
from cm3jax.shapes.render import render
from cm3jax.shapes.scene import Scene, ShapeObject
from cm3jax.shapes.spec import PALETTE_NAMES


def test_the_histogram_counts_each_code():
    codes = jnp.array([[0, 2], [2, 3]])
    np.testing.assert_array_equal(code_histogram(codes, 5), [1, 0, 2, 1, 0])


@pytest.mark.parametrize("counts,usage,perplexity", [
    ([2, 2, 0, 0], 0.5, 2.0),
    ([1, 1, 1, 1], 1.0, 4.0),
    ([5, 0, 0, 0], 0.25, 1.0),
    ([3, 1, 0, 0], 0.5, float(np.exp(-(0.75 * np.log(0.75) + 0.25 * np.log(0.25))))),
])
def test_usage_and_perplexity_on_known_counts(counts, usage, perplexity):
    assert usage_and_perplexity(counts) == pytest.approx((usage, perplexity))
    jitted = jax.jit(batch_usage_and_perplexity)(jnp.array(counts))
    assert (float(jitted[0]), float(jitted[1])) == pytest.approx((usage, perplexity), rel=1e-6)


def test_no_codes_have_no_usage():
    assert usage_and_perplexity([0, 0, 0]) == (0.0, 0.0)


def test_dead_codes_age_and_restart_on_the_worst_represented_vectors():
    embedding_KD = jnp.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])
    z_ND = jnp.array([[0.0, 0.1], [0.1, 0.0], [7.0, 7.0], [9.0, 9.0]])
    error_N = jnp.array([0.0, 0.0, 5.0, 5.0])  # only the last two vectors are far from every code
    counts_K = jnp.array([4, 0, 0])
    embedding, ages, restarted = restart_dead_codes(embedding_KD, jnp.array([3, 1, 5]), counts_K, z_ND, error_N,
                                                    jax.random.key(0), restart_after_steps=2)
    np.testing.assert_array_equal(restarted, [False, True, True])
    np.testing.assert_array_equal(ages, [0, 0, 0])
    np.testing.assert_array_equal(embedding[0], embedding_KD[0])
    assert sorted(map(tuple, np.asarray(embedding[1:]).tolist())) == [(7.0, 7.0), (9.0, 9.0)]
    _, ages, restarted = restart_dead_codes(embedding_KD, jnp.array([0, 0, 0]), counts_K, z_ND, error_N,
                                            jax.random.key(0), restart_after_steps=2)
    np.testing.assert_array_equal(ages, [0, 1, 1])
    assert not bool(restarted.any()), "codes younger than restart_after_steps wait"


def test_at_most_one_code_restarts_per_vector():
    embedding, ages, restarted = restart_dead_codes(jnp.zeros((4, 2)), jnp.full(4, 9), jnp.zeros(4, jnp.int32),
                                                    jnp.array([[1.0, 1.0], [2.0, 2.0]]), jnp.ones(2),
                                                    jax.random.key(0), restart_after_steps=2)
    np.testing.assert_array_equal(restarted, [True, True, False, False])
    np.testing.assert_array_equal(ages, [0, 0, 10, 10])
    assert sorted(map(tuple, np.asarray(embedding[:2]).tolist())) == [(1.0, 1.0), (2.0, 2.0)]


def test_dead_codes_are_restarted_on_poorly_represented_vectors():
    clusters_CD = jnp.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    z_ND = jnp.repeat(clusters_CD, 8, axis=0) + 0.01 * jax.random.normal(jax.random.key(0), (24, 2))
    embedding_KD = jnp.array([[0.0, 0.0], [-50.0, -50.0], [-60.0, -50.0], [-50.0, -60.0]])
    nearest = lambda e: jnp.argmin(jnp.sum((z_ND[:, None] - e[None]) ** 2, -1), -1)
    codes_N = nearest(embedding_KD)
    assert set(np.asarray(codes_N).tolist()) == {0}
    age_K = jnp.zeros(4, jnp.int32)
    restarted_per_step = []
    for step in range(8):
        codes_N = nearest(embedding_KD)
        error_N = jnp.sum((z_ND - embedding_KD[codes_N]) ** 2, -1)
        embedding_KD, age_K, restarted = restart_dead_codes(embedding_KD, age_K, code_histogram(codes_N, 4), z_ND,
                                                            error_N, jax.random.fold_in(jax.random.key(1), step), 2)
        restarted_per_step.append(int(np.sum(restarted)))
    assert restarted_per_step[:2] == [0, 3], "unused codes restart once they are restart_after_steps old"
    error_before_N = jnp.sum((z_ND - embedding_KD[0]) ** 2, -1)
    error_after_N = jnp.sum((z_ND - embedding_KD[nearest(embedding_KD)]) ** 2, -1)
    assert float(jnp.mean(error_after_N)) < 0.5 * float(jnp.mean(error_before_N)), "restarts cut the error"
    distance_to_well_represented_K = jnp.linalg.norm(embedding_KD[1:] - clusters_CD[0], axis=-1)
    assert bool(jnp.all(distance_to_well_represented_K > 5.0)), \
        "restarts go to the vectors the codebook represents worst, not to the well-represented cluster"


def test_ema_entries_follow_the_mean_of_their_vectors():
    previous_KD = jnp.array([[0.0, 0.0], [5.0, 5.0], [9.0, 9.0]])
    count_K, sum_KD = jnp.full(3, 0.5), 0.5 * previous_KD
    z_ND = jnp.array([[1.0, 2.0], [3.0, 4.0], [6.0, 6.0]])
    codes_N = jnp.array([0, 0, 1])  # code 2 unused this batch
    count_K, sum_KD = ema_update(count_K, sum_KD, codes_N, z_ND, decay=0.5)
    np.testing.assert_allclose(count_K, [0.25 + 1.0, 0.25 + 0.5, 0.25])
    entries = ema_entries(count_K, sum_KD, previous_KD)
    np.testing.assert_allclose(entries[0], (0.25 * previous_KD[0] + 0.5 * (z_ND[0] + z_ND[1])) / 1.25, rtol=1e-6)
    np.testing.assert_allclose(entries[1], (0.25 * previous_KD[1] + 0.5 * z_ND[2]) / 0.75, rtol=1e-6)
    np.testing.assert_allclose(entries[2], previous_KD[2], rtol=1e-6, err_msg="an unused entry keeps its place")
    assert np.array_equal(ema_entries(jnp.zeros(3), sum_KD, previous_KD), previous_KD)


def test_code_bits_given_patch_is_zero_for_a_function_of_the_patch_and_counts_synonyms():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 2, size=(50, 8, 8, 3)).astype(np.uint8) * 255
    images[:, :4, :4] = 0  # one patch that recurs in every image
    patches = images.reshape(50, 2, 4, 2, 4, 3).transpose(0, 1, 3, 2, 4, 5).reshape(50, 2, 2, -1)
    _, ids = np.unique(patches.reshape(200, -1), axis=0, return_inverse=True)
    codes = ids.reshape(50, 2, 2)
    assert code_bits_given_patch(images, codes) == pytest.approx(0.0, abs=1e-9)
    synonyms = codes.copy()
    synonyms[::2, 0, 0] += 1000  # the recurring patch gets one of two codes, half the time each
    # that patch is a quarter of the patches, each carrying one bit its pixels do not show
    assert code_bits_given_patch(images, synonyms) == pytest.approx(0.25, abs=1e-9)
    with pytest.raises(ValueError, match="does not tile"):
        code_bits_given_patch(images, codes[:, :, :1].repeat(3, axis=2))


def test_codebook_features_are_centred_unit_mean_square_and_keep_the_geometry():
    embedding = np.random.default_rng(0).normal(3.0, 5.0, (64, 6))
    features = codebook_features(embedding)
    np.testing.assert_allclose(features.mean(0), 0.0, atol=1e-6)
    np.testing.assert_allclose(np.mean(np.sum(features ** 2, axis=1)), 1.0, rtol=1e-5)
    distances = lambda x: np.linalg.norm(x[:, None] - x[None], axis=-1)  # noqa: E731
    ratio = distances(features)[np.triu_indices(64, 1)] / distances(embedding)[np.triu_indices(64, 1)]
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-5)  # one scale for every distance


def test_a_linear_score_of_pixel_features_prefers_any_one_look():
    """Each pixel's RGB and squared length: -|x - c|^2 per pixel is linear in them, so for any
    wanted look some weights rank exactly the codes that draw it first (gray between black and
    white included, which a score linear in RGB alone could never prefer)."""
    palette = np.array([[0, 0, 0], [255, 255, 255], [128, 128, 128], [220, 40, 40], [40, 80, 220]], np.uint8)
    rng = np.random.default_rng(0)
    looks = palette[rng.integers(0, len(palette), (200, 2, 2))]
    looks[:5] = palette[2]  # five codes draw plain gray
    features = pixel_features(looks)
    assert features.shape == (200, 16) and features.dtype == np.float32
    np.testing.assert_allclose(features.mean(0), 0.0, atol=1e-6)
    for wanted in (0, 17, 123):
        target = looks[wanted].astype(np.float64) / 127.5 - 1.0
        weights = np.concatenate([2 * target, -np.ones(target.shape[:-1] + (1,))], axis=-1).ravel()
        scores = features @ weights
        best = np.flatnonzero(np.isclose(scores, scores.max()))
        np.testing.assert_array_equal(best, np.flatnonzero((looks == looks[wanted]).all(axis=(1, 2, 3))))


def _patch_codes(images_NRR3: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes that are a function of their 4 x 4 patch (ids of the distinct patches), and the patches."""
    n = len(images_NRR3)
    patches = images_NRR3.reshape(n, 8, 4, 8, 4, 3).transpose(0, 1, 3, 2, 4, 5).reshape(n * 64, -1)
    unique, ids = np.unique(patches, axis=0, return_inverse=True)
    return ids.reshape(n, 8, 8), unique


def test_code_factors_share_a_mask_across_colours_and_name_each_colour():
    circle = lambda color, background: Scene(id="s", background=background, objects=(  # noqa: E731
        ShapeObject("circle", color, "large", "top left", (5, 5), 8),))
    images = np.stack([render(circle("red", "black")), render(circle("blue", "black")), render(circle("red", "white"))])
    codes, patches = _patch_codes(images)
    features = code_factors(images, codes, codebook_size=len(patches) + 3)
    assert features.shape == (len(patches) + 3, FACTOR_FEATURES) and features.dtype == np.float32
    np.testing.assert_array_equal(features[len(patches):], 0.0)  # codes the images never use
    colours = len(PALETTE_NAMES)

    def slot(code, i):
        return features[code, FACTOR_PATTERNS + i * colours:FACTOR_PATTERNS + (i + 1) * colours]

    red, blue, on_white = codes[:, 0, 1]  # the patch right of the top-left one: a piece of the circle's top edge
    assert len({red, blue, on_white}) == 3, "three different patches"
    for code in (red, blue, on_white):
        assert features[code, :FACTOR_PATTERNS].sum() == 1.0
    np.testing.assert_array_equal(features[red, :FACTOR_PATTERNS], features[blue, :FACTOR_PATTERNS])  # one mask
    np.testing.assert_array_equal(features[red, :FACTOR_PATTERNS], features[on_white, :FACTOR_PATTERNS])
    index = PALETTE_NAMES.index
    assert slot(red, 0)[index("black")] == 1 and slot(red, 1)[index("red")] == 1 and slot(red, 2).sum() == 0
    assert slot(blue, 1)[index("blue")] == 1 and slot(on_white, 0)[index("white")] == 1
    np.testing.assert_array_equal(np.flatnonzero(slot(red, 3)), sorted([index("black"), index("red")]))
    plain = codes[0, 7, 7]  # bottom right: nothing but background
    assert slot(plain, 0)[index("black")] == 1 and slot(plain, 1).sum() == 0
    assert not np.array_equal(features[plain, :FACTOR_PATTERNS], features[red, :FACTOR_PATTERNS])


def test_a_code_that_encodes_several_patches_takes_the_commonest():
    images = np.zeros((3, 32, 32, 3), np.uint8)
    images[0, :4, :4] = (220, 40, 40)  # one red patch; two black images
    codes = np.zeros((3, 8, 8), np.int32)  # every patch is code 0: black 191 times, red once
    features = code_factors(images, codes, codebook_size=2)
    black = PALETTE_NAMES.index("black")
    assert features[0, FACTOR_PATTERNS + black] == 1.0 and features[0, FACTOR_PATTERNS:].sum() == 2.0
    with pytest.raises(ValueError, match="does not tile"):
        code_factors(images, codes[:, :, :3], codebook_size=2)
