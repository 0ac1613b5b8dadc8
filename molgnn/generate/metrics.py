"""Generation metrics: validity, uniqueness, novelty and the MOSES set, computed as MOSES computed them.

Definitions follow MOSES (Polykovskiy et al. 2020, Front. Pharmacol. 11:565644) as implemented in
``molsets`` 0.3.1 (``moses/metrics/metrics.py``), the code behind its published tables; that package
no longer installs, so everything is re-implemented here on RDKit + numpy + torch. Let G be the
generated list (``None`` = a draw that produced no SMILES), V the valid entries of G in order
(duplicates kept) as canonical SMILES, U = set(V):

================  ==============================================================================
``valid``         |V| / |G|: RDKit parses and sanitizes the SMILES, before any filtering or
                  correction. ``valid_corrected``: the same for the corrected list, when given.
``unique@k``      |set(V[:k])| / |V[:k]| (first k valid; fewer than k valid -> warning, all used).
``Novelty``       |U minus T| / |U|, T = canonical SMILES of the training set.
``FCD/<ref>``     Fréchet distance between Gaussians fitted to ChemNet activations of V and of the
                  reference (``metrics_fcd``; weights from the fcd_torch 1.0.7 wheel).
``SNN/<ref>``     mean over V of the max Tanimoto similarity to the reference molecules
                  (Morgan radius 2, 1024 bits; two empty fingerprints have similarity 1).
``Frag/<ref>``    cosine similarity of BRICS-fragment count vectors of V and of the reference.
``Scaf/<ref>``    cosine similarity of Bemis-Murcko scaffold count vectors (scaffolds with >= 2 rings).
``IntDiv``        1 - mean over pairs (i, j) of V x V (i = j included) of Tanimoto(i, j).
``IntDiv2``       1 - mean_i sqrt(mean_j Tanimoto(i, j)^2).
``Filters``       fraction of V passing the MOSES filters (``metrics_chem.passes_filters``).
================  ==============================================================================

Validity, canonical SMILES, uniqueness and novelty (including NaN over an empty set) are the
definitions of ``molgnn.chem.canonical`` and ``molgnn.chem.sample_rates``, which the pipeline's
generation rates use too; the property values come from the registry ``molgnn.chem.properties``.

``<ref>`` is ``Test`` (MOSES test set) and ``TestSF`` (scaffold test set). Differences from the
MOSES code, all deliberate: the training set is canonicalized for Novelty (MOSES compared raw
strings, which depends on the RDKit version that wrote them); ``None`` entries are accepted as
invalid draws; the trace of the matrix square root in FCD is taken from symmetric square roots and
an SVD instead of ``scipy.linalg.sqrtm`` (same number, no complex round-off). MOSES's property
distances (logP, SA, QED, weight: Wasserstein-1 between the property values of V and of the
reference, ``property_distances``) are computed apart from ``moses_metrics``, as MOSES reports them
apart.

Sample size matters: SNN, Frag, IntDiv and Filters are means and barely move with n, but FCD is
biased upwards by roughly c (1/n + 1/n_ref) and Scaf (cosine of sparse scaffold counts) grows with
n. MOSES scores 30,000 generated molecules; compare only figures computed at the same n
(``benchmarks/moses_reference.py`` shows the effect on the MOSES training set).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import multiprocessing
import os
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rdkit
import torch

from molgnn.chem.canonical import canonical_smiles, get_mol
from molgnn.chem.sample_rates import MetricWarning, fraction, novel_fraction, uniqueness, validity
from molgnn.generate.metrics_chem import (
    FP_BITS,
    PROPERTY_NAMES,
    brics_fragments,
    describe_generated,
    describe_reference,
    element_signature,
    molecular_properties,
    morgan_fingerprint,
    murcko_scaffold,
    packed_fingerprint,
    passes_filters,
)
from molgnn.generate.metrics_fcd import (
    CHEMNET_SHA256,
    activation_statistics,
    chemnet_activations,
    frechet_distance,
)

__all__ = [
    "METRICS_VERSION", "MetricWarning", "ReferenceStats", "canonical_smiles", "cosine_similarity",
    "METRIC_GROUPS", "fcd", "fingerprints", "fraction_passes_filters", "fraction_unique", "fraction_valid",
    "fragment_similarity", "get_mol", "internal_diversity", "mlflow_safe", "moses_metrics", "novelty",
    "passes_filters", "reference_cache_path", "reference_stats", "scaffold_similarity", "snn",
]

log = logging.getLogger(__name__)

#: Part of every cache key: bump when a definition changes.
METRICS_VERSION = "1"
#: Maps over fewer items than this run in-process even when n_jobs > 1 (process start-up costs ~1 s).
MIN_PARALLEL_ITEMS = 2000


# ----------------------------------------------------------------------------------------------
# process pool


class _Mapper:
    """``map`` over a lazily started process pool. Workers run RDKit only (never torch), so they are
    forked where the platform can (no ``if __name__ == "__main__"`` guard needed in the caller, no
    re-imports) and spawned elsewhere."""

    def __init__(self, n_jobs: int) -> None:
        self.n_jobs = max(1, int(n_jobs))
        self._pool: ProcessPoolExecutor | None = None

    def map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        if self.n_jobs == 1 or len(items) < MIN_PARALLEL_ITEMS:
            return [fn(x) for x in items]
        if self._pool is None:
            method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
            self._pool = ProcessPoolExecutor(self.n_jobs, mp_context=multiprocessing.get_context(method))
        chunksize = max(1, min(1000, len(items) // (self.n_jobs * 8)))
        with warnings.catch_warnings():  # 3.12+ warns on fork of a multi-threaded process (torch's pool)
            warnings.simplefilter("ignore", DeprecationWarning)
            return list(self._pool.map(fn, items, chunksize=chunksize))

    def __enter__(self) -> _Mapper:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


# ----------------------------------------------------------------------------------------------
# validity, uniqueness, novelty


def fraction_valid(generated: Sequence[str | None], *, single_fragment: bool = False, n_jobs: int = 1) -> float:
    """Fraction of entries that are valid molecules: |valid| / |generated|.

    An entry is valid when RDKit parses and sanitizes it (``get_mol``); ``None`` and ``""`` count as
    invalid draws, so pass the raw samples, before any filtering or correction, for the number papers
    report. MOSES counts a multi-fragment SMILES (``"CC.O"``) as valid; ``single_fragment=True``
    counts it as invalid instead.

    >>> fraction_valid(["CCO", "C1CC", None, "CC.O"]), fraction_valid(["CCO", "CC.O"], single_fragment=True)
    (0.5, 0.5)
    """
    generated = list(generated)
    if not generated:
        raise ValueError("fraction_valid needs at least one entry")
    with _Mapper(n_jobs) as mapper:
        canon = mapper.map(canonical_smiles, generated)
    if single_fragment:
        canon = [None if c is not None and "." in c else c for c in canon]
    return validity(canon)


def fraction_unique(smiles: Sequence[str], k: int | None = None) -> float:
    """unique@k: distinct canonical SMILES among the first k entries, divided by their number.

    ``smiles`` must hold valid molecules only, in generation order (MOSES raises ValueError on an
    invalid one, so does this). When fewer than k are given, MOSES semantics: a ``MetricWarning``
    and the fraction over all of them. ``k=None`` uses all.

    >>> fraction_unique(["CCO", "OCC", "CCN", "CC"]), fraction_unique(["CCO", "OCC", "CCN", "CC"], k=2)
    (0.75, 0.5)
    """
    smiles = list(smiles)
    if k is not None:
        if len(smiles) < k:
            warnings.warn(f"unique@{k} asked of {len(smiles)} valid molecules; computed over all of them "
                          "(MOSES semantics)", MetricWarning, stacklevel=2)
        smiles = smiles[:k]
    canon = [canonical_smiles(s) for s in smiles]
    if any(c is None for c in canon):
        raise ValueError("invalid molecule passed to fraction_unique; pass valid SMILES only")
    return uniqueness(canon)   # NaN with a MetricWarning when empty


def _novel_fraction(unique: set[str], train: Iterable[str | None], mapper: _Mapper) -> float:
    """Novelty of a set of canonical SMILES; exact but canonicalizes only training SMILES that can match.

    1. g in U that equals a raw training string and is its own canonical form is in T.
    2. For the rest, only training strings with the same heavy-atom element signature are
       canonicalized and compared.
    """
    if not unique:
        return novel_fraction(0, 0)   # undefined: NaN with a MetricWarning
    train = [t for t in train if isinstance(t, str) and t]
    raw = set(train)
    in_raw = [g for g in unique if g in raw]
    found = {g for g, c in zip(in_raw, mapper.map(canonical_smiles, in_raw)) if c == g}
    rest = unique - found
    if rest:
        wanted = {element_signature(g) for g in rest}
        candidates = [t for t in train if t not in found and element_signature(t) in wanted]
        log.info("novelty: canonicalizing %d of %d training SMILES", len(candidates), len(train))
        found |= rest & set(mapper.map(canonical_smiles, candidates))
    return novel_fraction(len(unique), len(found))


def novelty(generated: Sequence[str | None], train: Iterable[str | None], *, n_jobs: int = 1) -> float:
    """Novelty: fraction of the distinct valid generated molecules not in the training set.

    |U minus T| / |U| with U the distinct canonical SMILES of the valid generated entries and T the
    canonical SMILES of the valid training entries (both canonicalized with the same RDKit, so a
    training file written by another RDKit version still matches). NaN with a warning when U is empty.

    >>> novelty(["OCC", "CCN", "CCN", None], train=["CCO", "c1ccccc1"])
    0.5
    """
    with _Mapper(n_jobs) as mapper:
        unique = {c for c in mapper.map(canonical_smiles, list(generated)) if c is not None}
        return _novel_fraction(unique, train, mapper)


# ----------------------------------------------------------------------------------------------
# fingerprint similarities


def fingerprints(smiles: Sequence[str], *, n_jobs: int = 1) -> np.ndarray:
    """Morgan fingerprints (radius 2, 1024 bits) as a uint8 0/1 array, one row per valid SMILES
    (invalid entries are skipped)."""
    with _Mapper(n_jobs) as mapper:
        packed = mapper.map(packed_fingerprint, list(smiles))
    return _unpack([p for p in packed if p is not None])


def _unpack(packed: list[bytes] | np.ndarray) -> np.ndarray:
    if isinstance(packed, np.ndarray):
        return np.unpackbits(packed, axis=1, count=FP_BITS)
    if not packed:
        return np.zeros((0, FP_BITS), dtype=np.uint8)
    return np.unpackbits(np.frombuffer(b"".join(packed), dtype=np.uint8).reshape(len(packed), -1),
                         axis=1, count=FP_BITS)


def _as_fps(molecules: Sequence[str] | np.ndarray) -> np.ndarray:
    if isinstance(molecules, np.ndarray):
        return molecules
    mols = [m for m in map(get_mol, molecules) if m is not None]
    return np.stack([morgan_fingerprint(m) for m in mols]) if mols else np.zeros((0, FP_BITS), dtype=np.uint8)


def _intersections(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|a_i AND b_j| for 0/1 int8 rows, as float32 (exact: counts <= 1024)."""
    if a.device.type == "cpu":
        try:
            return torch._int_mm(a, b.T).float()  # int8 x int8 -> int32, ~4x float32 matmul here
        except RuntimeError:
            pass
    return a.float() @ b.float().T


