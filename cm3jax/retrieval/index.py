"""Maximum inner product search over a bank's keys: one results API, two backends.

    index = build_index(keys_ND)                 # exact below AUTO_EXACT_BELOW keys, else ScaNN
    ids_QK, scores_QK = index.search(queries_QD, k)

- `exact`: a jitted XLA matmul and `jax.lax.top_k`, over batches of queries sized so the
  [batch, N] score block stays under a memory budget;
- `scann`: ScaNN's partitioning tree (spherical k-means leaves, `leaves_to_search` probed per query),
  anisotropic asymmetric hashing to score the probed points, then exact re-ranking of the best
  `reorder` by float dot products.

Results: ids int32 [Q, k] (rows of the keys) and scores float32 [Q, k], best first. Where
fewer than k neighbours exist (k above the size, or ScaNN's probed leaves hold fewer), the
row is padded with id -1 and score -inf.

An index saves to a directory: a JSON manifest (backend, parameters, sizes, the bank it
indexes, every file's SHA-256) beside the keys (exact) or ScaNN's serialized searcher.
Loading checks every file before handing it to ScaNN.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Protocol

import jax
import jax.numpy as jnp
import numpy as np
import scann

from cm3jax.errors import UserError
from cm3jax.fileio import built_aside
from cm3jax.manifest import ManifestSpec, record_files
from cm3jax.paths import find_path
from cm3jax.retrieval import scann_kernels
from cm3jax.retrieval.bank import MemoryBank, load_bank

MANIFEST = ManifestSpec("cm3jax_index.json", "retrieval index",
                        "`cm3jax retrieval build --bank BANK --out {directory}`", format="cm3jax-retrieval-index",
                        version=1, keys=("backend", "size", "dim", "params", "files"))
BACKENDS = ("auto", "exact", "scann")
AUTO_EXACT_BELOW = 50_000  # keys; below this exact search is fast enough and has perfect recall
SCORE_BUDGET_BYTES = 512 << 20  # largest [batch, N] float32 score block of the exact backend


class Index(Protocol):
    backend: str
    size: int
    dim: int

    def search(self, queries_QD: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """ids int32 [Q, k] and scores float32 [Q, k] of the k best keys per query, best first."""

    def params(self) -> dict:
        """What the manifest records to rebuild this index's behaviour."""

    def write(self, directory: str) -> None:
        """Writes the backend's files into `directory`."""


def _check_search(queries_QD, k: int, dim: int) -> np.ndarray:
    queries = np.asarray(queries_QD, np.float32)
    if queries.ndim != 2 or queries.shape[1] != dim:
        raise UserError(f"Queries must be [Q, {dim}] (the index's key width), got shape {queries.shape}.")
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise UserError(f"k must be a positive number of neighbours, got {k!r}.")
    if not np.all(np.isfinite(queries)):
        raise UserError("Queries contain NaN or infinite values; embed them again.")
    return queries


