"""Planted-program data: known gene modules driving known groups of cells, with count noise.

The ground truth for judging signatures: every module is a set of genes that move together because
one latent program drives them, and every cell belongs to a group in which one program is strong.
A method whose nodes "stand for one program" must find each module among its high-weight genes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .errors import UserError

TRUTH_KEY = "synthetic"


def planted_programs(
    n_cells: int = 600,
    n_genes: int = 400,
    n_programs: int = 6,
    module_size: int = 25,
    *,
    effect: float = 1.2,
    background_activity: float = 0.25,
    negative_fraction: float = 0.0,
    dispersion: float = 5.0,
    mean_log_expression: float = 0.0,
    sd_log_expression: float = 1.0,
    library_sd: float = 0.3,
    seed: int = 0,
) -> AnnData:
    """Negative-binomial counts with ``n_programs`` planted gene modules, each driving one group of cells.

    Every cell is assigned to one group (``obs["program"]``, ``P0`` … ``P{K-1}``); its activity of its own
    program is drawn from U(0.5, 1.5) and its activity of every other program from
    Exponential(``background_activity``), so programs vary continuously and independently inside
    groups too. The mean count of gene ``g`` in cell ``c`` is
    ``base_g · library_c · exp(effect · Σ_k sign_g · M_gk · a_ck)`` with ``M`` the (disjoint) module
    membership; counts are negative binomial with inverse dispersion ``dispersion``. Genes in no module
    carry no program signal. Module genes sit at random positions among the genes.

    Parameters
    ----------
    n_cells, n_genes
        Size of the matrix.
    n_programs, module_size
        Number of planted programs and genes per module (``n_programs · module_size <= n_genes``).
    effect
        Log fold change per unit of program activity.
    background_activity
        Mean activity of a program in cells of the other groups (0 = exactly off).
    negative_fraction
        Fraction of each module's genes that go *down* when the program is on.
    dispersion
        Negative-binomial inverse dispersion (variance = mu + mu² / dispersion).
    mean_log_expression, sd_log_expression
        Log-normal distribution of the per-gene base mean count.
    library_sd
        SD of the log library-size factor of cells.
    seed
        Seeds everything.

    Returns
    -------
    Cells × genes AnnData: ``X`` integer counts (CSR float32); ``obs["program"]`` (categorical group);
    ``obsm["program_activity"]`` (cells × programs); ``var["module"]`` (module name or ``"none"``),
    ``var["module_sign"]`` (+1/-1/0); ``varm["module_membership"]`` (genes × programs, bool);
    ``uns["synthetic"]`` (``modules``: name → genes, ``programs``, the parameters).

    Examples
    --------
    >>> adata = genodae.synthetic.planted_programs(n_cells=500, n_programs=5, seed=1)
    >>> adata.uns["synthetic"]["modules"]["P0"][:3]
    """
    if n_programs < 1 or module_size < 1:
        raise UserError("n_programs and module_size must be >= 1")
    if n_programs * module_size > n_genes:
        raise UserError(f"{n_programs} modules of {module_size} genes need at least {n_programs * module_size} "
                        f"genes, not {n_genes}")
    if n_cells < n_programs:
        raise UserError(f"n_cells ({n_cells}) must be at least n_programs ({n_programs})")
    if not 0 <= negative_fraction <= 1:
        raise UserError("negative_fraction must be between 0 and 1")
    rng = np.random.default_rng(seed)
    names = [f"P{k}" for k in range(n_programs)]
    # cells: balanced groups in random order
    group = rng.permutation(np.arange(n_cells) % n_programs)
    act = rng.exponential(background_activity, size=(n_cells, n_programs)) if background_activity > 0 else (
        np.zeros((n_cells, n_programs)))
    act[np.arange(n_cells), group] = rng.uniform(0.5, 1.5, size=n_cells)
    # genes: disjoint modules at random positions
    perm = rng.permutation(n_genes)
    member = np.zeros((n_genes, n_programs), dtype=bool)
    sign = np.zeros(n_genes)
    module = np.full(n_genes, "none", dtype=object)
    for k in range(n_programs):
        genes = perm[k * module_size : (k + 1) * module_size]
        member[genes, k] = True
        module[genes] = names[k]
        s = np.ones(module_size)
        s[: int(round(negative_fraction * module_size))] = -1
        sign[genes] = s
    base = rng.lognormal(mean_log_expression, sd_log_expression, size=n_genes)
    lib = rng.lognormal(0.0, library_sd, size=(n_cells, 1))
    logfold = effect * act @ (member * sign[:, None]).T  # cells × genes
    mu = base * lib * np.exp(logfold)
    lam = rng.gamma(dispersion, mu / dispersion)
    counts = rng.poisson(lam).astype(np.float32)
    gene_names = [f"GENE{j:04d}" for j in range(n_genes)]
    obs = pd.DataFrame({"program": pd.Categorical([names[g] for g in group], categories=names)},
                       index=[f"cell{i:05d}" for i in range(n_cells)])
    var = pd.DataFrame({"module": pd.Categorical(module, categories=[*names, "none"]), "module_sign": sign},
                       index=gene_names)
    adata = AnnData(sp.csr_matrix(counts), obs=obs, var=var)
    adata.obsm["program_activity"] = act.astype(np.float32)
    adata.varm["module_membership"] = member
    adata.uns[TRUTH_KEY] = {
        "programs": np.asarray(names),
        "modules": {n: np.asarray([gene_names[j] for j in np.flatnonzero(member[:, k])]) for k, n in enumerate(names)},
        "params": dict(n_cells=n_cells, n_genes=n_genes, n_programs=n_programs, module_size=module_size,
                       effect=effect, background_activity=background_activity,
                       negative_fraction=negative_fraction, dispersion=dispersion, seed=seed),
    }
    return adata


def planted_survival(
    activity: np.ndarray,
    *,
    log_hazard_ratio: float = 0.7,
    baseline_hazard: float = 0.05,
    censor_rate: float = 0.02,
    max_time: float = 120.0,
    seed: int = 0,
) -> pd.DataFrame:
    """Exponential survival times whose hazard depends on one activity: ``h = h0 · exp(beta · z(activity))``.

    ``activity`` is standardised first, so ``log_hazard_ratio`` is per SD. Censoring is exponential plus
    administrative at ``max_time``. Returns a DataFrame with ``time`` and ``event`` (1 = death).
    """
    rng = np.random.default_rng(seed)
    a = np.asarray(activity, dtype=float)
    z = (a - a.mean()) / (a.std() or 1.0)
    t = rng.exponential(1.0 / (baseline_hazard * np.exp(log_hazard_ratio * z)))
    c = np.minimum(rng.exponential(1.0 / censor_rate, size=len(a)) if censor_rate > 0 else np.inf, max_time)
    return pd.DataFrame({"time": np.minimum(t, c), "event": (t <= c).astype(int)})


ACTIVITY_MODES = ("groups", "continuous", "mixed")


def program_mixture(
    n_cells: int = 1000,
    n_genes: int = 1500,
    module_sizes: tuple[int, ...] = (40, 40, 40, 40, 40, 40),
    *,
    activity: str = "groups",
    overlap: float = 0.0,
    effect: float = 1.0,
    negative_fraction: float = 0.0,
    dispersion: float = 5.0,
    dropout: float = 0.0,
    library_sd: float = 0.3,
    mean_log_expression: float = 0.0,
    sd_log_expression: float = 1.0,
    bulk: bool = False,
    noise_sd: float = 0.3,
    seed: int = 0,
) -> AnnData:
    """Planted gene programs that combine in different ways: the family of generators of the signature benchmark.

    Gene ``g``'s log mean in cell ``c`` is ``log base_g + log library_c + effect · Σ_k sign_gk · M_gk · a_ck``
    with ``M`` the module membership (genes × programs) and ``a`` the program activities (cells × programs):

    - ``activity="groups"``: each cell belongs to one group; its own program's activity is U(0.5, 1.5), the
      others Exponential(0.1) (discrete cell types);
    - ``"continuous"``: every activity is an independent Gamma(2, 0.4) draw (programs vary as gradients and
      every cell mixes them);
    - ``"mixed"``: the first half of the programs are groups, the others continuous gradients across all
      cells (cell types plus cell-cycle/stress-like programs).

    ``overlap`` is the fraction of each module's genes shared with the next module (genes driven by two
    programs). ``module_sizes`` may differ. Counts (default) are negative binomial with inverse dispersion
    ``dispersion``, then each entry is zeroed with probability ``dropout``; with ``bulk=True`` the values are
    log2-scale microarray-like intensities instead: ``log2(base · 2^(effect·program)) + N(0, noise_sd)``,
    base around 2^7, no library size and no dropout.

    Returns
    -------
    Cells × genes AnnData: ``X`` counts (CSR float32) or log2 values (dense float32); ``obs["program"]``
    (group of the strongest program), ``obsm["program_activity"]``, ``varm["module_membership"]``,
    ``uns["synthetic"]`` (``modules``: name → genes; ``params``). Raises :class:`~genodae.errors.UserError`
    for impossible settings.

    Sources: the negative-binomial planted-module design of Splatter-like simulators (Zappia et al. 2017);
    overlap, size and mode variations follow the issue's signature benchmark.
    """
    if activity not in ACTIVITY_MODES:
        raise UserError(f"activity must be one of {', '.join(ACTIVITY_MODES)}, not {activity!r}")
    sizes = [int(s) for s in module_sizes]
    if not sizes or min(sizes) < 2:
        raise UserError("module_sizes needs at least one module of >= 2 genes")
    if not 0 <= overlap < 1 or not 0 <= dropout < 1 or not 0 <= negative_fraction <= 1:
        raise UserError("overlap and dropout must be in [0, 1), negative_fraction in [0, 1]")
    shared = [int(round(overlap * s)) for s in sizes]
    need = sum(sizes) - sum(shared[:-1])
    if need > n_genes:
        raise UserError(f"the modules need {need} genes, more than n_genes={n_genes}")
    rng = np.random.default_rng(seed)
    K = len(sizes)
    names = [f"P{k}" for k in range(K)]
    act = np.zeros((n_cells, K))
    is_group = np.zeros(K, dtype=bool)
    if activity == "groups":
        is_group[:] = True
    elif activity == "mixed":
        is_group[: max(1, K // 2)] = True
    groups = np.flatnonzero(is_group)
    if len(groups):
        g = rng.permutation(np.arange(n_cells) % len(groups))
        act[:, groups] = rng.exponential(0.1, size=(n_cells, len(groups)))
        act[np.arange(n_cells), groups[g]] = rng.uniform(0.5, 1.5, size=n_cells)
    cont = np.flatnonzero(~is_group)
    act[:, cont] = rng.gamma(2.0, 0.4, size=(n_cells, len(cont)))
    # genes: module k takes its first shared[k-1] genes from the end of module k-1
    perm = rng.permutation(n_genes)
    member = np.zeros((n_genes, K), dtype=bool)
    sign = np.ones((n_genes, K))
    pos = 0
    for k, size in enumerate(sizes):
        start = pos - (shared[k - 1] if k > 0 else 0)
        idx = perm[start : start + size]
        member[idx, k] = True
        sign[idx[: int(round(negative_fraction * size))], k] = -1
        pos = start + size
    program = effect * act @ (member * sign).T  # cells × genes, log scale
    gene_names = [f"GENE{j:04d}" for j in range(n_genes)]
    if bulk:
        base = rng.normal(7.0, 1.5, size=n_genes)
        values = base + program / np.log(2) + rng.normal(0.0, noise_sd, size=(n_cells, n_genes))
        X = values.astype(np.float32)
    else:
        base = rng.lognormal(mean_log_expression, sd_log_expression, size=n_genes)
        lib = rng.lognormal(0.0, library_sd, size=(n_cells, 1))
        mu = base * lib * np.exp(program)
        counts = rng.poisson(rng.gamma(dispersion, mu / dispersion))
        if dropout > 0:
            counts[rng.random(counts.shape) < dropout] = 0
        X = sp.csr_matrix(counts.astype(np.float32))
    strongest = act.argmax(axis=1)
    obs = pd.DataFrame({"program": pd.Categorical([names[i] for i in strongest], categories=names)},
                       index=[f"cell{i:05d}" for i in range(n_cells)])
    module = np.full(n_genes, "none", dtype=object)
    for k in range(K):
        module[member[:, k] & (module == "none")] = names[k]
    var = pd.DataFrame({"module": pd.Categorical(module, categories=[*names, "none"])}, index=gene_names)
    adata = AnnData(X, obs=obs, var=var)
    adata.obsm["program_activity"] = act.astype(np.float32)
    adata.varm["module_membership"] = member
    adata.uns[TRUTH_KEY] = {
        "programs": np.asarray(names),
        "modules": {n: np.asarray([gene_names[j] for j in np.flatnonzero(member[:, k])]) for k, n in enumerate(names)},
        "params": dict(n_cells=n_cells, n_genes=n_genes, module_sizes=sizes, activity=activity, overlap=overlap,
                       effect=effect, negative_fraction=negative_fraction, dispersion=dispersion,
                       dropout=dropout, library_sd=library_sd, bulk=bulk, noise_sd=noise_sd, seed=seed),
    }
    return adata


__all__ = ["planted_programs", "planted_survival", "program_mixture", "TRUTH_KEY"]