def _tanimoto_reduce(gen: np.ndarray, ref: np.ndarray, *, agg: str, powers: tuple[int, ...] = (1,),
                     device: str = "cpu", gen_chunk: int = 4096, ref_chunk: int = 8192) -> dict[int, np.ndarray] | np.ndarray:
    """For each generated row: the max (``agg="max"``) or, per power p, the mean of Tanimoto^p over
    the reference rows. Tanimoto = |a AND b| / (|a| + |b| - |a AND b|), 1 when both are empty; computed
    in float32 like MOSES, chunked so memory stays ~ gen_chunk x ref_chunk floats."""
    g = torch.from_numpy(np.ascontiguousarray(gen, dtype=np.int8)).to(device)
    r = torch.from_numpy(np.ascontiguousarray(ref, dtype=np.int8)).to(device)
    g_count = g.sum(1, dtype=torch.int32).float()
    r_count = r.sum(1, dtype=torch.int32).float()
    both_empty = bool((g_count == 0).any() and (r_count == 0).any())
    best = torch.zeros(len(g), dtype=torch.float32, device=device)
    sums = {p: torch.zeros(len(g), dtype=torch.float64, device=device) for p in powers}
    for i in range(0, len(g), gen_chunk):
        gi, gci = g[i:i + gen_chunk], g_count[i:i + gen_chunk, None]
        for j in range(0, len(r), ref_chunk):
            sim = _intersections(gi, r[j:j + ref_chunk])
            union = gci + r_count[None, j:j + ref_chunk]
            union.sub_(sim)
            sim.div_(union)
            if both_empty:
                sim = torch.nan_to_num(sim, nan=1.0)
            if agg == "max":
                torch.maximum(best[i:i + gen_chunk], sim.amax(1), out=best[i:i + gen_chunk])
            else:
                for p in powers:
                    sums[p][i:i + gen_chunk] += (sim if p == 1 else sim.pow(p)).sum(1, dtype=torch.float64)
    if agg == "max":
        return best.double().cpu().numpy()
    return {p: (s / len(r)).cpu().numpy() for p, s in sums.items()}


