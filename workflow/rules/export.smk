# Export: the embedding and the gene weights of every run as plain TSV tables (genodae export).


rule export:
    """Cells x latent nodes and genes x latent nodes as tab-separated tables."""
    input:
        "results/{dataset}/{run}/embedded.h5ad",
    output:
        embedding=reported(
            "results/{dataset}/{run}/embedding.tsv",
            "embedding", "{run}", run="{run}", file="embedding",
        ),
        weights=reported(
            "results/{dataset}/{run}/gene_weights.tsv",
            "gene_weights", "{run}", run="{run}", file="gene weights",
        ),
    log:
        "logs/{dataset}/{run}/export.log",
    benchmark:
        "benchmarks/{dataset}/{run}/export.tsv"
    conda:
        "../envs/genodae.yaml"
    threads: config["resources"]["export"]["threads"]
    resources:
        mem_mb=config["resources"]["export"]["mem_mb"],
        runtime=config["resources"]["export"]["runtime"],
    params:
        genodae=GENODAE,
    shell:
        "{params.genodae} export {input:q} --embedding {output.embedding:q} --weights {output.weights:q} > {log} 2>&1"