def _pad(ids_QK: np.ndarray, scores_QK: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    q, found = ids_QK.shape
    ids = np.full((q, k), -1, np.int32)
    scores = np.full((q, k), -np.inf, np.float32)
    ids[:, :found], scores[:, :found] = ids_QK, scores_QK
    return ids, scores


# ----------------------------------------------------------------------------- exact

def _exact_top_k(keys_ND: jax.Array, queries_BD: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    scores_BN = jnp.einsum("bd,nd->bn", queries_BD, keys_ND, precision=jax.lax.Precision.HIGHEST)
    scores_BK, ids_BK = jax.lax.top_k(scores_BN, k)
    return ids_BK, scores_BK


class ExactIndex:
    """Every key scored against every query; the reference the approximate backend is judged by."""
    backend = "exact"

    def __init__(self, keys_ND: np.ndarray, score_budget_bytes: int = SCORE_BUDGET_BYTES):
        keys = np.asarray(keys_ND, np.float32)
        if keys.ndim != 2 or len(keys) == 0:
            raise UserError(f"An index needs a non-empty [N, D] array of keys, got shape {keys.shape}.")
        self.size, self.dim = keys.shape
        self.keys_ND = jax.device_put(keys)
        # Power-of-two query batches, so a few shapes compile once each.
        self.max_batch = max(1, 2 ** int(math.log2(max(1, score_budget_bytes // (4 * self.size)))))
        self._top_k = jax.jit(_exact_top_k, static_argnums=2)

    def search(self, queries_QD: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        queries = _check_search(queries_QD, k, self.dim)
        found = min(k, self.size)
        q = len(queries)
        batch = min(self.max_batch, 2 ** math.ceil(math.log2(max(q, 1))))
        ids, scores = np.zeros((q, found), np.int32), np.zeros((q, found), np.float32)
        pending = []  # dispatch every batch before reading any back
        for start in range(0, q, batch):
            block = np.zeros((batch, self.dim), np.float32)
            block[:min(batch, q - start)] = queries[start:start + batch]
            pending.append((start, self._top_k(self.keys_ND, block, found)))
        for start, (ids_BK, scores_BK) in pending:
            n = min(batch, q - start)
            ids[start:start + n], scores[start:start + n] = np.asarray(ids_BK)[:n], np.asarray(scores_BK)[:n]
        return _pad(ids, scores, k)

    def params(self) -> dict:
        return {}

    def write(self, directory: str) -> None:
        np.save(os.path.join(directory, "keys.npy"), np.asarray(self.keys_ND), allow_pickle=False)

    @classmethod
    def read(cls, directory: str, params: dict) -> "ExactIndex":
        return cls(np.load(os.path.join(directory, "keys.npy"), allow_pickle=False))


# ----------------------------------------------------------------------------- ScaNN

@dataclasses.dataclass(frozen=True)
class ScannParams:
    """ScaNN's knobs; zeros are filled in from the number of keys by `resolve`."""
    num_leaves: int = 0  # partitions (k-means leaves); 0: about sqrt(N)
    leaves_to_search: int = 0  # leaves probed per query; 0: a tenth of the leaves
    reorder: int = 100  # candidates re-scored exactly after hashing
    dims_per_block: int = 2  # asymmetric hashing: dimensions per 16-centre codebook
    anisotropic_threshold: float = 0.2  # score-aware quantization (ScaNN's recommended value)
    training_sample_size: int = 0  # points the k-means and codebooks train on; 0: min(N, 250k)
    min_partition_size: int = 50
    spherical: bool = True  # spherical k-means (unit centres): the right partitions for unit keys
    soar_lambda: float | None = None  # SOAR: each key also spills into a second, "orthogonal" leaf

    def resolve(self, n: int) -> "ScannParams":
        leaves = self.num_leaves or max(1, min(round(math.sqrt(n)), n // self.min_partition_size))
        if leaves > n:
            raise UserError(f"num_leaves {leaves} exceeds the {n} keys; use fewer leaves (at most one per key).")
        probe = self.leaves_to_search or max(1, round(leaves / 10))
        if not 1 <= probe <= leaves:
            raise UserError(f"leaves_to_search must lie in 1..num_leaves ({leaves}), got {probe}.")
        if self.reorder < 1 or self.dims_per_block < 1:
            raise UserError(f"reorder ({self.reorder}) and dims_per_block ({self.dims_per_block}) must be positive.")
        sample = min(n, self.training_sample_size or 250_000)
        return dataclasses.replace(self, num_leaves=leaves, leaves_to_search=probe, training_sample_size=sample,
                                   min_partition_size=min(self.min_partition_size, max(1, n // leaves)))


class ScannIndex:
    backend = "scann"

    def __init__(self, searcher, size: int, dim: int, params: ScannParams):
        self.searcher, self.size, self.dim, self._params = searcher, size, dim, params

    @classmethod
    def build(cls, keys_ND: np.ndarray, params: ScannParams = ScannParams(), threads: int = 0) -> "ScannIndex":
        scann_kernels.enable()
        keys = np.ascontiguousarray(keys_ND, np.float32)
        if keys.ndim != 2 or len(keys) == 0:
            raise UserError(f"An index needs a non-empty [N, D] array of keys, got shape {keys.shape}.")
        p = params.resolve(len(keys))
        builder = (scann.scann_ops_pybind.builder(keys, 10, "dot_product")
                   .tree(num_leaves=p.num_leaves, num_leaves_to_search=p.leaves_to_search,
                         training_sample_size=p.training_sample_size, min_partition_size=p.min_partition_size,
                         spherical=p.spherical, soar_lambda=p.soar_lambda)
                   .score_ah(p.dims_per_block, anisotropic_quantization_threshold=p.anisotropic_threshold,
                             training_sample_size=p.training_sample_size)
                   .reorder(p.reorder))
        builder.set_n_training_threads(threads or os.cpu_count() or 1)
        return cls(builder.build(), len(keys), keys.shape[1], p)

    def search(self, queries_QD: np.ndarray, k: int, leaves_to_search: int | None = None,
               reorder: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """As `Index.search`; `leaves_to_search` and `reorder` override the built values."""
        queries = _check_search(queries_QD, k, self.dim)
        if len(queries) == 0:
            return _pad(np.zeros((0, 0), np.int32), np.zeros((0, 0), np.float32), k)
        found = min(k, self.size)
        leaves = leaves_to_search or self._params.leaves_to_search
        pre_reorder = max(reorder or self._params.reorder, found)
        search = self.searcher.search_batched_parallel if len(queries) > 1 else self.searcher.search_batched
        ids, scores = search(queries, final_num_neighbors=found, pre_reorder_num_neighbors=pre_reorder,
                             leaves_to_search=leaves)
        ids, scores = np.asarray(ids).astype(np.int32), np.asarray(scores, np.float32)
        missing = np.isnan(scores)  # ScaNN fills absent neighbours with id 0 and score NaN
        ids[missing], scores[missing] = -1, -np.inf
        return _pad(ids, scores, k)

    def params(self) -> dict:
        return dataclasses.asdict(self._params)

    def write(self, directory: str) -> None:
        self.searcher.serialize(directory, relative_path=True)

    @classmethod
    def read(cls, directory: str, params: dict, size: int, dim: int) -> "ScannIndex":
        scann_kernels.enable()
        if os.path.exists(os.path.join(directory, "scann_docids.pkl")):
            raise UserError(f"{directory} holds a pickle (scann_docids.pkl) cm3jax never writes; refusing to load it. "
                            f"Rebuild the index with `cm3jax retrieval build`.")
        searcher = scann.scann_ops_pybind.load_searcher(directory, assets_backcompat_shim=False)
        if searcher.size() != size:
            raise UserError(f"The ScaNN searcher in {directory} holds {searcher.size()} keys, its manifest says "
                            f"{size}; rebuild the index.")
        return cls(searcher, size, dim, ScannParams(**params))


# ----------------------------------------------------------------------------- choosing, saving, loading

def choose_backend(size: int, backend: str = "auto", exact_below: int = AUTO_EXACT_BELOW) -> str:
    if backend not in BACKENDS:
        raise UserError(f"Unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}.")
    if backend == "auto":
        return "exact" if size < exact_below else "scann"
    return backend


def build_index(keys_ND: np.ndarray, backend: str = "auto", scann_params: ScannParams = ScannParams(),
                exact_below: int = AUTO_EXACT_BELOW) -> Index:
    """An index over unit keys: exact search below `exact_below` keys (or when asked), else ScaNN."""
    chosen = choose_backend(len(keys_ND), backend, exact_below)
    return ExactIndex(keys_ND) if chosen == "exact" else ScannIndex.build(keys_ND, scann_params)


def save_index(index: Index, directory: str, bank: dict | None = None) -> dict:
    """Writes `index` into `directory` (absent or empty), built aside. `bank` ({"path", "fingerprint"})
    names the memory bank whose keys it indexes. Returns the manifest."""
    MANIFEST.check_empty(directory)
    with built_aside(directory, prefix=".tmp-index-") as staging:
        index.write(staging)
        return MANIFEST.write(staging, {"backend": index.backend, "size": index.size, "dim": index.dim,
                                        "params": index.params(), "bank": bank, "files": record_files(staging)})


def read_index_manifest(directory: str) -> dict:
    found = MANIFEST.read(directory)
    if found["backend"] not in ("exact", "scann") or not found["files"]:
        raise UserError(f"The manifest of {directory} names backend {found['backend']!r} and files "
                        f"{sorted(found['files'] or [])}; make the index again with {MANIFEST.command(directory)}.")
    return found


def load_index(directory: str) -> tuple[Index, dict]:
    """The index saved in `directory` and its manifest; every file is checked first."""
    manifest = read_index_manifest(directory)
    MANIFEST.check_files(directory, manifest["files"])
    if manifest["backend"] == "exact":
        index = ExactIndex.read(directory, manifest["params"])
    else:
        index = ScannIndex.read(directory, manifest["params"], manifest["size"], manifest["dim"])
    if (index.size, index.dim) != (manifest["size"], manifest["dim"]):
        raise UserError(f"The index in {directory} holds {index.size} x {index.dim} keys, its manifest says "
                        f"{manifest['size']} x {manifest['dim']}; rebuild it.")
    return index, manifest


def load_bank_of(manifest: dict, directory: str) -> MemoryBank:
    """The memory bank an index (saved in `directory`, `manifest` its manifest) was built from,
    refused unless it still holds the keys the index was built over."""
    record = manifest.get("bank")
    if not record:
        raise UserError(f"The index in {directory} names no memory bank; build it from one with "
                        f"`cm3jax retrieval build --bank BANK --out {directory}`.")
    path = find_path(record, directory)
    bank = load_bank(path)
    if bank.fingerprint != record["fingerprint"] or len(bank) != manifest["size"]:
        raise UserError(f"The memory bank at {path} changed since the index in {directory} was built "
                        f"from it; rebuild the index (`cm3jax retrieval build --bank {path}`).")
    return bank
