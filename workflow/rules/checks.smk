# The validation studies: `snakemake checks --cores 1 --resources gpu=1` (docs/studies.md).
#
# Their file (checks.config, e.g. config/checks.yaml; loaded in common.smk, whose dataset table includes its
# datasets) lists per study a few parts; a part is a cross product like a main-config group, plus `grid:`
# (dotted `mcil train` keys crossed into variants). Every check run goes through the train rule (same
# command and overrides, plus the checks file's `run:` and the variant's values) into its own folder:
#   results/checks/runs/<variant>/<dataset>/<method>/T<T>_th<th>_a<alpha>_s<seed>-<hash>/result.json
# <variant> is `base`, or the grid values that differ from the base setting (e.g. lr=1e-05,batch_size=8).
# Then `mcil studies` writes results/checks/{claims.md,claims.csv,all_runs.csv,all_tasks.csv,tables/}
# and figures/checks/. The default target (`all`) never runs any of this.


use rule train as train_check with:
    output:
        result=CHECK_RESULT,
    log:
        f"logs/train_check/{CHECK_RUN_NAME}.log",
    benchmark:
        f"benchmarks/train_check/{CHECK_RUN_NAME}.tsv"
    wildcard_constraints:
        variant=names_regex(CHECK_VARIANTS),
    params:
        mcil=MCIL,
        out=lambda wc, output: os.path.dirname(output.result),
        overrides=check_overrides,


rule checks:
    """The validation studies: their runs, then tables, figures and results/checks/claims.md (`mcil studies`)."""
    input:
        runs=check_targets,
        spec=CHECKS_FILE or [],
    output:
        claims=report(f"{CHECKS_OUT}/claims.md", caption="../report/checks.rst", category="Validation studies"),
        findings=f"{CHECKS_OUT}/claims.csv",
        runs=f"{CHECKS_OUT}/all_runs.csv",
        tasks=f"{CHECKS_OUT}/all_tasks.csv",
        tables=expand(f"{CHECKS_OUT}/tables/{{study}}.{{ext}}", study=CHECK_STUDIES, ext=["csv", "md", "tex"]),
        figures=[
            report(f"{CHECKS_FIGURES}/{s}.png", caption="../report/checks.rst", category="Validation studies")
            for s in CHECK_STUDIES
        ],
        figures_pdf=expand(f"{CHECKS_FIGURES}/{{study}}.pdf", study=CHECK_STUDIES),
    log:
        "logs/checks/checks.log",
    benchmark:
        "benchmarks/checks/checks.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=4000,
    params:
        mcil=MCIL,
        main_runs=RUNS_DIR,
        out=lambda wc, output: os.path.dirname(output.claims),
        figures=lambda wc, output: os.path.dirname(output.figures_pdf[0]) if output.figures_pdf else CHECKS_FIGURES,
        args=studies_args() if CHECKS else "",
    shell:
        "{params.mcil} studies --runs {input.runs} --main-runs {params.main_runs} --out {params.out} --figures {params.figures}"
        " {params.args} > {log} 2>&1"
