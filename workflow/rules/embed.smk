# Embedding: every cell of a dataset through its trained model (genodae embed).


rule embed:
    """Embed the prepared data with one model: obsm["X_dae"], varm["dae_weights"], reconstruction scores."""
    input:
        data="results/{dataset}/prepared.h5ad",
        model="results/{dataset}/{run}/model/model.safetensors",
        meta="results/{dataset}/{run}/model/model.json",
    output:
        "results/{dataset}/{run}/embedded.h5ad",
    log:
        "logs/{dataset}/{run}/embed.log",
    benchmark:
        "benchmarks/{dataset}/{run}/embed.tsv"
    conda:
        "../envs/genodae.yaml"
    threads: config["resources"]["embed"]["threads"]
    resources:
        mem_mb=config["resources"]["embed"]["mem_mb"],
        runtime=config["resources"]["embed"]["runtime"],
    params:
        genodae=GENODAE,
        model_dir=lambda wildcards, input: Path(input.model).parent,
        denoised="--denoised" if config["embed"]["denoised"] else "",
    shell:
        "{params.genodae} embed {input.data:q} {params.model_dir:q} -o {output:q} {params.denoised} > {log} 2>&1"
