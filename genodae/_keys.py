"""The AnnData key contract: every key name genodae reads or writes, and the node-label rules (a leaf module).

A model's results live under one prefix, ``key`` (``"dae"`` by default; ``key_added`` of the function that writes
them), as in scanpy and scvi-tools' ``REGISTRY_KEYS``:

============================  =====================================  ==========================================
where                         name                                   built by
============================  =====================================  ==========================================
``obsm``                      ``X_<key>`` (cells × nodes)            :func:`embedding_key`
``varm``                      ``<key>_weights`` (genes × nodes)      :func:`weights_key`
``varm``                      ``<key>_decoder_weights``              :func:`decoder_weights_key`
``obs``                       ``<key>_recon_error``                  :func:`recon_error_key`
``var``                       ``<key>_recon_r2``                     :func:`recon_r2_key`
``layers``                    ``<key>_denoised``                     :func:`denoised_key`
``uns``                       ``<key>`` (settings, history …)        :func:`params_key`
``uns``                       ``<key>_signatures`` / ``_enrichment``  :func:`signatures_key`, :func:`enrichment_key`
``uns``                       ``genodae_tables`` (custom names)      :func:`record_table`
rotated nodes                 ``<key>_sparse``, ``<key>_varimax``    :func:`rotated_key`, parsed by :func:`rotated_source`
============================  =====================================  ==========================================

Node labels: ``node0`` … for a model's own nodes, ``vnode0`` … for rotated nodes, ``cnode0`` … for consensus
nodes of an ensemble; ``uns[<key>]["node_names"]`` overrides them (:func:`node_labels`). The prepared data's keys
(``uns["genodae_prepare"]``, ``layers["counts"]``, ``var["highly_variable"]``, ``var["genodae_offset"]``,
``var["genodae_scale"]``) are the constants below. Functions take ``key`` to read and ``key_added`` to write;
:func:`resolve_key_added` keeps an old ``key=`` of a writer working, with a ``FutureWarning``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Mapping

from .errors import UserError

log = logging.getLogger(__name__)

DEFAULT = "dae"  # the prefix of a model's keys unless key_added says otherwise
ENSEMBLE = "dae_ensemble"  # default prefix of tl.ensemble's consensus nodes
DEFAULT_ROTATION = "sparse"  # the rotation tl.signatures/ensemble/score apply by default (a model reports varimax nodes)
DEFAULT_ROTATED = "dae_sparse"  # rotated_key(DEFAULT): what tl.signatures reads by default, so enrich/pl read it
ROTATION_METHODS = ("sparse", "varimax")  # config.ROTATIONS but "none" (no import: a leaf module)
PREP = "genodae_prepare"  # uns: what pp.prepare did (settings, value evidence, genes used)
READ = "genodae_read"  # uns: what genodae.read did (path, format, orientation)
COUNTS_LAYER = "counts"  # layers: raw counts kept by pp.prepare
HIGHLY_VARIABLE = "highly_variable"  # var: the genes the model uses
OFFSET = "genodae_offset"  # var: model input = (x - offset) / scale
SCALE = "genodae_scale"
TABLES = "genodae_tables"  # uns: {table name: key it was read from} for tables stored under a custom key_added

NODE, ROTATED_NODE, CONSENSUS_NODE = "node", "vnode", "cnode"  # label prefixes

_EMBEDDING_PREFIX = "X_"
_WEIGHTS = "_weights"
_DECODER_WEIGHTS = "_decoder_weights"
_RECON_ERROR = "_recon_error"
_RECON_R2 = "_recon_r2"
_DENOISED = "_denoised"
_SIGNATURES = "_signatures"
_ENRICHMENT = "_enrichment"


def embedding_key(key: str) -> str:
    """``obsm`` key of the node activities: ``X_<key>`` (what ``sc.pp.neighbors(use_rep=...)`` takes)."""
    return f"{_EMBEDDING_PREFIX}{key}"


def weights_key(key: str) -> str:
    """``varm`` key of the gene weights: ``<key>_weights``."""
    return f"{key}{_WEIGHTS}"


def decoder_weights_key(key: str) -> str:
    """``varm`` key of the decoder's weights in the reported basis: ``<key>_decoder_weights``."""
    return f"{key}{_DECODER_WEIGHTS}"


def recon_error_key(key: str) -> str:
    """``obs`` column of the per-cell reconstruction error: ``<key>_recon_error``."""
    return f"{key}{_RECON_ERROR}"


def recon_r2_key(key: str) -> str:
    """``var`` column of the per-gene reconstruction score: ``<key>_recon_r2``."""
    return f"{key}{_RECON_R2}"


def denoised_key(key: str) -> str:
    """``layers`` key of the denoised expression: ``<key>_denoised``."""
    return f"{key}{_DENOISED}"


def params_key(key: str) -> str:
    """``uns`` key of a model's record (settings, history, genes used, node names): ``<key>`` itself."""
    return key


def signatures_key(key: str) -> str:
    """``uns`` key of a signatures table read from the weights ``key``: ``<key>_signatures``."""
    return f"{key}{_SIGNATURES}"


