# `snakemake tune --cores 1 --resources gpu=1`: the default settings chosen on the validation split
# (`mcil tune`, steps in config/tune.yaml, docs/tuning.md). It trains up to 2 runs of a step side by side
# (one thread each); Snakemake lowers `threads` to --cores, so --cores 1 trains one at a time. Never part of the default target: its chosen
# values are written into config/default.yaml (`run:`, `method_run:`), which the main runs use.


rule tune:
    """Run the tune steps on the validation split and write the selection table."""
    input:
        unpack(tune_inputs),
    output:
        selection=report("results/tune/selection.md", caption="../report/tune.rst", category="Tuning"),
        selection_json="results/tune/selection.json",
    log:
        "logs/tune/tune.log",
    benchmark:
        "benchmarks/tune/tune.tsv"
    conda:
        CONDA_ENV
    threads: 2
    resources:
        gpu=config["train"]["gpus"],
        mem_mb=config["train"]["mem_mb"],
    params:
        mcil=MCIL,
        out=lambda wc, output: os.path.dirname(output.selection_json),
        overrides=lambda wc: tune_overrides(),
    shell:
        "{params.mcil} tune --spec {input.spec} --out {params.out} --threads 1 --jobs {threads} {params.overrides} > {log} 2>&1"
