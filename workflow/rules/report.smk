# Figures of every run and a table of all runs of a dataset, collected by `snakemake --report`.


# Reading a few small JSON files: not worth a cluster job.
localrules:
    gather_runs,


rule plot:
    """Loss curves and a UMAP of the embedding coloured by the dataset's label columns (genodae plot)."""
    input:
        "results/{dataset}/{run}/embedded.h5ad",
    output:
        loss=reported(
            "results/{dataset}/{run}/figures/loss.png",
            "loss", "{run}", run="{run}", figure="loss curves",
        ),
        umap=reported(
            "results/{dataset}/{run}/figures/umap.png",
            "umap", "{run}", run="{run}", figure="UMAP",
        ),
    log:
        "logs/{dataset}/{run}/plot.log",
    benchmark:
        "benchmarks/{dataset}/{run}/plot.tsv"
    conda:
        "../envs/genodae.yaml"
    threads: config["resources"]["plot"]["threads"]
    resources:
        mem_mb=config["resources"]["plot"]["mem_mb"],
        runtime=config["resources"]["plot"]["runtime"],
    params:
        genodae=GENODAE,
        figdir=lambda wildcards, output: Path(output.loss).parent,
        colors=plot_colors,
    shell:
        "{params.genodae} plot {input:q} -o {params.figdir:q} {params.colors} > {log} 2>&1"


rule gather_runs:
    """One table per dataset: every run's settings and final training and validation losses."""
    input:
        run_table_inputs,
    output:
        reported("results/{dataset}/runs.tsv", "runs", table="all runs"),
    log:
        "logs/{dataset}/gather_runs.log",
    benchmark:
        "benchmarks/{dataset}/gather_runs.tsv"
    conda:
        "../envs/genodae.yaml"
    threads: config["resources"]["gather"]["threads"]
    resources:
        mem_mb=config["resources"]["gather"]["mem_mb"],
        runtime=config["resources"]["gather"]["runtime"],
    params:
        runs=lambda wildcards: list(RUNS),
        swept=PLAN.swept_keys(),
    script:
        "../scripts/gather_runs.py"


rule integration:
    """Datasets with a batch column: how well each run mixes the batches (15-NN batch and label accuracy,
    scib's batch silhouette) on obsm["X_dae"]; one row per run."""
    input:
        integration_inputs,
    output:
        reported("results/{dataset}/integration.tsv", "integration", table="integration"),
    log:
        "logs/{dataset}/integration.log",
    benchmark:
        "benchmarks/{dataset}/integration.tsv"
    conda:
        "../envs/genodae.yaml"
    threads: config["resources"]["integration"]["threads"]
    resources:
        mem_mb=config["resources"]["integration"]["mem_mb"],
        runtime=config["resources"]["integration"]["runtime"],
    params:
        runs=lambda wildcards: list(RUNS),
        batch_key=lambda wildcards: DATASETS[wildcards.dataset]["batch_key"],
        label_key=integration_label,
    script:
        "../scripts/integration.py"