def enrichment_key(key: str) -> str:
    """``uns`` key of an enrichment table of the signatures of ``key``: ``<key>_enrichment``."""
    return f"{key}{_ENRICHMENT}"


def record_table(uns: dict, table: str, source: str) -> None:
    """Note in ``uns[TABLES]`` that the table ``uns[table]`` (signatures, enrichment) was read from the weights of
    ``source``: a table under a custom ``key_added`` is then dropped with its model's other read-outs when another
    model is written under ``source`` (tables under the default names are found by name)."""
    reg = dict(uns.get(TABLES) or {})
    reg[str(table)] = str(source)
    uns[TABLES] = reg


def rotated_key(key: str, method: str = DEFAULT_ROTATION) -> str:
    """Prefix of the rotated nodes of ``key``: ``<key>_<method>``."""
    return f"{key}_{method}"


def rotated_source(key: str) -> tuple[str, str] | None:
    """(model prefix, rotation method) a rotated prefix was made from (``dae_sparse`` → ``("dae", "sparse")``,
    ``dae_varimax`` → ``("dae", "varimax")``), or None if ``key`` is not one."""
    for method in ROTATION_METHODS:
        suffix = f"_{method}"
        if key.endswith(suffix) and len(key) > len(suffix):
            return key[: -len(suffix)], method
    return None


def _prefixes(names: Iterable[str], *, prefix: str = "", suffix: str = "") -> list[str]:
    n0, n1 = len(prefix), len(suffix)
    return [n[n0 : len(n) - n1] for n in map(str, names)
            if n.startswith(prefix) and n.endswith(suffix) and len(n) > n0 + n1]


def weights_keys(varm: Iterable[str]) -> list[str]:
    """The prefixes that have gene weights in ``varm`` (``dae_weights`` → ``dae``), in ``varm``'s order; a model's
    ``<key>_decoder_weights`` is not a prefix of its own."""
    names = list(varm)
    return [p for p in _prefixes(names, suffix=_WEIGHTS)
            if not (p.endswith("_decoder") and weights_key(p.removesuffix("_decoder")) in names)]


def embedding_keys(obsm: Iterable[str]) -> list[str]:
    """The prefixes that have node activities in ``obsm`` (``X_dae`` → ``dae``; ``X_umap`` → ``umap``)."""
    return _prefixes(obsm, prefix=_EMBEDDING_PREFIX)


def node_names(n: int, prefix: str = NODE) -> list[str]:
    """``["node0", "node1", …]`` (or another label prefix: :data:`ROTATED_NODE`, :data:`CONSENSUS_NODE`)."""
    return [f"{prefix}{i}" for i in range(n)]


def node_labels(uns: Mapping | None, key: str, n: int) -> list[str]:
    """Labels of the ``n`` nodes of ``key``: ``uns[key]["node_names"]`` when stored with ``n`` names, else
    ``node0`` …. ``uns`` is an AnnData's ``uns`` (or an AnnData, or None)."""
    uns = getattr(uns, "uns", uns)
    rec = uns.get(params_key(key)) if uns is not None else None
    if isinstance(rec, Mapping) and "node_names" in rec:
        names = list(map(str, rec["node_names"]))
        if len(names) == n:
            return names
    return node_names(n)


_WHERE = {"obsm": embedding_key, "varm": weights_key, "decoder": decoder_weights_key, "var": recon_r2_key,
          "obs": recon_error_key, "layers": denoised_key, "uns": params_key}


def keys_added(key: str, *where: str) -> list[str]:
    """``["varm['dae_weights']", "obsm['X_dae']", …]`` for the log line of a writer; ``where`` from ``obsm``,
    ``varm``, ``decoder`` (``varm`` of the decoder weights), ``var``, ``obs``, ``layers``, ``uns``."""
    return [f"{'varm' if w == 'decoder' else w}[{_WHERE[w](key)!r}]" for w in where]


def model_keys_added(key: str, *, denoised: bool = False) -> list[str]:
    """What :meth:`genodae.DAE.annotate` adds (for the log): embedding, weights, decoder weights, recon r2 and
    error, the record, and the denoised layer when asked."""
    return keys_added(key, "obsm", "varm", "decoder", "var", "obs", "uns", *(("layers",) if denoised else ()))


def resolve_key_added(key_added: str | None, key: str | None, *, default: str = DEFAULT, where: str = "") -> str:
    """The prefix a writer writes under: ``key_added``, else the deprecated ``key`` (with a ``FutureWarning``),
    else ``default``. Both given and different is an error."""
    if key is not None:
        if key_added is not None and key_added != key:
            raise UserError(f"{where}: give key_added only (key={key!r} is its old name), not both")
        warnings.warn(f"{where}: key= names the keys written; it is now key_added= (key= will be removed)",
                      FutureWarning, stacklevel=3)
        return key
    return key_added if key_added is not None else default


