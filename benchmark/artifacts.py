"""Names of the artifacts a cell logs that other code reads back (the figures and tables): one definition for the
writer and the readers, importable without torch."""

# Per cell, one row per test image: its content id, label, and the dense parent's and the pruned model's predicted
# classes (MLflow table artifact, written by benchmark/measure.py `prediction_table`; pruning-identified exemplars
# across seeds are computed from it in benchmark/figures/pie.py).
PREDICTIONS_ARTIFACT = "predictions/test.parquet"
