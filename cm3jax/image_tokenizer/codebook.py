"""Codebook health: usage statistics; the dead-code cure (codes unused for a while are
restarted from encoder outputs of the current batch, preferring the ones the codebook
represents worst, so the new codes land where they are needed); and the EMA codebook update
(each entry the running mean of the vectors assigned to it, VQ-VAE's k-means-like update); and
what the decoder may read of each code (its codebook vector, what it draws, its Shapes factors)."""

from __future__ import annotations

import collections

import jax
import jax.numpy as jnp
import numpy as np

from cm3jax.shapes.spec import BACKGROUNDS, PALETTE_NAMES, PALETTE_RGB


def code_histogram(codes: jax.Array, codebook_size: int) -> jax.Array:
    """int32[K]: how often each code occurs."""
    return jnp.zeros(codebook_size, jnp.int32).at[codes.ravel()].add(1)


def usage_and_perplexity(counts_K) -> tuple[float, float]:
    """(share of codes used at least once, exp of the entropy of the code distribution)."""
    counts_K = np.asarray(counts_K, np.float64)
    total = counts_K.sum()
    if total == 0:
        return 0.0, 0.0
    p = counts_K[counts_K > 0] / total
    return float((counts_K > 0).mean()), float(np.exp(-(p * np.log(p)).sum()))