def snn(generated: Sequence[str] | np.ndarray, reference: Sequence[str] | np.ndarray, *,
        device: str = "cpu") -> float:
    """SNN: mean over generated molecules of the Tanimoto similarity to their nearest reference
    molecule (Morgan radius 2, 1024 bits). Arguments: SMILES lists (invalid skipped) or 0/1 fingerprint
    arrays from ``fingerprints``.

    >>> snn(["CCO", "c1ccccc1"], ["CCO", "c1ccccc1", "CCN"])
    1.0
    """
    gen, ref = _as_fps(generated), _as_fps(reference)
    if len(gen) == 0 or len(ref) == 0:
        warnings.warn("SNN of an empty set is undefined", MetricWarning, stacklevel=2)
        return float("nan")
    return float(_tanimoto_reduce(gen, ref, agg="max", device=device).mean())


def internal_diversity(generated: Sequence[str] | np.ndarray, *, p: int = 1, device: str = "cpu") -> float:
    """IntDiv_p = 1 - mean_i (mean_j T(i, j)^p)^(1/p) over all ordered pairs of the set, i = j
    included (MOSES); T = Tanimoto on Morgan radius 2, 1024 bits. ``p=1``: IntDiv, ``p=2``: IntDiv2.

    >>> internal_diversity(["CCO"] * 5)
    0.0
    >>> round(internal_diversity(["CCO", "c1ccccc1"]), 3)  # pairs: 1, 0, 0, 1
    0.5
    """
    return _internal_diversities(_as_fps(generated), (p,), device)[p]


