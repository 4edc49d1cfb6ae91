# Molecular signatures, after embed: the high-weight genes of every node (genodae signatures), gene-set
# enrichment (genodae enrich), consensus nodes over seeds (genodae ensemble), a summary per latent size
# (genodae sweep-summary) and the association of node activities with sample groups and survival
# (genodae associate, genodae survival). Which of them run is decided in workflow/plan.py (Plan.ensembles,
# Plan.sweeps, Plan.signature_outputs) from the config's `signatures` section and the sweep.
#
# {src} is a model whose signatures are read: a run (k{n}/seed{s}[/{settings}], its embedded.h5ad) or an
# ensemble (k{n}/ensemble[/{settings}], the consensus.h5ad of rule ensemble). Everything read off a model goes
# to results/{dataset}/{src}/signatures/.


rule signatures:
    """High-weight genes of every node of one run (sparse read-out by default), the (rotated) gene weights and
    node activities, the activity transform for `genodae score --transform`, and a heatmap of the top genes."""
    input:
        "results/{dataset}/{run}/embedded.h5ad",
    output:
        table=reported(
            "results/{dataset}/{run}/signatures/signatures.tsv",
            "signatures", "{run}", model="{run}", table="signatures",
        ),
        weights="results/{dataset}/{run}/signatures/weights.tsv",
        activities="results/{dataset}/{run}/signatures/activities.tsv",
        heatmap=reported(
            "results/{dataset}/{run}/signatures/heatmap.png",
            "signature_heatmap", "{run}", model="{run}", figure="signature heatmap",
        ),
        # the transform of the activities exists only for a rotation
        **(
            {"transform": "results/{dataset}/{run}/signatures/transform.json"}
            if config["signatures"]["rotation"] != "none"
            else {}
        ),
    log:
        "logs/{dataset}/{run}/signatures.log",
    benchmark:
        "benchmarks/{dataset}/{run}/signatures.tsv"
    conda:
        "../envs/genodae.yaml"
    threads: config["resources"]["signatures"]["threads"]
    resources:
        mem_mb=config["resources"]["signatures"]["mem_mb"],
        runtime=config["resources"]["signatures"]["runtime"],
    params:
        genodae=GENODAE,
        options=PLAN.signature_options(),
        transform=lambda wildcards, output: (
            f"--transform {shlex.quote(output.transform)}" if "transform" in output.keys() else ""
        ),
    shell:
        "{params.genodae} signatures {input:q} -o {output.table:q} --key dae {params.options} "
        "--weights {output.weights:q} --embedding {output.activities:q} --heatmap {output.heatmap:q} "
        "{params.transform} > {log} 2>&1"


rule ensemble:
    """Consensus nodes of the models that differ only in their seed (eADAGE): consensus gene weights and
    activities, each consensus node's support, the pairwise stability of the seeds, and the first model's
    .h5ad with the consensus added (key dae_ensemble), which the signature rules read like a model."""
    input:
        ensemble_inputs,
    output:
        weights=reported(
            "results/{dataset}/{ens}/consensus_weights.tsv",
            "consensus_weights", "{ens}", model="{ens}", table="consensus gene weights",
        ),
        activities="results/{dataset}/{ens}/consensus_activities.tsv",
        support=reported(
            "results/{dataset}/{ens}/support.tsv",
            "support", "{ens}", model="{ens}", table="consensus support",
        ),
        stability=reported(
            "results/{dataset}/{ens}/stability.tsv",
            "stability", "{ens}", model="{ens}", table="stability across seeds",
        ),
        h5ad="results/{dataset}/{ens}/consensus.h5ad",
    log:
        "logs/{dataset}/{ens}/ensemble.log",
    benchmark:
        "benchmarks/{dataset}/{ens}/ensemble.tsv"
    conda:
        "../envs/genodae.yaml"
    threads: config["resources"]["ensemble"]["threads"]
    resources:
        mem_mb=config["resources"]["ensemble"]["mem_mb"],
        runtime=config["resources"]["ensemble"]["runtime"],
    params:
        genodae=GENODAE,
        options=PLAN.ensemble_options(),
    shell:
        "{params.genodae} ensemble {input:q} -o {output.weights:q} --key dae {params.options} "
        "--embedding {output.activities:q} --support {output.support:q} --stability {output.stability:q} "
        "--h5ad {output.h5ad:q} > {log} 2>&1"


rule ensemble_signatures:
    """High-weight genes of every consensus node of an ensemble (already in the read-out basis of its members,
    so not rotated again), the consensus gene weights and activities, and a heatmap of the top genes."""
    input:
        "results/{dataset}/{ens}/consensus.h5ad",
    output:
        table=reported(
            "results/{dataset}/{ens}/signatures/signatures.tsv",
            "signatures", "{ens}", model="{ens}", table="signatures",
        ),
        weights="results/{dataset}/{ens}/signatures/weights.tsv",
        activities="results/{dataset}/{ens}/signatures/activities.tsv",
        heatmap=reported(
            "results/{dataset}/{ens}/signatures/heatmap.png",
            "signature_heatmap", "{ens}", model="{ens}", figure="signature heatmap",
        ),
    log:
        "logs/{dataset}/{ens}/signatures.log",
    benchmark:
        "benchmarks/{dataset}/{ens}/signatures.tsv"
    conda:
        "../envs/genodae.yaml"
    threads: config["resources"]["signatures"]["threads"]
    resources:
        mem_mb=config["resources"]["signatures"]["mem_mb"],
        runtime=config["resources"]["signatures"]["runtime"],
    params:
        genodae=GENODAE,
        options=PLAN.signature_options(rotate=False),
    shell:
        "{params.genodae} signatures {input:q} -o {output.table:q} --key dae_ensemble {params.options} "
        "--weights {output.weights:q} --embedding {output.activities:q} --heatmap {output.heatmap:q} > {log} 2>&1"


