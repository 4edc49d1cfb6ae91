# Training: one job per dataset and sweep combination (run = k{n_latent}/seed{seed}[/{other settings}]).


rule train:
    """Train one masking-noise DAE (genodae train). Training writes a checkpoint every
    train.checkpoint_every epochs to model.ckpt/ beside the model folder; a re-run of a killed or failed job
    (e.g. a cluster job over its time limit) continues from it (--resume). The finished model replaces it."""
    input:
        "results/{dataset}/prepared.h5ad",
    output:
        model="results/{dataset}/{run}/model/model.safetensors",
        meta="results/{dataset}/{run}/model/model.json",
    log:
        "logs/{dataset}/{run}/train.log",
    benchmark:
        "benchmarks/{dataset}/{run}/train.tsv"
    conda:
        "../envs/genodae.yaml"
    threads: config["resources"]["train"]["threads"]
    resources:
        mem_mb=config["resources"]["train"]["mem_mb"],
        runtime=config["resources"]["train"]["runtime"],
        gpu=config["resources"]["train"]["gpu"],
    params:
        model_dir=lambda wildcards, output: Path(output.model).parent,
        settings=train_flags,
        checkpoint_every=config["train"]["checkpoint_every"],
        # several GPUs on the node: one DistributedDataParallel rank per GPU (cells of each batch split)
        launcher=(
            f"torchrun --standalone --nproc-per-node {config['resources']['train']['gpu']} -m genodae"
            if config["resources"]["train"]["gpu"] > 1
            else "python -m genodae"
        ),
    shell:
        "{params.launcher} train {input:q} -o {params.model_dir:q} {params.settings} --num-threads {threads} "
        "--checkpoint-every {params.checkpoint_every} --resume > {log} 2>&1"
