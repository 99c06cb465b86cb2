"""What to draw and tabulate, declared: to add a figure, append one `FigureSpec` to FIGURES (metric glob -> one
panel per matching metric, x = achieved sparsity, one line per pruning method, one file per model/dataset/threat)
or one `ProfileSpec` to PROFILES (x = eps / radius / fine-tune epoch, a panel per method, a line per sparsity); to
add a summary column, append one `Column` to SUMMARY_COLUMNS. Specs whose metrics are absent from the store are
skipped."""
from __future__ import annotations

from dataclasses import dataclass

from benchmark.figures.frame import X_SPARSITY



@dataclass(frozen=True)
class FigureSpec:
    """One figure per setting: a panel per metric matching `metrics` (a glob over metric names) minus `exclude`."""
    name: str  # file stem: <name>__<model>__<dataset>__<threat>.{png,pdf}
    metrics: str
    ylabel: str
    x: str = X_SPARSITY
    xlabel: str = "achieved sparsity (fraction of prunable weights removed)"
    exclude: tuple[str, ...] = ()
    ylim: tuple[float, float] | None = (0.0, 1.02)
    logx: bool = False
    accuracy: bool = False  # an accuracy: draw the chance level
    threat_metric: bool = False  # measures the data threat's success: greyed out when it is ineffective
    front: bool = True  # x is a cost (not sparsity): draw the Pareto front of low x and high metric


FIGURES: list[FigureSpec] = [
    FigureSpec("robust_vs_sparsity", "robust/*/eps_*", "robust accuracy", accuracy=True,
               exclude=("robust/worst*", "robust/convergence*", "robust/*_x[0-9]*/*")),
    FigureSpec("worst_robust_vs_sparsity", "robust/worst/eps_*", "worst-case robust accuracy", accuracy=True),
    FigureSpec("clean_vs_sparsity", "clean/acc", "clean test accuracy", accuracy=True),
    FigureSpec("gap_vs_sparsity", "gap/acc", "generalisation gap (train - test acc)", ylim=None),
    FigureSpec("flip_rate_vs_sparsity", "forget/flip_rate", "share of test predictions changed from the dense model"),
    FigureSpec("max_class_drop_vs_sparsity", "forget/max_class_drop", "largest per-class accuracy drop", ylim=None),
    # Pareto view: cost against worst-case robustness, one panel per eps.
    FigureSpec("pareto_macs_vs_worst_robust", "robust/worst/eps_*", "worst-case robust accuracy",
               x="cost/macs", xlabel="MACs per image", logx=True, accuracy=True),
    FigureSpec("pareto_latency_vs_worst_robust", "robust/worst/eps_*", "worst-case robust accuracy",
               x="cost/latency_ms", xlabel="CPU latency per batch (ms)", logx=True, accuracy=True),
    # Poisoning and backdoors: one figure per threat variant (threat.name carries rate/stage/fine-tune data).
    FigureSpec("backdoor_asr_vs_sparsity", "backdoor/asr", "backdoor attack success rate", threat_metric=True),
    FigureSpec("backdoor_asr_vs_clean_acc", "backdoor/asr", "backdoor attack success rate", x="clean/acc",
               xlabel="clean test accuracy", threat_metric=True, front=False),  # bottom right: a good defence
    # The same trade-off right after pruning, before any fine-tune (the papers' ANP and CLP do not fine-tune).
    FigureSpec("backdoor_asr_vs_clean_acc_pruned", "backdoor/asr_pruned", "backdoor ASR before fine-tune",
               x="clean/acc_pruned", xlabel="clean test accuracy before fine-tune", threat_metric=True, front=False),
    FigureSpec("backdoor_triggered_acc_vs_sparsity", "backdoor/clean_acc_triggered", "accuracy on triggered inputs",
               accuracy=True, threat_metric=True),
    FigureSpec("poison_damage_vs_sparsity", "poison/acc_drop", "clean acc drop vs unpoisoned model", ylim=None,
               threat_metric=True),
    FigureSpec("poison_targeted_vs_sparsity", "poison/targeted_success", "targeted poisoning success",
               threat_metric=True),
    # Strong evasion, certification, calibration, corruptions, interpretability.
    FigureSpec("worst_l2_robust_vs_sparsity", "robust/worst_l2/eps_*", "worst-case robust accuracy (L2)",
               accuracy=True),
    FigureSpec("convergence_gap_vs_sparsity", "robust/convergence_gap/eps_*", "PGD acc(B) - acc(m B), largest m",
               ylim=None),
    FigureSpec("gradient_masking_vs_sparsity", "robust/gradient_masking_margin", "PGD acc - weaker attack acc",
               ylim=None),
    FigureSpec("certified_vs_sparsity", "certified/acc/r_*", "certified accuracy (randomized smoothing)",
               accuracy=True),
    FigureSpec("ece_vs_sparsity", "calib/ece", "expected calibration error (15 bins)"),
    FigureSpec("nll_vs_sparsity", "calib/nll", "negative log-likelihood", ylim=None),
    FigureSpec("corruption_vs_sparsity", "corruption/*mean", "accuracy under corruption (mean over severities)",
               accuracy=True),
    FigureSpec("attribution_spearman_vs_sparsity", "interpret/*/spearman", "Spearman rank corr. with dense maps"),
    FigureSpec("attribution_topk_vs_sparsity", "interpret/*/topk_overlap", "top-10% overlap with dense maps"),
    FigureSpec("deletion_vs_sparsity", "interpret/*/deletion_auc", "deletion AUC (lower = more faithful)"),
]


