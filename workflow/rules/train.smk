# One `mcil train` per run: results/runs/{dataset}/{method}/T{T}_th{th}_a{alpha}_s{seed}-{hash}/result.json
# (+ checkpoints/ for resume: kept when a job fails so that a retry continues where it stopped, removed
# by mcil train once result.json is written).


rule train:
    """Train one configuration over all tasks; the log starts with the run's resolved overrides."""
    input:
        unpack(train_inputs),
    output:
        result=RUN_RESULT,
    log:
        f"logs/train/{RUN_NAME}.log",
    benchmark:
        f"benchmarks/train/{RUN_NAME}.tsv"
    conda:
        CONDA_ENV
    threads: config["train"]["threads"]
    resources:
        gpu=config["train"]["gpus"],
        mem_mb=config["train"]["mem_mb"],
        runtime=config["train"]["runtime"],
    params:
        mcil=MCIL,
        out=lambda wc, output: os.path.dirname(output.result),
        overrides=run_overrides,
    shell:
        "echo overrides: {params.overrides} > {log};"
        " {params.mcil} train --out {params.out} --threads {threads} {params.overrides} >> {log} 2>&1"
