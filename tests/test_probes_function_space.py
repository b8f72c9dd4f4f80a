"""Function-space measures on hand-made cases; subspace samples; diversity of real (tiny) runs."""
import numpy as np
import pytest
import torch
from torch import nn

from losslab import params as P
from losslab.errors import LosslabError
from losslab.probes import (
    DiversityResult, disagreement, diversity, embed_predictions, ensemble_accuracy, js_divergence, kl_divergence,
    pairwise, predictions, subspace_samples, weight_cosine,
)


def test_disagreement_hand_made():
    p = np.array([[0.9, 0.1, 0.0], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8], [0.4, 0.35, 0.25]])
    q = np.array([[0.6, 0.3, 0.1], [0.5, 0.2, 0.3], [0.1, 0.1, 0.8], [0.2, 0.3, 0.5]])
    assert disagreement(p, q) == 0.5
    assert disagreement(np.log(p + 1e-9), q) == 0.5  # logits give the same arg-max
    assert disagreement(np.array([0, 1, 2]), np.array([0, 1, 1])) == pytest.approx(1 / 3)
    with pytest.raises(LosslabError):
        disagreement(p, q[:2])


def test_kl_js_closed_forms():
    p = np.array([[0.5, 0.5], [1.0, 0.0]])
    q = np.array([[0.25, 0.75], [0.5, 0.5]])
    kl_rows = [0.5 * np.log(0.5 / 0.25) + 0.5 * np.log(0.5 / 0.75), np.log(1 / 0.5)]
    assert kl_divergence(p, q) == pytest.approx(np.mean(kl_rows), rel=1e-12)
    assert kl_divergence(p, p) == 0.0
    m = 0.5 * (p + q)

    def kl(a, b):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.mean(np.where(a > 0, a * np.log(a / b), 0).sum(1))

    assert js_divergence(p, q) == pytest.approx(0.5 * kl(p, m) + 0.5 * kl(q, m), rel=1e-12)
    assert js_divergence(p, q) == pytest.approx(js_divergence(q, p), rel=1e-12)
    # disjoint supports: JS = ln 2
    assert js_divergence(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])) == pytest.approx(np.log(2))
    with pytest.raises(LosslabError, match="probabilities"):
        kl_divergence(np.array([[2.0, -1.0]]), q[:1])
    M = pairwise(np.stack([p, q]), "kl")
    assert M[0, 1] == pytest.approx(kl_divergence(p, q)) and M[1, 0] == pytest.approx(kl_divergence(q, p))
    assert M[0, 0] == 0


def test_weight_cosine_and_ensemble_accuracy():
    o = {"w": torch.tensor([1.0, 1.0])}
    a = {"w": torch.tensor([2.0, 1.0])}
    b = {"w": torch.tensor([1.0, 3.0])}
    assert weight_cosine(a, b, o) == pytest.approx(0.0, abs=1e-15)
    assert weight_cosine(a, {"w": torch.tensor([3.0, 1.0])}, o) == pytest.approx(1.0)
    assert weight_cosine(a, b) == pytest.approx(5 / np.sqrt(5 * 10))
    # two members each right on a different half; their mean is right on the confident ones
    y = np.array([0, 0, 1, 1])
    m1 = np.array([[0.9, 0.1], [0.4, 0.6], [0.45, 0.55], [0.6, 0.4]])
    m2 = np.array([[0.4, 0.6], [0.9, 0.1], [0.6, 0.4], [0.1, 0.9]])
    assert ensemble_accuracy(m1[None], y) == 0.5 and ensemble_accuracy(m2[None], y) == 0.5
    assert ensemble_accuracy(np.stack([m1, m2]), y) == 0.75


