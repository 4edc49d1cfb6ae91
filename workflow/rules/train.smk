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
    # gpu; with resources.train.nodes > 1 also nodes, tasks, mpi and gres, the GPUs per node (workflow/launch.py)
    resources:
        mem_mb=config["resources"]["train"]["mem_mb"],
        runtime=config["resources"]["train"]["runtime"],
        **launch.train_resources(config["resources"]["train"]),
    params:
        model_dir=lambda wildcards, output: Path(output.model).parent,
        settings=train_flags,
        checkpoint_every=config["train"]["checkpoint_every"],
        # PYTHON -m genodae; several GPUs or nodes: torchrun (PYTHON -m torch.distributed.run), one
        # DistributedDataParallel rank per GPU (or one CPU rank per node), the cells of each batch split among them
        # (workflow/launch.py)
        launcher=launch.train_launcher(config["resources"]["train"], python=PYTHON),
        rank_threads=lambda wildcards, threads: launch.rank_threads(config["resources"]["train"], threads),
    shell:
        "{params.launcher} train {input:q} -o {params.model_dir:q} {params.settings} "
        "--num-threads {params.rank_threads} --checkpoint-every {params.checkpoint_every} --resume > {log} 2>&1"