def _internal_diversities(fps: np.ndarray, powers: tuple[int, ...], device: str) -> dict[int, float]:
    if len(fps) == 0:
        warnings.warn("IntDiv of an empty set is undefined", MetricWarning, stacklevel=3)
        return {p: float("nan") for p in powers}
    means = _tanimoto_reduce(fps, fps, agg="mean", powers=powers, device=device)
    return {p: float(1.0 - (means[p] ** (1.0 / p)).mean()) for p in powers}


# ----------------------------------------------------------------------------------------------
# fragment and scaffold similarity, filters, FCD


def cosine_similarity(counts_a: Mapping[str, int], counts_b: Mapping[str, int]) -> float:
    """Cosine similarity of two count dictionaries (missing keys count 0); NaN if either is empty.

    >>> cosine_similarity({"a": 1, "b": 1}, {"a": 2, "b": 2}), cosine_similarity({"a": 1}, {"b": 1})
    (1.0, 0.0)
    """
    if not counts_a or not counts_b:
        return float("nan")
    dot = sum(v * counts_b.get(k, 0) for k, v in counts_a.items())
    return float(dot / math.sqrt(sum(v * v for v in counts_a.values()) * sum(v * v for v in counts_b.values())))


def _counts(molecules: Sequence[str] | Mapping[str, int], fn: Callable) -> Mapping[str, int]:
    if isinstance(molecules, Mapping):
        return molecules
    counts: Counter[str] = Counter()
    for smi in molecules:
        mol = get_mol(smi)
        if mol is not None:
            out = fn(mol)
            counts.update(out if isinstance(out, list) else [out] if out is not None else [])
    return counts


def fragment_similarity(generated: Sequence[str] | Mapping[str, int],
                        reference: Sequence[str] | Mapping[str, int]) -> float:
    """Frag: cosine similarity of the BRICS-fragment count vectors of two sets (each molecule adds all
    its fragments, see ``metrics_chem.brics_fragments``). SMILES lists or precomputed Counters.

    >>> fragment_similarity(["CCOC(=O)c1ccccc1"], ["CCOC(=O)c1ccccc1", "CCOC(=O)c1ccccc1"])
    1.0
    """
    return cosine_similarity(_counts(reference, brics_fragments), _counts(generated, brics_fragments))


