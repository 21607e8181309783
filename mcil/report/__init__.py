"""Reports from the runs: ``aggregate`` (result.json → tidy tables), ``tables``, ``plots``, ``claims``.

``mcil aggregate --runs results/runs --out results --figures figures`` runs all four.
"""