def stale_readouts(adata, key: str, fingerprint: str | None, old_fingerprint: str | None,
                   network: str | None = None) -> list[tuple[str, str]]:
    """(store, name) of the read-outs of another model stored under ``key`` before a model with ``fingerprint`` is
    written there: its rotated nodes ``<key>_sparse``/``<key>_varimax`` (tl.rotate, tl.signatures; weights,
    activities, transform) with their signatures and enrichment tables, and the tables of ``key`` itself. Left in
    place they would be read as the new model's (``--key dae_sparse`` is the default of the signature commands).
    Rotations stored under a custom ``key_added`` are found by the source key their record names, rotations of
    those rotations likewise, and tables under a custom ``key_added`` by ``uns["genodae_tables"]``. Read-outs of
    this same model (by the fingerprint they record, or, for records without one, by the model stored under
    ``key``) are kept; an ensemble is a model of its own and is not touched. ``fingerprint``/``old_fingerprint``:
    ``get.model_fingerprint`` of the model being written and of the record under ``key`` (None for an ensemble's
    consensus: a new ensemble under ``key`` replaces everything read from the old one). ``network``:
    ``get.network_fingerprint`` of the model being written, what read-outs saved before 2026-12-07 record: they are
    kept when the model is the same as the one stored (``old_fingerprint == fingerprint``)."""
    same_model = fingerprint is not None and old_fingerprint == fingerprint
    default_names = {rotated_key(key, method) for method in ROTATION_METHODS}
    rotations = {}  # name -> source key, of every tl.rotate record
    for r, rec in adata.uns.items():
        if isinstance(rec, Mapping) and ({"whitening", "rotation", "source_key"} <= set(rec) or r in default_names):
            rotations[r] = str(rec.get("source_key", key))  # records before source_key: by their default name
    stale = set() if same_model else {key}
    for r, source in rotations.items():
        if source != key:
            continue
        made_from = adata.uns[r].get("source_fingerprint")
        ours = (str(made_from) == fingerprint or (same_model and network is not None and str(made_from) == network)
                if made_from is not None else same_model)
        if fingerprint is None or not ours:
            stale.add(r)
    grown = True
    while grown:  # rotations of stale rotations
        more = {r for r, source in rotations.items() if source in stale and r not in stale and r != key}
        stale |= more
        grown = bool(more)
    out = [pair for r in sorted(stale - {key})
           for pair in (("varm", weights_key(r)), ("obsm", embedding_key(r)), ("uns", r))]
    out += [pair for r in sorted(stale) for pair in (("uns", signatures_key(r)), ("uns", enrichment_key(r)))]
    registry = adata.uns.get(TABLES)
    if isinstance(registry, Mapping):
        out += [("uns", str(t)) for t, source in registry.items() if str(source) in stale]
    return [(w, n) for w, n in dict.fromkeys(out) if n in getattr(adata, w)]


def drop_stale_readouts(adata, key: str, fingerprint: str | None, old_fingerprint: str | None,
                        network: str | None = None) -> None:
    """Remove :func:`stale_readouts` from ``adata`` (in memory), with a log line; warn about ensembles built from
    the model that is replaced (:func:`warn_ensembles_of`)."""
    gone = stale_readouts(adata, key, fingerprint, old_fingerprint, network)
    for where, name in gone:
        del getattr(adata, where)[name]
    if gone:
        log.info("removed the read-outs of the model stored under %r before: %s", key,
                 ", ".join(f"{w}[{n!r}]" for w, n in gone))
    warn_ensembles_of(adata, key, fingerprint, old_fingerprint)


def warn_ensembles_of(adata, key: str, fingerprint: str | None, old_fingerprint: str | None) -> None:
    """Log a warning naming every ensemble (tl.ensemble of models of this AnnData) with the model stored under
    ``key`` among its members, when that model is being replaced by another: an ensemble is a model of its own
    and is kept, but it no longer matches its members."""
    if old_fingerprint is None or old_fingerprint == fingerprint:
        return
    built = []
    for name, rec in adata.uns.items():
        members = rec.get("members") if isinstance(rec, Mapping) and "n_models" in rec else None
        models = members.get("model") if hasattr(members, "get") else None
        if models is not None and key in {str(m) for m in models}:
            built.append(str(name))
    if built:
        log.warning("the model stored under %r before is a member of the ensemble(s) %s, which stay as they were "
                    "built; run genodae.tl.ensemble again to rebuild them from the new model", key,
                    ", ".join(map(repr, sorted(built))))


__all__ = [
    "COUNTS_LAYER", "CONSENSUS_NODE", "DEFAULT", "DEFAULT_ROTATED", "DEFAULT_ROTATION", "ENSEMBLE", "HIGHLY_VARIABLE", "NODE", "OFFSET", "PREP", "READ",
    "ROTATED_NODE", "SCALE", "decoder_weights_key", "denoised_key", "drop_stale_readouts", "embedding_key", "embedding_keys",
    "enrichment_key", "keys_added", "model_keys_added", "node_labels", "node_names", "params_key", "recon_error_key",
    "recon_r2_key", "resolve_key_added", "rotated_key", "rotated_source", "signatures_key", "stale_readouts", "warn_ensembles_of", "weights_key",
    "weights_keys",
]
