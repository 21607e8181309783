# The HTML report (`snakemake --report report.html`, after a run): this page is its front matter;
# the tables, figures, claims.md and the backbone's zero-shot table are registered with report(...)
# in the outputs of the rules that make them (aggregate.smk, pretrain.smk), captions in workflow/report/.


report: "../report/workflow.rst"