def batch_usage_and_perplexity(counts_K: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`usage_and_perplexity` inside jit."""
    p = counts_K / jnp.maximum(counts_K.sum(), 1)
    entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))
    return jnp.mean(counts_K > 0), jnp.exp(entropy)


def restart_dead_codes(embedding_KD: jax.Array, code_age_K: jax.Array, counts_K: jax.Array,
                       z_ND: jax.Array, quantization_error_N: jax.Array, rng: jax.Array,
                       restart_after_steps: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Ages every code unused in this batch by one step; codes `restart_after_steps` old are
    replaced by distinct batch vectors drawn with probability proportional to their
    quantisation error (at most one code per vector and step; the rest wait for the next
    batch). Returns (embedding, ages, bool[K] which codes restarted)."""
    num_codes, num_vectors = embedding_KD.shape[0], z_ND.shape[0]
    code_age_K = jnp.where(counts_K > 0, 0, code_age_K + 1)
    dead_K = code_age_K >= restart_after_steps
    num_picks = min(num_codes, num_vectors)
    # Gumbel top-k: a weighted draw of num_picks distinct vectors.
    keys_N = jnp.log(quantization_error_N + 1e-12) + jax.random.gumbel(rng, (num_vectors,))
    _, picks_P = jax.lax.top_k(keys_N, num_picks)
    dead_rank_K = jnp.cumsum(dead_K) - 1
    restart_K = dead_K & (dead_rank_K < num_picks)
    candidates_KD = z_ND[picks_P[jnp.clip(dead_rank_K, 0, num_picks - 1)]].astype(embedding_KD.dtype)
    embedding_KD = jnp.where(restart_K[:, None], candidates_KD, embedding_KD)
    code_age_K = jnp.where(restart_K, 0, code_age_K)
    return embedding_KD, code_age_K, restart_K


def ema_update(count_K: jax.Array, sum_KD: jax.Array, codes_N: jax.Array, z_ND: jax.Array,
               decay: float) -> tuple[jax.Array, jax.Array]:
    """Decays the per-code (vector count, vector sum) and adds this batch's; an entry is
    sum / count, so an entry no batch uses keeps its place."""
    batch_count_K = jax.ops.segment_sum(jnp.ones_like(codes_N, count_K.dtype), codes_N, count_K.shape[0])
    batch_sum_KD = jax.ops.segment_sum(z_ND.astype(sum_KD.dtype), codes_N, count_K.shape[0])
    return decay * count_K + (1 - decay) * batch_count_K, decay * sum_KD + (1 - decay) * batch_sum_KD


def ema_entries(count_K: jax.Array, sum_KD: jax.Array, previous_KD: jax.Array) -> jax.Array:
    """sum / count, or the previous entry once the count has decayed to nothing."""
    usable_K = count_K > 1e-20
    return jnp.where(usable_K[:, None], sum_KD / jnp.where(usable_K, count_K, 1.0)[:, None], previous_KD)


def _patches(images_NRR3: np.ndarray, codes_Nhw: np.ndarray) -> np.ndarray:
    """uint8 [N * h * w, P]: each code's patch of pixels, flattened, in the codes' order."""
    n, h, w = codes_Nhw.shape
    resolution = images_NRR3.shape[1]
    if resolution % h or resolution % w:
        raise ValueError(f"a {h}x{w} code grid does not tile {resolution}x{resolution} images")
    ph, pw = resolution // h, resolution // w
    return images_NRR3.reshape(n, h, ph, w, pw, -1).transpose(0, 1, 3, 2, 4, 5).reshape(n * h * w, -1)


def code_bits_given_patch(images_NRR3: np.ndarray, codes_Nhw: np.ndarray) -> float:
    """H(code | the pixels of its patch), in bits: how much a code says beyond what it shows.

    0 when every distinct patch always gets the same code. A decoder that draws from captions
    has to guess these bits, and nothing in a caption tells them: a tokenizer that spends its
    codes on synonyms of one patch (the background, above all) makes its images unlearnable
    even at perfect reconstruction."""
    _, patch_ids = np.unique(_patches(images_NRR3, codes_Nhw), axis=0, return_inverse=True)
    pairs = np.stack([patch_ids.ravel(), codes_Nhw.ravel()], axis=1)
    _, pair_counts = np.unique(pairs, axis=0, return_counts=True)
    _, patch_counts = np.unique(patch_ids, return_counts=True)
    total = float(len(pairs))
    entropy = lambda counts: -float(np.sum(counts / total * np.log2(counts / total)))  # noqa: E731
    return max(entropy(pair_counts) - entropy(patch_counts), 0.0)


def codebook_features(embedding_KF) -> np.ndarray:
    """float32 [K, F]: codebook vectors centred and scaled to a mean square of one per entry, as the
    decoder's `image_code_features` read them."""
    embedding_KF = np.asarray(embedding_KF, np.float64)
    centred = embedding_KF - embedding_KF.mean(axis=0)
    rms = np.sqrt(np.mean(np.sum(centred ** 2, axis=1)))
    return (centred / max(rms, 1e-12)).astype(np.float32)


PIXEL_FEATURES = 4  # per pixel: R, G, B and the squared length


def pixel_features(looks_KHW3) -> np.ndarray:
    """float32 [K, H * W * PIXEL_FEATURES]: what each code draws (uint8 [K, H, W, 3]) as every pixel's RGB in
    [-1, 1] and its squared length, so that a linear score of them can prefer any one colour at
    each pixel (-|x - c|^2 = 2 c.x - |x|^2 - |c|^2); centred and scaled as `codebook_features`."""
    x = np.asarray(looks_KHW3, np.float64) / 127.5 - 1.0
    per_pixel = np.concatenate([x, np.sum(x * x, axis=-1, keepdims=True)], axis=-1)
    return codebook_features(per_pixel.reshape(len(per_pixel), -1))


FACTOR_PATTERNS = 320  # the commonest masks kept apart; rarer ones share the last slot
FACTOR_COLOR_SLOTS = ("background", "first object colour", "second object colour", "present")
FACTOR_FEATURES = FACTOR_PATTERNS + len(FACTOR_COLOR_SLOTS) * len(PALETTE_NAMES)


def _pixel_roles(palette_P) -> tuple[tuple[int, ...], tuple[int, int, int]]:
    """(each pixel's role, the palette colours of the background and first two object roles; -1
    for none). Roles: 0 the first background-class colour, 1 and 2 the first and second object
    colours (a third shares role 2), 3 any other background-class colour, 4 off the palette."""
    background, objects = [], []
    roles = []
    for colour in palette_P:
        if colour < 0:
            roles.append(4)
        elif PALETTE_NAMES[colour] in BACKGROUNDS:
            background += [colour] if colour not in background else []
            roles.append(0 if background.index(colour) == 0 else 3)
        else:
            objects += [colour] if colour not in objects else []
            roles.append(1 + min(objects.index(colour), 1))
    slots = (background[:1] or [-1]) + (objects[:2] + [-1, -1])[:2]
    return tuple(roles), tuple(slots)


def code_factors(images_NRR3: np.ndarray, codes_Nhw: np.ndarray, codebook_size: int) -> np.ndarray:
    """float32 [K, FACTOR_FEATURES]: each code's Shapes factors, read from the patch it most often
    encodes in these images: its mask (which pixels are background, which the first or second
    object colour; one-hot over the FACTOR_PATTERNS commonest masks) and its colours (one-hot
    per role, and which palette colours it holds). A red and a blue piece of the same shape edge
    share their mask and differ only in colour, so what the decoder learns of one reaches the
    other. Codes the images never use get zeros."""
    unique_patches, patch_ids = np.unique(_patches(images_NRR3, codes_Nhw), axis=0, return_inverse=True)
    pairs, counts = np.unique(np.stack([codes_Nhw.ravel(), patch_ids.ravel()], axis=1), axis=0, return_counts=True)
    order = np.lexsort((-counts, pairs[:, 0]))  # by code, commonest patch first
    pairs = pairs[order]
    first = np.ones(len(pairs), bool)
    first[1:] = pairs[1:, 0] != pairs[:-1, 0]
    majority = {int(code): int(patch) for code, patch in pairs[first]}

    distance_QP = np.abs(unique_patches.reshape(-1, 3)[:, None, :].astype(np.int32) - PALETTE_RGB).sum(-1)
    palette_Q = np.where(distance_QP.min(-1) == 0, distance_QP.argmin(-1), -1).reshape(len(unique_patches), -1)
    described = {code: _pixel_roles(palette_Q[patch]) for code, patch in majority.items()}
    uses = collections.Counter(roles for roles, _ in described.values())
    by_frequency = sorted(uses, key=lambda roles: (-uses[roles], roles))
    pattern_slot = {roles: min(i, FACTOR_PATTERNS - 1) for i, roles in enumerate(by_frequency)}
    colours = len(PALETTE_NAMES)
    features = np.zeros((codebook_size, FACTOR_FEATURES), np.float32)
    for code, (roles, slots) in described.items():
        features[code, pattern_slot[roles]] = 1.0
        for i, colour in enumerate(slots):
            if colour >= 0:
                features[code, FACTOR_PATTERNS + i * colours + colour] = 1.0
        for colour in set(palette_Q[majority[code]]) - {-1}:
            features[code, FACTOR_PATTERNS + 3 * colours + colour] = 1.0
    return features