@dataclass(frozen=True)
class ProfileSpec:
    """One figure per setting, a panel per method (variants apart), a line per target sparsity (dense `none` as a
    dashed reference in every panel). x is the number ending each metric matching `metrics` (eps, radius), or, with
    `history=True`, the MLflow step of the logged curve `metrics` (e.g. the fine-tune epoch)."""
    name: str
    metrics: str
    xlabel: str
    ylabel: str
    history: bool = False
    ylim: tuple[float, float] | None = (0.0, 1.02)
    accuracy: bool = False  # an accuracy: draw the chance level
    threat_metric: bool = False  # measures the data threat's success: greyed out when it is ineffective


PROFILES: list[ProfileSpec] = [
    ProfileSpec("worst_robust_vs_eps", "robust/worst/eps_*", "eps (L-inf, pixels in [0, 1])", "worst-case robust acc.",
                accuracy=True),
    ProfileSpec("certified_vs_radius", "certified/acc/r_*", "L2 radius", "certified accuracy (randomized smoothing)",
                accuracy=True),
    ProfileSpec("finetune_loss_vs_epoch", "finetune/loss", "fine-tune epoch", "mean training loss of the epoch", history=True,
                ylim=None),
    ProfileSpec("finetune_clean_acc_vs_epoch", "finetune/clean/acc", "fine-tune epoch (0 = just pruned)",
                "clean test accuracy", history=True, accuracy=True),
    ProfileSpec("finetune_asr_vs_epoch", "finetune/backdoor/asr", "fine-tune epoch (0 = just pruned)",
                "backdoor attack success rate", history=True, threat_metric=True),
    ProfileSpec("finetune_targeted_vs_epoch", "finetune/poison/targeted_success", "fine-tune epoch (0 = just pruned)",
                "targeted poisoning success", history=True, threat_metric=True),
]


@dataclass(frozen=True)
class Column:
    """One summary-table column: a metric glob (each match is a column) reported as mean (and ± CI)."""
    metrics: str
    exclude: tuple[str, ...] = ()
    ci: bool = True
    binomial: bool = False  # a robust accuracy: its 95% binomial interval over the test images it was measured on


SUMMARY_COLUMNS: list[Column] = [
    Column(X_SPARSITY, ci=False),
    Column("clean/acc"),
    Column("gap/acc"),
    Column("robust/worst/eps_*", binomial=True),
    Column("backdoor/asr"),  # the data threats' success: what a defence must bring down, beside its baseline:
    Column("backdoor/target_rate_clean"),  # how often the model picks the target class without the trigger
    Column("clean/acc_pruned"),  # data threats: the numbers right after pruning, before any fine-tune
    Column("backdoor/asr_pruned"),
    Column("poison/targeted_success_pruned"),
    Column("poison/targeted_success"),
    Column("poison/targeted_success_ref"),  # the same success against the clean model (same method and sparsity)
    Column("poison/acc_drop"),
    Column("cost/macs", ci=False),
]

