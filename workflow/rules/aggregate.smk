# The result.json of every configured run -> one tidy table, the paper's tables, figures and claims.md.
# Only this config's runs (its targets, not everything under results/runs): folders of earlier
# configurations (another hash) stay on disk but out of the tables.


rule aggregate:
    """Collect the configured runs into all_runs.csv, tables, figures and claims.md."""
    input:
        run_targets(),
    output:
        runs=report("results/all_runs.csv", caption="../report/all_runs.rst", category="Runs"),
        steps="results/all_steps.csv",
        claims=report("results/claims.md", caption="../report/claims.rst", category="Claims"),
        claims_csv="results/claims.csv",
        tables=[
            report(f"results/tables/{name}.csv", caption=f"../report/table_{name}.rst", category="Tables")
            for name in TABLES
        ],
        tables_text=expand("results/tables/{table}.{ext}", table=TABLES, ext=["md", "tex"]),
        figures=[report(f"figures/{name}.png", caption=f"../report/{name}.rst", category="Figures") for name in FIGURES],
        figures_pdf=expand("figures/{name}.pdf", name=FIGURES),
    log:
        "logs/aggregate/aggregate.log",
    benchmark:
        "benchmarks/aggregate/aggregate.tsv"
    conda:
        CONDA_ENV
    threads: 1
    resources:
        mem_mb=4000,
    params:
        mcil=MCIL,
        th=label(config["defaults"]["th"]),
        alpha=label(config["defaults"]["alpha"]),
        noisy=" ".join(noisy_datasets()) or "none",
        tolerance=config["claims"]["tolerance"],
        confidence=config["claims"]["confidence"],
        expected=expected_cells(),
    shell:
        "{params.mcil} aggregate --runs {input} --out results --figures figures"
        " --default-th {params.th} --default-alpha {params.alpha}"
        " --noisy {params.noisy} --tolerance {params.tolerance} --confidence {params.confidence}"
        " --expected-methods {params.expected}"
        " > {log} 2>&1"
