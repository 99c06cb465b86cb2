"""Figures and tables as pure functions of the tracking store (`mlflow.search_runs` -> pandas), nothing else.

CLI: `python -m benchmark.figures --tracking-uri URI --experiment NAME --out results` writes
`<out>/figures/*.{png,pdf}` and `<out>/tables/*.{csv,md,tex}`. The notebook imports the same functions.

One job per module: `frame` (the store's runs as a tidy frame, and the statistics), `specs` (what to draw and
tabulate, declared: add a figure or a column there), `plot` (matplotlib), `tables` (CSV, Markdown, LaTeX),
`pie` (pruning-identified exemplars from the per-image predictions the cells log), `cli`
(`python -m benchmark.figures`). This package re-exports what callers use.
"""
from benchmark.figures.cli import main, regenerate
from benchmark.figures.frame import (CHANCE, COLLAPSED, DATASET, EFFECTIVE, METHOD, MODEL, POINT, RATE, RUN_ID, SEED,
                                     SETTING, TARGET, THREAT, VARIANT, X_SPARSITY, aggregate, binomial_interval,
                                     ci_halfwidth, ineffective_share, load_runs, matching, pareto_front,
                                     pooled_binomial_interval, settings, subset_size_metric, tidy, variants)
from benchmark.figures.pie import (CLASS_IMPACT_CAPTION, PIE_CAPTION, class_impact_table,
                                   forgetting_tables, load_predictions, multi_seed_runs, pie_table)
from benchmark.figures.plot import (plot_profile, plot_spec, profile_points, write_figures, write_pie_figures,
                                    write_profiles)
from benchmark.figures.specs import FIGURES, PROFILES, SUMMARY_COLUMNS, Column, FigureSpec, ProfileSpec
from benchmark.figures.tables import (convergence_table, pareto_table, summary_table, to_latex, to_markdown,
                                      write_table, write_tables)

__all__ = ["CHANCE", "COLLAPSED", "DATASET", "EFFECTIVE", "FIGURES", "METHOD", "MODEL", "POINT", "PROFILES", "RUN_ID",
           "CLASS_IMPACT_CAPTION", "PIE_CAPTION", "RATE", "SEED", "SETTING", "SUMMARY_COLUMNS", "TARGET", "THREAT", "VARIANT", "X_SPARSITY",
           "aggregate", "binomial_interval", "ci_halfwidth", "class_impact_table", "Column", "convergence_table",
           "forgetting_tables",
           "FigureSpec",
           "ineffective_share", "load_predictions", "load_runs", "main", "matching", "multi_seed_runs",
           "pareto_front", "pareto_table", "pie_table",
           "plot_profile", "plot_spec", "pooled_binomial_interval", "profile_points", "ProfileSpec",
           "regenerate", "settings", "subset_size_metric", "summary_table", "tidy", "to_latex",
           "to_markdown", "variants", "write_figures", "write_pie_figures", "write_profiles", "write_table",
           "write_tables"]