rule enrich:
    """Gene-set over-representation of each signature of a run or ensemble (one-sided, background = the genes
    the model used, Benjamini-Hochberg per node), and a dot plot of the enriched sets."""
    input:
        data=source_h5ad,
        table="results/{dataset}/{src}/signatures/signatures.tsv",
        gene_sets=PLAN.gene_set_inputs(),
    output:
        table=reported(
            "results/{dataset}/{src}/signatures/enrichment.tsv",
            "enrichment", "{src}", model="{src}", table="enrichment",
        ),
        dotplot=reported(
            "results/{dataset}/{src}/signatures/enrichment.png",
            "enrichment_dotplot", "{src}", model="{src}", figure="enrichment",
        ),
    log:
        "logs/{dataset}/{src}/enrich.log",
    benchmark:
        "benchmarks/{dataset}/{src}/enrich.tsv"
    conda:
        "../envs/genodae.yaml"
    threads: config["resources"]["enrich"]["threads"]
    resources:
        mem_mb=config["resources"]["enrich"]["mem_mb"],
        runtime=config["resources"]["enrich"]["runtime"],
    params:
        genodae=GENODAE,
        key=source_key,
        gene_sets=PLAN.gene_set_flags(),
        options=PLAN.enrich_options(),
    shell:
        "{params.genodae} enrich {input.data:q} -o {output.table:q} --key {params.key} "
        "--signatures {input.table:q} {params.gene_sets} {params.options} --dotplot {output.dotplot:q} "
        "> {log} 2>&1"


rule associate:
    """Node activities of a run or ensemble against the sample groups of one obs column: a two-group or
    multi-group test per node, effect sizes and FDR, and the activities of the most associated nodes."""
    input:
        data=source_h5ad,
        # the node names of the table are those of the signatures (same read-out)
        table="results/{dataset}/{src}/signatures/signatures.tsv",
    output:
        table=reported(
            "results/{dataset}/{src}/signatures/association_{groupby}.tsv",
            "association", "{src}", model="{src}", table="association with {groupby}",
        ),
        plot=reported(
            "results/{dataset}/{src}/signatures/association_{groupby}.png",
            "association_plot", "{src}", model="{src}", figure="activity by {groupby}",
        ),
    log:
        "logs/{dataset}/{src}/associate_{groupby}.log",
    benchmark:
        "benchmarks/{dataset}/{src}/associate_{groupby}.tsv"
    conda:
        "../envs/genodae.yaml"
    threads: config["resources"]["associate"]["threads"]
    resources:
        mem_mb=config["resources"]["associate"]["mem_mb"],
        runtime=config["resources"]["associate"]["runtime"],
    params:
        genodae=GENODAE,
        key=source_key,
    shell:
        "{params.genodae} associate {input.data:q} -o {output.table:q} --key {params.key} "
        "--groupby {wildcards.groupby:q} --plot {output.plot:q} > {log} 2>&1"


rule survival:
    """Cox proportional-hazards model per node of a run or ensemble (hazard ratio per SD of activity, FDR),
    and Kaplan-Meier curves of high vs low activity of the node with the smallest p."""
    input:
        data=source_h5ad,
        table="results/{dataset}/{src}/signatures/signatures.tsv",
    output:
        table=reported(
            "results/{dataset}/{src}/signatures/survival.tsv",
            "survival", "{src}", model="{src}", table="survival (Cox)",
        ),
        km=reported(
            "results/{dataset}/{src}/signatures/km.png",
            "km", "{src}", model="{src}", figure="Kaplan-Meier",
        ),
    log:
        "logs/{dataset}/{src}/survival.log",
    benchmark:
        "benchmarks/{dataset}/{src}/survival.tsv"
    conda:
        "../envs/genodae.yaml"
    threads: config["resources"]["survival"]["threads"]
    resources:
        mem_mb=config["resources"]["survival"]["mem_mb"],
        runtime=config["resources"]["survival"]["runtime"],
    params:
        genodae=GENODAE,
        key=source_key,
        options=PLAN.survival_flags(),
    shell:
        "{params.genodae} survival {input.data:q} -o {output.table:q} --key {params.key} {params.options} "
        "--km {output.km:q} > {log} 2>&1"


rule sweep_summary:
    """Reconstruction quality, stability across seeds and (with gene sets) the number of distinct enriched
    gene sets per latent size (BioBombe), as a table and a plot."""
    input:
        models=sweep_inputs,
        gene_sets=PLAN.gene_set_inputs(),
    output:
        table=reported(
            "results/{dataset}/{sweep}/summary.tsv",
            "sweep_summary", "{sweep}", model="{sweep}", table="sweep summary",
        ),
        plot=reported(
            "results/{dataset}/{sweep}/summary.png",
            "sweep_summary", "{sweep}", model="{sweep}", figure="sweep summary",
        ),
    log:
        "logs/{dataset}/{sweep}/sweep_summary.log",
    benchmark:
        "benchmarks/{dataset}/{sweep}/sweep_summary.tsv"
    conda:
        "../envs/genodae.yaml"
    threads: config["resources"]["sweep_summary"]["threads"]
    resources:
        mem_mb=config["resources"]["sweep_summary"]["mem_mb"],
        runtime=config["resources"]["sweep_summary"]["runtime"],
    params:
        genodae=GENODAE,
        gene_sets=PLAN.gene_set_flags(for_sweep=True),
        options=PLAN.sweep_summary_options(),
    shell:
        "{params.genodae} sweep-summary {input.models:q} -o {output.table:q} --key dae {params.options} "
        "{params.gene_sets} --plot {output.plot:q} > {log} 2>&1"