def test_predictions_and_embeddings():
    torch.manual_seed(0)
    model = nn.Linear(3, 4).double()
    x = torch.randn(7, 3, dtype=torch.float64)
    pts = [P.get_point(model), P.scale(P.get_point(model), 2.0), P.scale(P.get_point(model), -1.0),
           P.scale(P.get_point(model), 0.5)]
    pr = predictions(model, x, points=pts, chunk_size=3)
    assert pr.shape == (4, 7, 4)
    torch.testing.assert_close(pr[1], torch.softmax(2 * model(x), -1).detach())
    logits = predictions(model, x, points=pts[:1], softmax=False)
    torch.testing.assert_close(logits[0], model(x).detach())
    pca = embed_predictions(pr, "pca")
    assert pca.shape == (4, 2)
    # PCA coordinates reproduce the pairwise distances within the top-2 subspace (rank <= 3 here)
    X = pr.numpy().reshape(4, -1)
    C = X - X.mean(0)
    u, s, vt = np.linalg.svd(C, full_matrices=False)
    np.testing.assert_allclose(np.abs(pca), np.abs(C @ vt[:2].T), atol=1e-12)


@pytest.mark.slow
def test_tsne_embedding_is_reproducible():
    g = torch.Generator().manual_seed(0)
    pr = torch.softmax(torch.randn(8, 10, 3, generator=g, dtype=torch.float64), -1)
    ts = embed_predictions(pr, "tsne", seed=0)
    assert ts.shape == (8, 2) and np.isfinite(ts).all()
    np.testing.assert_allclose(embed_predictions(pr, "tsne", seed=0), ts)  # fixed random_state
    with pytest.raises(LosslabError, match="perplexity"):
        embed_predictions(pr, "tsne", perplexity=8)


def test_subspace_samples_statistics():
    g = torch.Generator().manual_seed(0)
    base = {"a": torch.zeros(3, dtype=torch.float64), "b": torch.zeros(2, 2, dtype=torch.float64)}
    iters = []
    for _ in range(6):
        v = torch.randn(7, generator=g, dtype=torch.float64) * torch.tensor([1, 1, 1, 0, 0, 0, 5.0], dtype=torch.float64)
        iters.append(P.unflatten(v, base))
    A = torch.stack([P.flatten(it) for it in iters])
    var = A.var(0)
    center = P.unflatten(torch.arange(7, dtype=torch.float64), base)
    diag = torch.stack([P.flatten(s) for s in subspace_samples(center, iters, "diag", 2500, seed=1)])
    dev = diag - P.flatten(center)
    np.testing.assert_allclose(dev.var(0).numpy(), var.numpy(), rtol=0.1, atol=1e-12)
    assert torch.all(dev[:, 3:6] == 0)  # zero-variance coordinates never move
    rnd = torch.stack([P.flatten(s) for s in subspace_samples(center, iters, "random", 2500, seed=1)])
    np.testing.assert_allclose((rnd - P.flatten(center)).var(0).numpy(), np.full(7, var.mean().item()), rtol=0.1)
    pca = torch.stack([P.flatten(s) for s in subspace_samples(center, iters, "pca", 50, rank=2, seed=1)])
    d = pca - P.flatten(center)
    assert torch.linalg.matrix_rank(d).item() == 2
    _, _, vt = torch.linalg.svd(A - A.mean(0), full_matrices=False)
    resid = d - d @ vt[:2].T @ vt[:2]
    assert resid.abs().max() < 1e-10
    scaled = subspace_samples(center, iters, "diag", 3, scale=0.0, seed=1)
    assert all(torch.equal(P.flatten(s), P.flatten(center)) for s in scaled)
    with pytest.raises(LosslabError):
        subspace_samples(center, iters[:1], "diag", 2)


