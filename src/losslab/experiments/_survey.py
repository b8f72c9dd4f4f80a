"""The survey's rows (listed in docs/findings.md): id, finding, reference and the check ``losslab reproduce`` prints.

Kept in the package (not read from a document at run time) so that an installed losslab can list every
row, including those whose experiment module has not landed ("not yet implemented" in the report).
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SurveyRow", "ROWS", "SECTIONS"]


@dataclass(frozen=True)
class SurveyRow:
    id: str
    title: str
    claim: str
    reference: str
    check: str


SECTIONS = {
    "A": "Optimization reaches global minima; the question is which",
    "B": "Seeing the landscape",
    "C": "Properties of good solutions",
    "D": "Intrinsic dimensionality",
}

_ROWS = [
    SurveyRow("A1", "Monotonic linear interpolation",
              "Loss falls monotonically from init to solution along the straight line between them.",
              "Goodfellow, Vinyals & Saxe 2015 (arXiv 1412.6544); counter-examples Lucas et al. 2021 (arXiv 2104.11044)",
              "SGD MLP on MNIST-1D: 0 non-monotone steps of 50; report bump height; show a violating regime "
              "(large LR/Adam) as contrast"),
    SurveyRow("A2", "Zero training error",
              "Over-parameterized nets reach ~zero training error.",
              "Zhang et al. 2016 (arXiv 1611.03530); Du et al. 2019 (arXiv 1810.02054)",
              "clean labels: train error -> 0"),
    SurveyRow("A3", "Memorization of random labels",
              "Nets fit random labels: memorization is possible.",
              "Zhang et al. 2016 (arXiv 1611.03530)",
              "p=1: train error -> 0, test error ~ chance (0.9 for 10 classes); steps-to-fit grows with p"),
    SurveyRow("A4", "Bad minima near good ones",
              "Bad global minima lie near good ones and near the trajectory.",
              "Huang et al. 2020 (arXiv 1906.03291), reference code wronnyhuang/gen-viz",
              "poisoned model: ~0 clean train error, test error far above the clean model's; its distance to "
              "the clean solution small vs distance to init; sharper (lambda_max, 1-D width)"),
    SurveyRow("A5", "Saddles, not local minima",
              "Saddles, not local minima, trouble optimization; training rarely meets local minima.",
              "Dauphin et al. 2014 (arXiv 1406.2572); Goodfellow et al. 2015 (arXiv 1412.6544)",
              "negative eigenvalues shrink in magnitude relative to lambda_max as training proceeds"),
    SurveyRow("B1", "Filter-normalized slices; skips smooth the landscape",
              "Filter-normalized 2-D slices make sharpness comparable; skip connections and width smooth the "
              "landscape.",
              "Li et al. 2018 (arXiv 1712.09913), reference code tomgoldstein/loss-landscape",
              "per-filter norms of a direction equal the weights' (exact); surface at origin equals L(theta*); "
              "deep net without skips rougher than with skips"),
    SurveyRow("B2", "Large batches find sharp minima",
              "Large batches find sharp minima that generalize worse.",
              "Keskar et al. 2017 (arXiv 1609.04836); Dinh et al. 2017 (arXiv 1703.04933)",
              "both runs trained to ~0 train error (matched): LB lambda_max and eps-sharpness > SB; report the "
              "test gap; reparametrization caveat shown with a rescaled net"),
    SurveyRow("C1", "Wide basins are found more often",
              "Wide basins are found more often.",
              "Huang et al. 2020 (arXiv 1906.03291); Keskar et al. 2017 (arXiv 1609.04836)",
              "clean solution's basin wider than poisoned solution's"),
    SurveyRow("C2", "Mode connectivity by simple curves",
              "Independent solutions are connected by simple low-loss curves.",
              "Garipov et al. 2018 (arXiv 1802.10026); Draxler et al. 2018 (arXiv 1803.00885); Freeman & Bruna 2017",
              "test-error barrier of the linear path >> barrier of a trained one-bend curve"),
    SurveyRow("C3", "Linear mode connectivity emerges early",
              "Linear mode connectivity emerges early in training (instability analysis).",
              "Frankle et al. 2020 (arXiv 1912.05671)",
              "a regime unstable at k=0 becomes stable (barrier ~ 0) by a small spawn step k"),
    SurveyRow("C4", "One basin modulo permutations",
              "Modulo permutation symmetry, independently trained solutions share one basin.",
              "Ainsworth, Hayase & Srinivasa 2023, Git Re-Basin (arXiv 2209.04836)",
              "permuted model's outputs equal the original's (1e-5); linear-path barrier after weight matching "
              "far below the barrier before"),
    SurveyRow("C5", "Function-space diversity of independent runs",
              "Independent runs differ in function space far more than points of one trajectory; ensembles of "
              "them win.",
              "Fort, Hu & Lakshminarayanan 2019 (arXiv 1912.02757)",
              "across-run disagreement > within-trajectory disagreement at equal accuracy; independent "
              "ensemble beats same-trajectory ensemble"),
    SurveyRow("C6", "NTK stabilizes after a chaotic phase",
              "After a short chaotic phase the NTK stabilizes and linearized training works.",
              "Fort et al. 2020 (arXiv 2010.15110)",
              "kernel velocity falls over training; linearizing later gives lower test error than at init"),
    SurveyRow("C7", "Stiffness",
              "Gradients of same-class examples align; alignment length shrinks with training.",
              "Fort et al. 2019 (arXiv 1901.09491)",
              "within-class stiffness > between-class stiffness"),
    SurveyRow("C8", "Break-even point",
              "Learning rate and batch size set the curvature reached early in training.",
              "Jastrzebski et al. 2020 (arXiv 2002.09572)",
              "higher LR => lower lambda_max after the early phase; lambda_max <~ 2/LR"),
    SurveyRow("C9", "Hessian bulk and outliers",
              "About #classes outlier eigenvalues; gradients live in the top subspace.",
              "Fort & Ganguli 2019 (arXiv 1910.05929); Papyan 2019 (arXiv 1901.08244)",
              "number of outliers ~ number of classes; gradient overlap with the top subspace >> chance"),
    SurveyRow("C10", "Low-loss manifolds (wedges)",
              "Low-loss regions are high-dimensional manifolds.",
              "Fort & Jastrzebski 2019 (arXiv 1906.04724)",
              "qualitative figure + numbers from the toy model"),
    SurveyRow("C11", "Implicit regularization",
              "Width beyond fitting keeps test error falling; it is not norm minimization.",
              "Neyshabur et al. 2015 (arXiv 1412.6614); Razin & Cohen 2020 (arXiv 2005.06398)",
              "test error non-increasing in width past interpolation; depth-3 factorization: norms grow while "
              "loss -> 0"),
    SurveyRow("C12", "Generalization myths",
              "Regularization, SGD noise and low rank are not what makes nets generalize.",
              "Goldblum et al. 2020 (arXiv 1910.00359); Geiping et al. 2022 (arXiv 2109.14119)",
              "each claim as a measured comparison with its verdict"),
    SurveyRow("D1", "Intrinsic dimension",
              "Training in a random d-dim subspace reaches 90% of full performance at small d.",
              "Li, Farkhoor, Liu & Yosinski 2018 (arXiv 1804.08838)",
              "digits MLP: d_int90 ~ 10^2; random labels need much larger d"),
    SurveyRow("D2", "Goldilocks zone",
              "At standard init radii random subspaces have excess positive curvature.",
              "Fort & Scherlis 2019 (arXiv 1807.02581)",
              "a band of r with Tr(H)/||H|| clearly > 0, falling off on both sides"),
]

ROWS: dict[str, SurveyRow] = {r.id: r for r in _ROWS}
