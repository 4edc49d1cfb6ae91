# Input data -> model input: the built-in example, and `genodae prepare` for every dataset.


rule example:
    """The built-in example (scanpy's pbmc68k_reduced with raw counts), for datasets whose path is `example`."""
    output:
        EXAMPLE_PATH,
    log:
        "logs/example.log",
    benchmark:
        "benchmarks/example.tsv"
    conda:
        "../envs/genodae.yaml"
    threads: config["resources"]["example"]["threads"]
    resources:
        mem_mb=config["resources"]["example"]["mem_mb"],
        runtime=config["resources"]["example"]["runtime"],
    params:
        genodae=GENODAE,
    shell:
        "{params.genodae} example -o {output} > {log} 2>&1"


rule prepare:
    """Normalise, select genes and scale one dataset (genodae prepare). A dataset of several files (plates,
    samples, technologies) becomes one AnnData with a batch column (the sheet's batch_key, default `batch`)."""
    input:
        data=dataset_input,
        # an input, so that editing the sample sheet re-runs prepare (its columns reach obs here)
        sample_sheet=dataset_sample_sheet,
    output:
        "results/{dataset}/prepared.h5ad",
    log:
        "logs/{dataset}/prepare.log",
    benchmark:
        "benchmarks/{dataset}/prepare.tsv"
    conda:
        "../envs/genodae.yaml"
    threads: config["resources"]["prepare"]["threads"]
    resources:
        mem_mb=config["resources"]["prepare"]["mem_mb"],
        runtime=config["resources"]["prepare"]["runtime"],
    params:
        genodae=GENODAE,
        inputs=prepare_inputs,
        options=prepare_flags,
    shell:
        "{params.genodae} prepare {params.inputs} -o {output:q} {params.options} > {log} 2>&1"