@pytest.mark.slow
def test_diversity_on_tiny_runs(tmp_path):
    from losslab.config import CheckpointConfig, DataConfig, ModelConfig, OptimConfig, SeedConfig, TrainConfig
    from losslab.train import train

    runs = []
    for seed in (0, 1):
        cfg = TrainConfig(data=DataConfig(dataset="digits"), model=ModelConfig(model_kwargs={"width": 32, "depth": 1}),
                          optim=OptimConfig(epochs=4, lr=0.05), seeds=SeedConfig(seed=seed),
                          ckpt=CheckpointConfig(checkpoints="epoch:1"))
        runs.append(train(cfg, out=tmp_path, progress=False))
    r = diversity(runs, seed=0, tail=3)
    assert r.disagreement.shape == (2, 2) and r.disagreement[0, 1] == r.disagreement[1, 0] > 0
    assert np.all(np.diag(r.weight_cosine) == pytest.approx(1.0))
    assert len(r.traj_step) == 10 and r.tsne.shape == (10, 2) and np.isfinite(r.pca).all()
    last = [i for i in range(10) if r.traj_step[i] == r.traj_step.max()]
    assert np.all(r.traj_disagreement[last] == 0)
    s = r.summary
    assert set(s["ensemble_accuracy"]) >= {"independent", "trajectory", "random", "diag", "pca", "single_mean"}
    assert 0 <= s["across_run_disagreement"] <= 1
    assert s["checks"]["across_run_gt_within_trajectory"] in (True, False)
    # final accuracies agree with the runs' own test error
    for acc, run in zip(r.final_accuracy, runs):
        assert acc == pytest.approx(1 - run.summary["test_error"], abs=1e-9)
    r.save(tmp_path / "div")
    back = DiversityResult.load(tmp_path / "div")
    np.testing.assert_array_equal(back.tsne, r.tsne)
    assert back.summary["ensemble_accuracy"]["trajectory"] == s["ensemble_accuracy"]["trajectory"]
    import matplotlib

    matplotlib.use("Agg")
    d = back.plot()
    assert d.savefig(tmp_path / "div.png").stat().st_size > 1000
    d.close()


@pytest.mark.parametrize("bn", ["eval", "recompute"])
def test_diversity_predicts_with_the_batchnorm_policy(tmp_path, bn):
    """On BatchNorm runs the final accuracies are those of each run's final model under ``bn``: its running
    statistics, or those recomputed on the training data at its parameters."""
    from losslab._functional import as_xy, with_recomputed_batchnorm
    from losslab.config import CheckpointConfig, DataConfig, ModelConfig, OptimConfig, SeedConfig, TrainConfig
    from losslab.probes import diversity
    from losslab.train import train

    runs = [train(TrainConfig(data=DataConfig(subsample=300), model=ModelConfig(
        model_kwargs={"width": 16, "depth": 1, "norm": "bn"}), optim=OptimConfig(epochs=2), seeds=SeedConfig(seed=s),
        ckpt=CheckpointConfig("epoch:1")), out=tmp_path, progress=False) for s in (0, 1)]
    res = diversity(runs, n_examples=60, embed=("pca",), seed=0, bn=bn)
    assert res.meta["bn"] == bn
    x, y = as_xy(runs[0].bundle(), "test")
    idx = torch.sort(torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:60]).values
    want = []
    for r in runs:
        m = r.build_model()
        m.load_state_dict(r.state_dict())
        m = with_recomputed_batchnorm(m, as_xy(r.bundle(), "train")[0]) if bn == "recompute" else m.eval()
        with torch.no_grad():
            want.append(float((m(x[idx]).argmax(1) == y[idx]).double().mean()))
    np.testing.assert_allclose(res.final_accuracy, want, atol=1e-12)
    # the probabilities themselves, and the two policies differ on this model
    from losslab.probes.function_space import _bn_points

    model = runs[0].build_model()
    got = predictions(model, x[idx], points=_bn_points(model, bn, runs[0].bundle())([runs[0].state_dict()]))[0]
    m = runs[0].build_model()
    m.load_state_dict(runs[0].state_dict())
    ev = m.eval()
    rec = with_recomputed_batchnorm(m, as_xy(runs[0].bundle(), "train")[0])
    with torch.no_grad():
        p_eval, p_rec = (torch.softmax(net(x[idx]).double(), -1) for net in (ev, rec))
    torch.testing.assert_close(got, p_rec if bn == "recompute" else p_eval, atol=1e-6, rtol=0)
    assert (p_eval - p_rec).abs().max() > 1e-4
