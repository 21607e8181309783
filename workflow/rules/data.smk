# Datasets on disk (manifest.csv + classes.json) and their tensor cache.


rule synth:
    """The procedural dataset synav (PNG + WAV + manifest), one folder per regime."""
    output:
        manifest=f"{DATA_DIR}/{{dataset}}/manifest.csv",
        classes=f"{DATA_DIR}/{{dataset}}/classes.json",
    log:
        "logs/synth/{dataset}.log",
    benchmark:
        "benchmarks/synth/{dataset}.tsv"
    wildcard_constraints:
        dataset=names_regex(datasets_by_source("synth")),
    conda:
        CONDA_ENV
    threads: 2
    resources:
        mem_mb=2000,
    params:
        mcil=MCIL,
        out=lambda wc: dataset_root(wc.dataset),
        regime=lambda wc: DATASETS[wc.dataset]["regime"],
        args=lambda wc: synth_args(wc.dataset),
    shell:
        "{params.mcil} synth --out {params.out} --regime {params.regime} {params.args}"
        " --workers {threads} > {log} 2>&1"


rule prepare:
    """A real dataset (ImageNet-ESC-19/27, miniARIC) turned into an mcil manifest from raw folders."""
    input:
        prepare_inputs,
    output:
        manifest=f"{DATA_DIR}/{{dataset}}/manifest.csv",
        classes=f"{DATA_DIR}/{{dataset}}/classes.json",
    log:
        "logs/prepare/{dataset}.log",
    benchmark:
        "benchmarks/prepare/{dataset}.tsv"
    wildcard_constraints:
        dataset=names_regex(datasets_by_source("prepare")),
    conda:
        CONDA_ENV
    threads: 4
    resources:
        mem_mb=8000,
    params:
        mcil=MCIL,
        args=prepare_args,
        out=lambda wc: dataset_root(wc.dataset),
    shell:
        "{params.mcil} prepare {params.args} --out {params.out} > {log} 2>&1"


rule cache:
    """Decode every sample of a dataset once into the memory-mapped tensor cache (shared by all runs)."""
    input:
        manifest=f"{DATA_DIR}/{{dataset}}/manifest.csv",
    output:
        report=f"{CACHE_DIR}/{{dataset}}.cache.json",
    log:
        "logs/cache/{dataset}.log",
    benchmark:
        "benchmarks/cache/{dataset}.tsv"
    conda:
        CONDA_ENV
    threads: config["backbone"].get("cache_threads", 2)
    resources:
        mem_mb=8000,
    params:
        mcil=MCIL,
        root=lambda wc: dataset_root(wc.dataset),
        cache_dir=lambda wc, output: os.path.dirname(output.report),
        spec=config["backbone"].get("cache_spec", {}),
    shell:
        "{params.mcil} cache --data {params.root} --cache-dir {params.cache_dir} --splits train test"
        " --image-size {params.spec[image_size]} --image-resize {params.spec[image_resize]}"
        " --sample-rate {params.spec[sample_rate]} --num-samples {params.spec[num_samples]}"
        " --workers {threads} --report {output.report} > {log} 2>&1"
