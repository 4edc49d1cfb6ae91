"""Enrichment: GMT parsing, identifier mapping, the one-sided test against the model's genes, BH, CLI errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import fisher_exact
from statsmodels.stats.multitest import multipletests

from genodae import UserError
from genodae.enrich import bh, enrich, map_ids, read_gmt, read_id_map

BG = [f"G{i}" for i in range(200)]


def _gmt(tmp_path, lines, name="sets.gmt"):
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n")
    return p


def test_read_gmt(tmp_path):
    p = _gmt(tmp_path, ["SET_A\tdesc\tG1\tG2\tG2\tG3", "", "SET_B\thttp://x\tG4\tG5\t"])
    sets = read_gmt(p)
    assert sets == {"SET_A": ["G1", "G2", "G3"], "SET_B": ["G4", "G5"]}
    with pytest.raises(UserError, match="line 1"):
        read_gmt(_gmt(tmp_path, ["ONLY_NAME"], "bad.gmt"))
    with pytest.raises(UserError, match="twice"):
        read_gmt(_gmt(tmp_path, ["S\td\tG1", "S\td\tG2"], "dup.gmt"))
    with pytest.raises(UserError, match="not found"):
        read_gmt(tmp_path / "absent.gmt")


def test_read_hallmark_file(shared_data):
    sets = read_gmt(shared_data / "genesets" / "h.all.v7.0.symbols.gmt")
    assert len(sets) == 50 and "HALLMARK_TNFA_SIGNALING_VIA_NFKB" in sets
    assert "JUNB" in sets["HALLMARK_TNFA_SIGNALING_VIA_NFKB"]


def test_id_map_and_mapping(tmp_path):
    p = tmp_path / "map.tsv"
    p.write_text("gene_id\tsymbol\textra\nENSG1\tTP53\t1\nENSG2\tMYC\t2\nENSG2\tMYC2\t3\nENSG3\t\t4\n")
    m = read_id_map(p)
    assert m.to_dict() == {"ENSG1": "TP53", "ENSG2": "MYC"}  # first target kept, empty targets dropped
    mapped = map_ids(["ENSG1", "ENSG2", "ENSG9"], m)
    assert mapped.tolist() == ["TP53", "MYC", "ENSG9"]
    with pytest.raises(UserError, match="no column"):
        read_id_map(p, target="nope")


def test_shared_ensembl_map(shared_data):
    m = read_id_map(shared_data / "genesets" / "hsapiens_gene_ensembl.background.genes.txt")
    assert m["ENSG00000275568"] == "ARHGAP11A"


def test_pvalues_match_fisher_and_bh_counts_every_tested_set():
    sets = {"hit": BG[:20], "half": BG[10:30], "none": BG[100:120], "small": BG[:3], "outside": ["X1", "X2"] * 5}
    sig = {"s1": BG[:10] + BG[150:155], "s2": BG[100:108]}
    res = enrich(sig, sets, background=BG, min_size=5, correction="signature")
    r = res.set_index(["signature", "term"])
    for (s, t), row in r.iterrows():
        k = len(set(sig[s]) & set(sets[t]))
        n_sig, n_set = len(sig[s]), len(set(sets[t]) & set(BG))
        table = [[k, n_sig - k], [n_set - k, len(BG) - n_set - n_sig + k]]
        assert row["pvalue"] == pytest.approx(fisher_exact(table, alternative="greater")[1], rel=1e-9)
        assert row["overlap"] == k and row["set_size"] == n_set and row["background_size"] == 200
    assert ("s1", "small") not in r.index and ("s1", "outside") not in r.index  # below min_size: not tested
    # BH per signature over the 3 tested sets, sets without overlap counted with p = 1
    s1 = res[res.signature == "s1"]
    padded = np.concatenate([s1["pvalue"], np.ones(3 - len(s1))])
    assert np.allclose(s1["fdr"], multipletests(padded, method="fdr_bh")[1][: len(s1)])
    assert r.loc[("s1", "hit"), "fdr"] < 1e-4 and r.loc[("s2", "none"), "fdr"] < 1e-4


def test_bh_matches_statsmodels():
    p = np.random.default_rng(0).uniform(size=50) ** 3
    assert np.allclose(bh(p), multipletests(p, method="fdr_bh")[1])
    assert np.allclose(bh(p[:10], n_tests=50), multipletests(np.r_[p[:10], np.ones(40)], method="fdr_bh")[1][:10])
    with pytest.raises(ValueError):
        bh(p, n_tests=10)


def test_node_correction_pools_both_tails():
    sig = pd.DataFrame({"node": ["n0"] * 20, "direction": ["pos"] * 10 + ["neg"] * 10,
                        "gene": BG[:10] + BG[50:60]})
    sets = {"A": BG[:15], "B": BG[50:65], "C": BG[120:140]}
    res = enrich(sig, sets, background=BG)
    assert set(res["signature"]) == {"n0+", "n0-"}
    n = res[res.node == "n0"]
    padded = np.concatenate([n["pvalue"], np.ones(6 - len(n))])  # 2 tails × 3 sets
    assert np.allclose(np.sort(n["fdr"]), np.sort(multipletests(padded, method="fdr_bh")[1][: len(n)]))


def test_identifiers_mapped_before_testing():
    ens = [f"ENSG{i:05d}" for i in range(200)]
    m = pd.Series(BG, index=ens)
    res = enrich({"s": ens[:10]}, {"A": BG[:12]}, background=ens, id_map=m)
    assert res.loc[0, "overlap"] == 10 and res.loc[0, "fdr"] < 1e-6


def test_gene_sets_that_do_not_match_are_a_user_error():
    with pytest.raises(UserError, match="none of the 1 gene sets"):
        enrich({"s": BG[:10]}, {"A": [f"ENSG{i}" for i in range(30)]}, background=BG)
    with pytest.raises(UserError, match="not in the background"):
        enrich({"s": ["ZZZ"]}, {"A": BG[:10]}, background=BG)


def test_size_limits_are_named_when_they_exclude_every_set():
    """A set that matches but is too small or too large for the limits: the message names the limit, not the
    identifiers (which are fine)."""
    with pytest.raises(UserError, match=r"identifiers"):
        enrich({"s": BG[:10]}, {"A": [f"ENSG{i}" for i in range(30)]}, background=BG)
    with pytest.raises(UserError, match=r"largest overlap is 4 genes, below min_size=5.*--min-size") as e:
        enrich({"s": BG[:10]}, {"A": BG[:4]}, background=BG)
    assert "identifiers" not in str(e.value)
    with pytest.raises(UserError, match=r"more than max_size=20 genes \(smallest 30\).*--max-size"):
        enrich({"s": BG[:10]}, {"A": BG[:30], "B": BG[:40]}, background=BG, max_size=20)
    with pytest.raises(UserError, match="max_size >= min_size"):
        enrich({"s": BG[:10]}, {"A": BG[:30]}, background=BG, min_size=10, max_size=5)


# --- CLI -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def weights_h5ad(tmp_path_factory):
    """An embedded-like .h5ad whose model weights single out two known gene groups (no training needed)."""
    import anndata

    rng = np.random.default_rng(0)
    W = rng.normal(0, 0.05, size=(200, 3))
    W[:12, 0] += 1.0
    W[100:112, 1] -= 1.0
    a = anndata.AnnData(np.zeros((5, 200), np.float32), var=pd.DataFrame(index=BG))
    a.varm["dae_weights"] = W.astype(np.float32)
    a.obsm["X_dae"] = rng.normal(size=(5, 3)).astype(np.float32)
    a.uns["dae"] = {"genes_used": np.asarray(BG)}
    p = tmp_path_factory.mktemp("enr") / "emb.h5ad"
    a.write_h5ad(p)
    return p


def test_cli_enrich(weights_h5ad, tmp_path):
    from genodae.cli import main

    gmt = _gmt(tmp_path, ["UP\td\t" + "\t".join(BG[:15]), "DOWN\td\t" + "\t".join(BG[100:115]),
                          "OTHER\td\t" + "\t".join(BG[150:170])])
    out = tmp_path / "enr.tsv"
    assert main(["-q", "enrich", str(weights_h5ad), "-o", str(out), "--gene-sets", str(gmt), "--key", "dae",
                 "--dotplot", str(tmp_path / "dot.png")]) == 0
    res = pd.read_csv(out, sep="\t")
    best = res.sort_values("pvalue").groupby("term").first()
    assert best.loc["UP", "signature"] == "node0+" and best.loc["UP", "fdr"] < 1e-6
    assert best.loc["DOWN", "signature"] == "node1-" and best.loc["DOWN", "fdr"] < 1e-6
    assert (tmp_path / "dot.png").exists()
    # the rotated (sparse) key is computed on the fly by default
    assert main(["-q", "enrich", str(weights_h5ad), "-o", str(tmp_path / "v.tsv"), "--gene-sets", str(gmt)]) == 0


def test_cli_enrich_unmatched_gene_sets_exit_2(weights_h5ad, tmp_path, capsys):
    from genodae.cli import main

    gmt = _gmt(tmp_path, ["S\td\t" + "\t".join(f"ENSG{i}" for i in range(20))])
    out = tmp_path / "enr.tsv"
    assert main(["enrich", str(weights_h5ad), "-o", str(out), "--gene-sets", str(gmt)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "gene sets" in err[0] and not out.exists()
    assert main(["enrich", str(weights_h5ad), "-o", str(out), "--gene-sets", str(tmp_path / "no.gmt")]) == 2
    assert not out.exists()


# --- gene-set inputs and messages (tester's findings) ------------------------------------------------------


def test_gmt_line_without_description_is_warned_and_can_be_read(tmp_path, caplog):
    """A line written without the description loses its first gene to it: enrich warns when a description is a
    gene of the model (not for real descriptions, nor one equal to the set's name); description=False reads it."""
    p = _gmt(tmp_path, ["SETA\t" + "\t".join(BG[:30]), "SETB\thttp://x\t" + "\t".join(BG[50:60]),
                        f"{BG[5]}\t{BG[5]}\t" + "\t".join(BG[100:110])], "nodesc.gmt")
    assert len(read_gmt(p)["SETA"]) == 29
    assert read_gmt(p, description=False)["SETA"] == BG[:30]
    with caplog.at_level("WARNING", logger="genodae"):
        enrich({"s": BG[:10]}, p, background=BG)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and str(p) in warnings[0] and "1 of its 3 gene sets" in warnings[0]
    assert "SETA: G0" in warnings[0] and "description=False" in warnings[0]
    caplog.clear()
    with caplog.at_level("WARNING", logger="genodae"):
        enrich({"s": BG[:10]}, read_gmt(p, description=False), background=BG)
        enrich({"s": BG[:10]}, _gmt(tmp_path, ["SETB\tna\t" + "\t".join(BG[:10])], "ok.gmt"), background=BG)
    assert not caplog.records


def test_gene_sets_of_another_kind_are_user_errors():
    with pytest.raises(UserError, match=r"gene_sets takes a GMT or JSON file path.*not a list of lists"):
        enrich({"s": BG[:10]}, [BG[:20]], background=BG)
    with pytest.raises(UserError, match=r"gene set 'A' of gene_sets is a str, not a list of genes"):
        enrich({"s": BG[:10]}, {"A": " ".join(BG[:20])}, background=BG)
    with pytest.raises(UserError, match=r"none of the 20 paths in gene_sets is a file"):
        enrich({"s": BG[:10]}, BG[:20], background=BG)
    with pytest.raises(UserError, match=r"signature 's' is a string"):
        enrich({"s": " ".join(BG[:10])}, {"A": BG[:20]}, background=BG)


def test_tl_enrich_rejects_gene_sets_of_another_kind(weights_h5ad):
    import anndata

    from genodae import tl

    a = anndata.read_h5ad(weights_h5ad)
    with pytest.raises(UserError, match="gene_sets takes"):
        tl.enrich(a, gene_sets=[BG[:20]], key="dae")
    with pytest.raises(UserError, match="not a list of genes"):
        tl.enrich(a, gene_sets={"A": " ".join(BG[:20])}, key="dae")


def test_json_gene_sets_are_read_and_a_list_of_files_is_merged(tmp_path):
    import json

    from genodae.enrich import read_gene_sets

    js = tmp_path / "sets.json"
    js.write_text(json.dumps({"A": BG[:12], "B": BG[100:120]}))
    gmt = _gmt(tmp_path, ["C\td\t" + "\t".join(BG[150:170])])
    assert read_gene_sets(js) == {"A": BG[:12], "B": BG[100:120]}
    res = enrich({"s": BG[:10]}, [js, gmt], background=BG)
    assert set(res["term"]) == {"A"} and res.loc[0, "overlap"] == 10
    with pytest.raises(UserError, match=r"is JSON, not GMT: read it with genodae.enrich.read_gene_sets"):
        read_gmt(js)
    (tmp_path / "list.json").write_text(json.dumps(BG[:10]))
    with pytest.raises(UserError, match=r"must map each set name to its list of genes"):
        enrich({"s": BG[:10]}, tmp_path / "list.json", background=BG)
    with pytest.raises(UserError, match=r"'A' appears in more than one gene-set file"):
        enrich({"s": BG[:10]}, [js, js], background=BG)


def test_gmt_with_byte_order_mark(tmp_path):
    p = tmp_path / "bom.gmt"
    p.write_text("SETA\td\t" + "\t".join(BG[:10]) + "\n", encoding="utf-8-sig")
    assert list(read_gmt(p)) == ["SETA"]


def test_id_map_matching_no_model_id_says_so():
    ens = [f"ENSG{i:011d}.5" for i in range(200)]
    unversioned = pd.Series(BG, index=[e.split(".")[0] for e in ens])
    with pytest.raises(UserError, match=r"the id map matched 0 of the model's 200 gene IDs.*version suffixes") as e:
        enrich({"s": ens[:10]}, {"A": BG[:20]}, background=ens, id_map=unversioned)
    assert "map identifiers with an id map" not in str(e.value)
    # a map that matches the model but maps to other identifiers than the sets': the target column is named
    wrong_target = pd.Series([f"X{i}" for i in range(200)], index=ens)
    with pytest.raises(UserError, match=r"matched 200 of 200 model IDs.*--id-to"):
        enrich({"s": ens[:10]}, {"A": BG[:20]}, background=ens, id_map=wrong_target)


def test_min_and_max_size_must_be_whole_numbers():
    for kw in ({"min_size": float("nan")}, {"min_size": -3}, {"max_size": 2.5}, {"min_size": True}):
        with pytest.raises(UserError, match="min_size and max_size must be whole numbers"):
            enrich({"s": BG[:10]}, {"A": BG[:20]}, background=BG, **kw)


def test_cli_enrich_sd_cutoff_is_checked_and_never_ignored(weights_h5ad, tmp_path, capsys):
    from genodae.cli import main

    gmt = _gmt(tmp_path, ["UP\td\t" + "\t".join(BG[:15])])
    out = tmp_path / "enr.tsv"
    base = ["enrich", str(weights_h5ad), "-o", str(out), "--gene-sets", str(gmt), "--key", "dae"]
    assert main([*base, "--sd-cutoff", "nan"]) == 2
    assert "--sd-cutoff must be a number > 0" in capsys.readouterr().err
    table = tmp_path / "sig.tsv"
    pd.DataFrame({"node": ["node0"] * 10, "direction": ["pos"] * 10, "gene": BG[:10]}).to_csv(table, sep="\t")
    assert main([*base, "--signatures", str(table), "--sd-cutoff", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "use one of the two" in err[0] and not out.exists()
    assert main([*base, "--signatures", str(table)]) == 0


def test_cli_enrich_reads_json_and_several_gene_set_files(weights_h5ad, tmp_path):
    import json

    from genodae.cli import main

    js = tmp_path / "up.json"
    js.write_text(json.dumps({"UP": BG[:15]}))
    gmt = _gmt(tmp_path, ["DOWN\td\t" + "\t".join(BG[100:115])])
    out = tmp_path / "enr.tsv"
    assert main(["-q", "enrich", str(weights_h5ad), "-o", str(out), "--gene-sets", str(js), str(gmt),
                 "--key", "dae"]) == 0
    assert {"UP", "DOWN"} <= set(pd.read_csv(out, sep="\t")["term"])


def test_cli_enrich_signatures_table_must_be_of_the_key(weights_h5ad, tmp_path, capsys):
    """--signatures with a table of another model or read-out than --key: one line naming the fix, exit 2, no
    output; the table of that key (written by genodae signatures, full precision) passes."""
    from genodae.cli import main

    gmt = _gmt(tmp_path, ["UP\td\t" + "\t".join(BG[:15]), "DOWN\td\t" + "\t".join(BG[100:115])])
    out = tmp_path / "enr.tsv"
    table = tmp_path / "sig.tsv"
    base = ["enrich", str(weights_h5ad), "-o", str(out), "--gene-sets", str(gmt), "--signatures", str(table)]
    assert main(["-q", "signatures", str(weights_h5ad), "-o", str(table), "--key", "dae", "--rotation", "none"]) == 0
    assert main([*base, "--key", "dae"]) == 0 and out.exists()
    out.unlink()
    # the same table tested against the sparse read-out's nodes (another basis, nodes vnode0…)
    assert main([*base, "--key", "dae_sparse"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not have (node0" in err[0] and err[0].endswith("pass --key dae")
    assert not out.exists()
    # weights rounded to 3 decimals (a spreadsheet's export) are still the key's
    t = pd.read_csv(table, sep="\t")
    rounded = tmp_path / "rounded.tsv"
    t.assign(weight=t["weight"].round(3)).to_csv(rounded, sep="\t", index=False)
    assert main([*base[:-1], str(rounded), "--key", "dae"]) == 0 and out.exists()
    out.unlink()
    # same node names, other weights: a table read from another model with nodes named alike
    t = pd.read_csv(table, sep="\t")
    t["weight"] = t["weight"] * 1.5
    t.to_csv(table, sep="\t", index=False)
    assert main([*base, "--key", "dae"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "other weights than --key dae" in err[0] and not out.exists()
    assert "remove its weight column" in err[0]
    # a hand-made table without weights is checked for its nodes only
    pd.DataFrame({"node": ["node0"] * 10, "direction": ["pos"] * 10, "gene": BG[:10]}).to_csv(table, sep="\t")
    assert main([*base, "--key", "dae"]) == 0


def test_cli_enrich_unreadable_signatures_tables_are_user_errors(weights_h5ad, tmp_path, capsys):
    """Files that are no signatures table: one line, exit 2, nothing written (helper-38's findings)."""
    from genodae.cli import main

    gmt = _gmt(tmp_path, ["UP\td\t" + "\t".join(BG[:15])])
    out = tmp_path / "enr.tsv"
    rows = pd.DataFrame({"node": ["node0"] * 3, "direction": ["pos"] * 3, "gene": BG[:3], "weight": [1.0, 0.9, 0.8]})
    cases = {"empty.tsv": ("", "not a readable tab-separated table"),
             "binary.tsv": (b"\x89HDF\r\n\x1a\n\xff\xfe\x00\x81", "not a readable tab-separated table"),
             "comma.csv": (rows.to_csv(index=False), "comma-separated"),
             "decimal.tsv": (rows.assign(weight=["1,0", "0,9", "0,8"]).to_csv(sep="\t", index=False),
                             "non-numbers (e.g. '1,0')"),
             "signs.tsv": (rows.assign(direction=["+", "+", "-"]).to_csv(sep="\t", index=False),
                           "direction must be pos or neg, not +"),
             "header.tsv": ("node\tdirection\tgene\n", "has no rows")}
    for name, (content, message) in cases.items():
        p = tmp_path / name
        p.write_bytes(content) if isinstance(content, bytes) else p.write_text(content)
        assert main(["enrich", str(weights_h5ad), "-o", str(out), "--gene-sets", str(gmt), "--key", "dae",
                     "--signatures", str(p)]) == 2, name
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0] and not out.exists(), (name, err)


def test_cli_figure_paths_are_checked_before_anything_is_written(weights_h5ad, tmp_path, capsys):
    from genodae.cli import main

    gmt = _gmt(tmp_path, ["UP\td\t" + "\t".join(BG[:15])])
    out = tmp_path / "enr.tsv"
    for fig in ("dot.txt", "dot"):
        assert main(["enrich", str(weights_h5ad), "-o", str(out), "--gene-sets", str(gmt), "--key", "dae",
                     "--dotplot", str(tmp_path / fig)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "--dotplot" in err[0] and "dot.png" in err[0] and not out.exists()
    sig = tmp_path / "sig.tsv"
    assert main(["signatures", str(weights_h5ad), "-o", str(sig), "--key", "dae", "--rotation", "none",
                 "--heatmap", str(tmp_path / "h.txt")]) == 2
    assert "--heatmap" in capsys.readouterr().err and not sig.exists()


def test_cli_enrich_cutoff_that_leaves_no_signature_is_a_user_error(weights_h5ad, tmp_path, capsys):
    from genodae.cli import main

    gmt = _gmt(tmp_path, ["UP\td\t" + "\t".join(BG[:15])])
    out = tmp_path / "enr.tsv"
    assert main(["enrich", str(weights_h5ad), "-o", str(out), "--gene-sets", str(gmt), "--key", "dae",
                 "--sd-cutoff", "50"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lower --sd-cutoff" in err[0] and not out.exists()


def test_cli_ensemble_of_a_file_without_models_says_to_embed_it(weights_h5ad, tmp_path, capsys):
    import anndata

    from genodae.cli import main

    bare = tmp_path / "prepared.h5ad"
    anndata.AnnData(np.zeros((5, 200), np.float32), var=pd.DataFrame(index=BG)).write_h5ad(bare)
    out = tmp_path / "ens.tsv"
    assert main(["ensemble", str(weights_h5ad), str(bare), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "embed it first" in err[0] and not out.exists()


def test_cli_enrich_accepts_every_readout_of_the_key_and_names_the_matching_key(weights_h5ad, tmp_path, capsys):
    """helper-39: a table of genodae signatures --readout weights is a read-out of --key (accepted); a varimax
    table tested under the default sparse key is told the key that matches."""
    from genodae.cli import main

    gmt = _gmt(tmp_path, ["UP\td\t" + "\t".join(BG[:15])])
    out = tmp_path / "enr.tsv"
    w, v = tmp_path / "w.tsv", tmp_path / "v.tsv"
    assert main(["-q", "signatures", str(weights_h5ad), "-o", str(w), "--key", "dae", "--readout", "weights"]) == 0
    assert main(["-q", "enrich", str(weights_h5ad), "-o", str(out), "--gene-sets", str(gmt), "--signatures",
                 str(w)]) == 0 and out.exists()
    out.unlink()
    assert main(["-q", "signatures", str(weights_h5ad), "-o", str(v), "--key", "dae", "--rotation", "varimax",
                 "--readout", "weights"]) == 0
    # under the model's own nodes (node0 …) the vnode table is refused, naming the key(s) whose weights it has
    assert main(["enrich", str(weights_h5ad), "-o", str(out), "--gene-sets", str(gmt), "--signatures", str(v),
                 "--key", "dae"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "dae_varimax (read out with --readout weights)" in err[0] and "pass" in err[0]
    assert not out.exists()
    for fig in ("d.pgf", ".png"):
        assert main(["enrich", str(weights_h5ad), "-o", str(out), "--gene-sets", str(gmt), "--key", "dae",
                     "--dotplot", str(tmp_path / fig)]) == 2
        err = capsys.readouterr().err.strip()
        assert "--dotplot" in err and ".png.png" not in err and not out.exists()


def test_no_signatures_give_an_empty_table_and_say_so(caplog):
    """Nothing beyond the cutoff (e.g. degenerate weights): an empty table, as the workflow's rule needs one, and a
    warning line that says why and what gives signatures."""
    bg = [f"g{i}" for i in range(30)]
    sets = {"A": bg[:8], "B": bg[8:20]}
    empty = pd.DataFrame(columns=["node", "direction", "gene", "weight", "rank"])
    with caplog.at_level("WARNING", logger="genodae"):
        res = enrich(empty, sets, background=bg)
    assert res.empty and "term" in res.columns
    assert "no signatures to test: the enrichment table is empty" in caplog.text
    assert "genodae enrich --sd-cutoff" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="genodae"):
        enrich({"s": bg[:5]}, sets, background=bg)
    assert "no signatures to test" not in caplog.text