def scaffold_similarity(generated: Sequence[str] | Mapping[str, int],
                        reference: Sequence[str] | Mapping[str, int]) -> float:
    """Scaf: cosine similarity of Bemis-Murcko scaffold count vectors, counting only scaffolds with
    at least 2 rings (``metrics_chem.murcko_scaffold``); NaN when either set has none.

    >>> scaffold_similarity(["Cc1ccc(C2CC2)cc1", "c1ccc(C2CC2)cc1N"], ["c1ccc(C2CC2)cc1"])
    1.0
    """
    return cosine_similarity(_counts(reference, murcko_scaffold), _counts(generated, murcko_scaffold))


def fraction_passes_filters(generated: Sequence[str]) -> float:
    """Filters: fraction of the valid molecules that pass the MOSES filters (charges, allowed atoms,
    rings of 8+, 22 MCF + 480 PAINS SMARTS; see ``metrics_chem.passes_filters``).

    >>> fraction_passes_filters(["CC(=O)Nc1ccc(O)cc1", "CC=O", "C1CC"])  # the invalid one is skipped
    0.5
    """
    mols = [m for m in map(get_mol, generated) if m is not None]
    if not mols:
        warnings.warn("Filters of an empty set is undefined", MetricWarning, stacklevel=2)
        return float("nan")
    return sum(map(passes_filters, mols)) / len(mols)


def fcd(generated: Sequence[str] | tuple[np.ndarray, np.ndarray],
        reference: Sequence[str] | tuple[np.ndarray, np.ndarray], *, device: str = "cpu") -> float:
    """Fréchet ChemNet Distance between two sets (lower is closer; ~0 for two samples of one set).

    Each side: the canonical SMILES of its valid molecules (duplicates kept) -> ChemNet activations ->
    mean and covariance; FCD = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)). Either side may be a
    precomputed ``(mu, sigma)`` (e.g. ``ReferenceStats.fcd_mu, .fcd_sigma``). NaN with a warning
    when a side has fewer than 2 valid molecules.

    >>> s = ["CCO", "c1ccccc1", "CC(=O)O", "CCN"]
    >>> abs(fcd(s, s)) < 1e-6
    True
    """
    stats = []
    for side in (generated, reference):
        if isinstance(side, tuple):
            stats.append(side)
            continue
        canon = [c for c in map(canonical_smiles, side) if c is not None]
        if len(canon) < 2:
            warnings.warn("FCD needs at least 2 valid molecules per set", MetricWarning, stacklevel=2)
            return float("nan")
        stats.append(activation_statistics(chemnet_activations(canon, device=device)))
    return frechet_distance(stats[1][0], stats[1][1], stats[0][0], stats[0][1])


# ----------------------------------------------------------------------------------------------
# reference statistics (cached)


