# The tiny tri-modal backbone, pre-trained contrastively on the pre-training split of a synav
# dataset. Runs only when a training job needs pretrain.out, i.e. when backbone.checkpoint is
# pretrain.out; an AudioCLIP checkpoint comes from a user path instead.

PRETRAIN_NAME = os.path.basename(os.path.splitext(config["pretrain"]["out"])[0])


rule pretrain:
    """Contrastive pre-training of the tiny backbone; writes the checkpoint and its zero-shot table."""
    input:
        manifest=dataset_manifest(config["pretrain"]["dataset"]),
    output:
        checkpoint=config["pretrain"]["out"],
        zeroshot=report(
            os.path.splitext(config["pretrain"]["out"])[0] + ".zeroshot.md",
            caption="../report/zeroshot.rst",
            category="Backbone",
        ),
    log:
        f"logs/pretrain/{PRETRAIN_NAME}.log",
    benchmark:
        f"benchmarks/pretrain/{PRETRAIN_NAME}.tsv"
    conda:
        CONDA_ENV
    threads: config["pretrain"]["threads"]
    resources:
        gpu=config["pretrain"]["gpus"],
        mem_mb=4000,
    params:
        mcil=MCIL,
        data=lambda wc, input: os.path.dirname(input.manifest),
        cache_dir=CACHE_DIR,
        p=config["pretrain"],
        ia_weight=config["pretrain"].get("image_audio_weight", 1.0),
    shell:
        "{params.mcil} pretrain --data {params.data} --out {output.checkpoint} --epochs {params.p[epochs]}"
        " --batch-size {params.p[batch_size]} --lr {params.p[lr]} --seed {params.p[seed]}"
        " --cache-dir {params.cache_dir} --image-audio-weight {params.ia_weight} --threads {threads} > {log} 2>&1"
