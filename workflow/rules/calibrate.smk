# The benchmark's calibration table (`mcil calibrate`): properties of the data and the frozen backbone
# alone, no method involved (zero-shot, probes and class means on frozen features, the image-audio r
# distribution and what the masking threshold would fuse). One section per configured dataset.

# The batch of the batch gate: the runs' training batch when the config sets it, else mcil's default.
CALIBRATE_BATCH = (config.get("run") or {}).get("optim.batch_size")


rule calibrate:
    """Calibration of every configured dataset with the backbone checkpoint (Markdown + JSON)."""
    input:
        manifests=[dataset_manifest(d) for d in sorted(config["datasets"])],
        caches=[cache_report(d) for d in sorted(config["datasets"])],
        checkpoint=checkpoint_path(),
    output:
        md=report("results/calibration.md", caption="../report/calibration.rst", category="Calibration"),
        json="results/calibration.json",
    log:
        "logs/calibrate/calibrate.log",
    benchmark:
        "benchmarks/calibrate/calibrate.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=4000,
    params:
        mcil=MCIL,
        roots=lambda wc, input: [os.path.dirname(m) for m in input.manifests],
        cache_dir=lambda wc, input: os.path.dirname(input.caches[0]),
        backbone=config["backbone"]["name"],
        batch=f"--batch-size {CALIBRATE_BATCH}" if CALIBRATE_BATCH else "",
    shell:
        "{params.mcil} calibrate {params.roots} --backbone {input.checkpoint} --backbone-name {params.backbone}"
        " --cache-dir {params.cache_dir} {params.batch} --threads {threads} --out {output.md} > {log} 2>&1"