@dataclass
class ReferenceStats:
    """What the metrics need from a reference set, computed once: packed fingerprints (n x 128
    uint8, ``np.packbits`` of the 1024 bits), BRICS-fragment and scaffold Counters, ChemNet mean and
    covariance (None when computed with ``fcd=False``), and how many entries were invalid (skipped)."""

    n: int
    n_invalid: int
    fingerprints: np.ndarray
    fragments: Counter
    scaffolds: Counter
    fcd_mu: np.ndarray | None = None
    fcd_sigma: np.ndarray | None = None

    def save(self, path: str | Path) -> None:
        """Write as ``.npz`` (no pickled objects), atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {
            "meta": np.array(json.dumps({"n": self.n, "n_invalid": self.n_invalid})),
            "fingerprints": self.fingerprints,
            "frag_keys": np.array(list(self.fragments), dtype=str),
            "frag_counts": np.array(list(self.fragments.values()), dtype=np.int64),
            "scaf_keys": np.array(list(self.scaffolds), dtype=str),
            "scaf_counts": np.array(list(self.scaffolds.values()), dtype=np.int64),
        }
        if self.fcd_mu is not None:
            arrays["fcd_mu"], arrays["fcd_sigma"] = self.fcd_mu, self.fcd_sigma
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> ReferenceStats:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            return cls(
                n=meta["n"], n_invalid=meta["n_invalid"], fingerprints=data["fingerprints"],
                fragments=Counter(dict(zip(data["frag_keys"].tolist(), data["frag_counts"].tolist()))),
                scaffolds=Counter(dict(zip(data["scaf_keys"].tolist(), data["scaf_counts"].tolist()))),
                fcd_mu=data["fcd_mu"] if "fcd_mu" in data else None,
                fcd_sigma=data["fcd_sigma"] if "fcd_sigma" in data else None,
            )


def _cache_key(smiles: Sequence[str], fcd: bool) -> str:
    h = hashlib.sha256(f"molgnn-moses-ref v{METRICS_VERSION} rdkit {rdkit.__version__} "
                       f"chemnet {CHEMNET_SHA256 if fcd else 'none'}\n".encode())
    for s in smiles:
        h.update(s.encode() if isinstance(s, str) else b"\x00")
        h.update(b"\n")
    return h.hexdigest()


def reference_cache_path(smiles: Sequence[str], cache_dir: str | Path, *, fcd: bool = True) -> Path:
    """Where ``reference_stats`` caches the statistics of these SMILES under ``cache_dir``."""
    return Path(cache_dir) / f"moses-ref-{_cache_key(list(smiles), fcd)}.npz"


def reference_stats(smiles: Sequence[str], *, n_jobs: int = 1, device: str = "cpu", fcd: bool = True,
                    cache_dir: str | Path | None = None, _mapper: _Mapper | None = None) -> ReferenceStats:
    """Compute (or load from ``cache_dir``) the ``ReferenceStats`` of a reference set.

    The cache file is ``<cache_dir>/moses-ref-<sha256>.npz``, keyed on the SMILES in order, the
    metrics version, the RDKit version and the ChemNet weights; ``cache_dir=None`` disables caching.
    Invalid reference entries are skipped with a ``MetricWarning``. Cost on 2 CPU cores for the
    176k-molecule MOSES test set: ~1 min of RDKit and ~4-5 min of ChemNet.
    """
    smiles = list(smiles)
    path = reference_cache_path(smiles, cache_dir, fcd=fcd) if cache_dir is not None else None
    if path is not None:
        # statistics with FCD serve a request without FCD too
        for candidate in (path, reference_cache_path(smiles, cache_dir, fcd=True)):
            if candidate.exists():
                log.info("reference stats: loaded %s", candidate)
                return ReferenceStats.load(candidate)
    mapper = _mapper or _Mapper(n_jobs)
    try:
        t0 = time.perf_counter()
        described = mapper.map(describe_reference, smiles)
    finally:
        if _mapper is None:
            mapper.__exit__()
    valid = [d for d in described if d is not None]
    if len(valid) < len(smiles):
        warnings.warn(f"{len(smiles) - len(valid)} invalid reference SMILES skipped", MetricWarning, stacklevel=2)
    fragments: Counter[str] = Counter()
    for d in valid:
        fragments.update(d[2])
    stats = ReferenceStats(
        n=len(valid), n_invalid=len(smiles) - len(valid),
        fingerprints=np.frombuffer(b"".join(d[1] for d in valid), dtype=np.uint8).reshape(len(valid), -1),
        fragments=fragments, scaffolds=Counter(d[3] for d in valid if d[3] is not None))
    log.info("reference stats: %d molecules described in %.1f s", len(valid), time.perf_counter() - t0)
    if fcd and len(valid) >= 2:
        t0 = time.perf_counter()
        stats.fcd_mu, stats.fcd_sigma = activation_statistics(
            chemnet_activations([d[0] for d in valid], device=device))
        log.info("reference stats: ChemNet on %d molecules in %.1f s", len(valid), time.perf_counter() - t0)
    if path is not None:
        stats.save(path)
    return stats


# ----------------------------------------------------------------------------------------------
# everything at once


#: Metric groups ``moses_metrics`` can compute (``valid`` and ``unique@k`` always are).
METRIC_GROUPS = ("Novelty", "FCD", "SNN", "Frag", "Scaf", "IntDiv", "Filters")


def moses_metrics(generated: Sequence[str | None], *, test: Sequence[str] | ReferenceStats | None,
                  test_scaffolds: Sequence[str] | ReferenceStats | None = None,
                  train: Iterable[str | None] | None = None, corrected: Sequence[str | None] | None = None,
                  n_jobs: int = 1, device: str = "cpu", ks: Iterable[int] = (1000, 10000),
                  metrics: Iterable[str] | None = None, cache_dir: str | Path | None = None,
                  timings: dict[str, float] | None = None) -> dict[str, float]:
    """All metrics of the module docstring for one generated sample, keyed as MOSES keys them.

    ``generated``: the raw draws in order (``None`` = no SMILES), before any filtering or
    correction; ``corrected``: optional per-draw corrected SMILES, adds ``valid_corrected``. All other
    metrics use the valid uncorrected draws. ``test`` / ``test_scaffolds``: SMILES or precomputed
    ``ReferenceStats`` (``reference_stats``; cached under ``cache_dir`` when given); None skips one.
    ``train``: needed for ``Novelty``. ``metrics``: the groups of ``METRIC_GROUPS`` to compute
    (default all; e.g. leave out ``"FCD"`` to skip ChemNet, ``"IntDiv"`` whose cost grows as n^2).
    ``timings``: filled with seconds per stage.

    Returns ``n_generated``, ``n_valid``, ``valid``, [``valid_corrected``], ``unique@k`` per k, and
    per selected group: ``Novelty``; ``IntDiv`` and ``IntDiv2``; ``Filters``; for each reference R in
    (Test, TestSF): ``FCD/R``, ``SNN/R``, ``Frag/R``, ``Scaf/R``. Undefined values are NaN.

    >>> m = moses_metrics(["CCO", None, "c1ccccc1"], test=["CCO", "c1ccccc1"], metrics=["SNN"], ks=())
    >>> m["valid"], m["SNN/Test"]
    (0.6666666666666666, 1.0)
    """
    generated = list(generated)
    if not generated:
        raise ValueError("moses_metrics needs at least one generated entry")
    groups = set(METRIC_GROUPS if metrics is None else metrics)
    if groups - set(METRIC_GROUPS):
        raise ValueError(f"unknown metric groups {sorted(groups - set(METRIC_GROUPS))}; known: {METRIC_GROUPS}")
    if train is None:
        groups.discard("Novelty")
    timings = {} if timings is None else timings
    out: dict[str, float] = {}

    def timed(name: str, t0: float) -> None:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0
        log.info("moses_metrics: %s done (%.1f s)", name, timings[name])

    with _Mapper(n_jobs) as mapper:
        t0 = time.perf_counter()
        describe = describe_generated if "Filters" in groups else describe_reference
        described = [d for d in mapper.map(describe, generated) if d is not None]
        out["n_generated"], out["n_valid"] = len(generated), len(described)
        out["valid"] = fraction(len(described), len(generated), "validity")
        if corrected is not None:
            corrected = list(corrected)
            out["valid_corrected"] = validity(mapper.map(canonical_smiles, corrected)) if corrected else float("nan")
        canon = [d[0] for d in described]
        for k in ks:
            out[f"unique@{k}"] = fraction_unique(canon, k) if canon else float("nan")
        timed("describe_generated", t0)

        if "Novelty" in groups:
            t0 = time.perf_counter()
            out["Novelty"] = _novel_fraction(set(canon), train, mapper)
            timed("novelty", t0)

        gen_fps = _unpack([d[1] for d in described] if groups & {"SNN", "IntDiv"} else [])
        gen_frags: Counter[str] = Counter()
        for d in described:
            gen_frags.update(d[2])
        gen_scafs = Counter(d[3] for d in described if d[3] is not None)
        if "Filters" in groups:
            out["Filters"] = sum(d[4] for d in described) / len(described) if described else float("nan")
        if "IntDiv" in groups:
            t0 = time.perf_counter()
            divs = _internal_diversities(gen_fps, (1, 2), device)
            out["IntDiv"], out["IntDiv2"] = divs[1], divs[2]
            timed("intdiv", t0)

        gen_fcd = None
        if "FCD" in groups and len(canon) >= 2:
            t0 = time.perf_counter()
            gen_fcd = activation_statistics(chemnet_activations(canon, device=device))
            timed("chemnet_generated", t0)
        elif "FCD" in groups:
            warnings.warn("FCD needs at least 2 valid molecules", MetricWarning, stacklevel=2)

        for name, ref in (("Test", test), ("TestSF", test_scaffolds)):
            if ref is None or not groups & {"FCD", "SNN", "Frag", "Scaf"}:
                continue
            t0 = time.perf_counter()
            stats = ref if isinstance(ref, ReferenceStats) else reference_stats(
                ref, n_jobs=n_jobs, device=device, fcd="FCD" in groups, cache_dir=cache_dir, _mapper=mapper)
            timed(f"reference_{name}", t0)
            t0 = time.perf_counter()
            if "FCD" in groups:
                out[f"FCD/{name}"] = (frechet_distance(stats.fcd_mu, stats.fcd_sigma, *gen_fcd)
                                      if gen_fcd is not None and stats.fcd_mu is not None else float("nan"))
            if "SNN" in groups:
                out[f"SNN/{name}"] = (float(_tanimoto_reduce(gen_fps, _unpack(stats.fingerprints), agg="max",
                                                             device=device).mean())
                                      if len(gen_fps) and stats.n else float("nan"))
            if "Frag" in groups:
                out[f"Frag/{name}"] = cosine_similarity(stats.fragments, gen_frags)
            if "Scaf" in groups:
                out[f"Scaf/{name}"] = cosine_similarity(stats.scaffolds, gen_scafs)
            timed(f"compare_{name}", t0)
    return out


# ----------------------------------------------------------------------------------------------
# property distributions


def wasserstein_1d(u: Sequence[float] | np.ndarray, v: Sequence[float] | np.ndarray) -> float:
    """Wasserstein-1 distance between two 1-D empirical distributions: the area between their CDFs
    (what ``scipy.stats.wasserstein_distance`` computes, which MOSES calls).

    >>> wasserstein_1d([0.0, 1.0], [1.0, 2.0])
    1.0
    """
    u, v = np.sort(np.asarray(u, dtype=np.float64)), np.sort(np.asarray(v, dtype=np.float64))
    if not len(u) or not len(v):
        return float("nan")
    values = np.sort(np.concatenate([u, v]))
    deltas = np.diff(values)
    cdf_u = np.searchsorted(u, values[:-1], side="right") / len(u)
    cdf_v = np.searchsorted(v, values[:-1], side="right") / len(v)
    return float(np.sum(np.abs(cdf_u - cdf_v) * deltas))


def property_values(smiles: Sequence[str | None], *, n_jobs: int = 1,
                    cache_dir: str | Path | None = None) -> dict[str, np.ndarray]:
    """``PROPERTY_NAMES`` -> values over the valid entries (invalid ones skipped), cached under
    ``cache_dir`` when given (keyed like ``reference_stats``). ~2 ms a molecule on one core."""
    smiles = list(smiles)
    path = None
    if cache_dir is not None:
        h = hashlib.sha256(f"molgnn-props v{METRICS_VERSION} rdkit {rdkit.__version__}\n".encode())
        for s in smiles:
            h.update(s.encode() if isinstance(s, str) else b"\x00")
            h.update(b"\n")
        path = Path(cache_dir) / f"moses-props-{h.hexdigest()}.npz"
        if path.exists():
            with np.load(path, allow_pickle=False) as data:
                return {name: data[name] for name in PROPERTY_NAMES}
    with _Mapper(n_jobs) as mapper:
        rows = [r for r in mapper.map(molecular_properties, smiles) if r is not None]
    table = np.array(rows, dtype=np.float64).reshape(-1, len(PROPERTY_NAMES))
    out = {name: table[:, i] for i, name in enumerate(PROPERTY_NAMES)}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        with open(tmp, "wb") as fh:
            np.savez(fh, **out)
        os.replace(tmp, path)
    return out


def property_distances(generated: Sequence[str | None], reference: Sequence[str] | Mapping[str, np.ndarray], *,
                       n_jobs: int = 1, cache_dir: str | Path | None = None) -> dict[str, float]:
    """MOSES's property metrics: W1 between the logP, SA, QED and molecular-weight values of the
    valid generated molecules (duplicates kept) and of ``reference`` (SMILES, or ``property_values``
    of them). Keys ``logP``, ``SA``, ``QED``, ``weight``; lower is better, 0 = same distribution."""
    ref = reference if isinstance(reference, Mapping) else property_values(reference, n_jobs=n_jobs,
                                                                           cache_dir=cache_dir)
    gen = property_values(generated, n_jobs=n_jobs)
    return {name: wasserstein_1d(gen[name], ref[name]) for name in PROPERTY_NAMES}


def mlflow_safe(metrics: Mapping[str, float]) -> dict[str, float]:
    """The same metrics with keys MLflow accepts (``@`` -> ``_at_``), NaN values dropped.

    >>> mlflow_safe({"unique@1000": 1.0, "FCD/Test": 0.1, "Scaf/TestSF": float("nan")})
    {'unique_at_1000': 1.0, 'FCD/Test': 0.1}
    """
    return {k.replace("@", "_at_"): float(v) for k, v in metrics.items()
            if not (isinstance(v, float) and math.isnan(v))}
