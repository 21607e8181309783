# mcil pipeline. From the repository root:
#   snakemake --cores 1 --resources gpu=1                             # embedded default (CPU)
#   snakemake --cores 1 --resources gpu=1 --configfile config/paper.yaml
#   snakemake --workflow-profile workflow/profiles/slurm --configfile config/paper.yaml
#   snakemake checks --cores 1 --resources gpu=1                     # the validation studies (config/checks.yaml)
#   snakemake tune --cores 1 --resources gpu=1                       # default settings chosen on validation (config/tune.yaml)
# Targets, config groups, profiles: docs/pipeline.md.

import os

from snakemake.utils import min_version, validate

min_version("9.0")

# config/default.yaml unless config files are given with --configfile (which then replace it).
if not workflow.overwrite_configfiles:

    configfile: os.path.join(workflow.basedir, "config", "default.yaml")


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/checks.smk"
include: "workflow/rules/tune.smk"
include: "workflow/rules/calibrate.smk"


rule all:
    """Everything: every configured run, the tables, the figures, results/claims.md and results/calibration.md."""
    default_target: True
    input:
        rules.aggregate.output,
        rules.calibrate.output,
