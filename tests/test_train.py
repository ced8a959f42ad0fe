"""hpcprep.train in one process: gradients, optimizers, metrics, balance, config, learning."""

import numpy as np
import pytest
from mpi4py import MPI

from hpcprep.errors import ConfigError
from hpcprep.train import checkpoint
from hpcprep.partition import proportional_counts
from hpcprep.train.balance import Balancer
from hpcprep.train.emulate import parse_slowdown
from hpcprep.train.cli import load_config, parse_set
from hpcprep.train.metrics import binary_auc
from hpcprep.train.models import Layout, make_model
from hpcprep.train.optim import Adam, SGD
from hpcprep.train.parallel import DataParallel
from hpcprep.train.synth import linear_problem, make_linear_dataset
from hpcprep.train.spec import validate_config
from hpcprep.train.trainer import train

MODELS = [("logreg", 2, ()), ("softmax", 2, ()), ("softmax", 4, ()), ("mlp", 2, (5, 4)), ("mlp", 3, (6,))]


def problem(n=40, d=5, classes=2, seed=0):
    x, y = linear_problem(n, d, seed=seed, classes=classes)
    return x.astype(np.float64), y


# ------------------------------------------------------------------ models
@pytest.mark.parametrize("name,classes,hidden", MODELS)
def test_gradient_matches_finite_differences(name, classes, hidden):
    x, y = problem(classes=classes)
    model = make_model(name, x.shape[1], classes, hidden)
    rng = np.random.default_rng(1)
    params = model.init(3) + 0.3 * rng.standard_normal(model.size)
    grad = np.empty(model.size)
    loss = model.loss_grad(params, x, y, grad)
    assert np.isclose(loss, model.loss(params, x, y), rtol=1e-13)
    h = 1e-6
    fd = np.empty(model.size)
    for k in range(model.size):
        e = np.zeros(model.size)
        e[k] = h
        fd[k] = (model.loss(params + e, x, y) - model.loss(params - e, x, y)) / (2 * h)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-6 * np.abs(fd).max())


def test_logreg_against_closed_form():
    x, y = problem()
    model = make_model("logreg", x.shape[1])
    rng = np.random.default_rng(2)
    params = rng.standard_normal(model.size)
    w, b = params[:-1], params[-1]
    z = x @ w + b
    p = 1 / (1 + np.exp(-z))
    grad = np.empty(model.size)
    loss = model.loss_grad(params, x, y, grad)
    assert np.isclose(loss, -np.sum(y * np.log(p) + (1 - y) * np.log(1 - p)), rtol=1e-12)
    np.testing.assert_allclose(grad, np.r_[x.T @ (p - y), np.sum(p - y)], rtol=1e-12)


def test_empty_batch_gives_zero_gradient_sum():
    model = make_model("mlp", 3, 2, (4,))
    grad = np.full(model.size, 7.0)
    assert model.loss_grad(model.init(0), np.empty((0, 3)), np.empty(0, np.int64), grad) == 0.0
    assert not grad.any()


def test_layout_views_share_one_buffer():
    model = make_model("mlp", 3, 4, (5, 2))
    flat = model.init(0)
    views = model.layout.views(flat)
    assert list(views) == ["W0", "b0", "W1", "b1", "W2", "b2"]
    assert views["W1"].shape == (5, 2) and views["b2"].shape == (4,)
    views["b1"][:] = 9.0
    assert (flat[model.layout.offsets["b1"]:model.layout.offsets["W2"]] == 9.0).all()
    np.testing.assert_array_equal(model.layout.flatten(views), flat)
    assert Layout([("a", (2, 3)), ("b", ())]).size == 7


def test_model_config_errors():
    with pytest.raises(ConfigError, match="logreg.*binary"):
        make_model("logreg", 3, 3)
    with pytest.raises(ConfigError, match="train.model = 'svm'"):
        make_model("svm", 3)
    with pytest.raises(ConfigError, match="at least 2 classes"):
        make_model("softmax", 3, 1)


# ------------------------------------------------------------------ optimizers
def test_sgd_momentum_and_adam_follow_their_formulas():
    g1, g2 = np.array([1.0, -2.0]), np.array([0.5, 0.5])
    p = np.zeros(2)
    opt = SGD(2, lr=0.1, momentum=0.9)
    opt.step(p, g1)
    opt.step(p, g2)
    np.testing.assert_allclose(p, -0.1 * g1 - 0.1 * (0.9 * g1 + g2))
    p = np.zeros(2)
    opt = Adam(2, lr=0.01)
    opt.step(p, g1)
    np.testing.assert_allclose(p, -0.01 * np.sign(g1), rtol=1e-6)   # first Adam step is lr*sign
    state = opt.state_vector()
    other = Adam(2, lr=0.01)
    other.load_state_vector(state)
    q = p.copy()
    opt.step(p, g2)
    other.step(q, g2)
    np.testing.assert_array_equal(p, q)


# ------------------------------------------------------------------ metrics
def test_auc_is_exact_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = np.round(rng.standard_normal(500) + y, 1)          # many ties
    assert binary_auc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-14)
    assert binary_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    assert np.isnan(binary_auc([0.1, 0.2], [1, 1]))


# ------------------------------------------------------------------ balance
def test_split_sizes():
    assert proportional_counts(10, [1, 1, 1]).tolist() == [4, 3, 3]
    assert proportional_counts(7, [1, 0, 3]).tolist() == [2, 0, 5]
    assert proportional_counts(0, [1, 2]).tolist() == [0, 0]
    for total in range(0, 40):
        assert sum(proportional_counts(total, [0.3, 2.2, 1.5, 0.0]).tolist()) == total


def test_balancer_equal_and_shares():
    bal = Balancer(MPI.COMM_SELF, 10, "equal")
    assert bal.sizes == [10] and bal.block(3) == [3]
    assert bal.after_step(20) is None


def test_parse_slowdown():
    assert parse_slowdown({"1": 2}) == {1: 2.0}
    with pytest.raises(ConfigError, match="emulate_slowdown.x"):
        parse_slowdown({"x": 2.0})
    with pytest.raises(ConfigError, match="expected a number >= 1"):
        parse_slowdown({"0": 0.5})
    with pytest.raises(ConfigError, match="no rank 3"):
        parse_slowdown({"3": 2.0}, size=2)


# ------------------------------------------------------------------ config
def test_config_unknown_key_and_values(tmp_path):
    with pytest.raises(ConfigError, match="unknown key train.learning_rate"):
        validate_config({"learning_rate": 0.1})
    with pytest.raises(ConfigError, match="train.balance = 'fast'"):
        validate_config({"balance": "fast"})
    with pytest.raises(ConfigError, match="train.hidden"):
        validate_config({"hidden": [3, 0]})
    with pytest.raises(ConfigError, match="train.emulate_slowdown"):
        validate_config({"emulate_slowdown": {"1": 0.2}})
    cfg = tmp_path / "c.toml"
    cfg.write_text('[train]\nmodel = "mlp"\nhidden = [8, 4]\nlr = 1\n[sample]\nmode = "x"\n')
    got = load_config(cfg, ["train.epochs=3", "emulate_slowdown={1=2.0}", "val=none"])
    assert (got["model"], got["hidden"], got["lr"], got["epochs"]) == ("mlp", [8, 4], 1.0, 3)
    assert got["emulate_slowdown"] == {"1": 2.0} and got["val"] == "none"
    assert parse_set("train.device=cpu") == ("device", "cpu")
    with pytest.raises(ConfigError, match="only takes train"):
        parse_set("sample.mode=x")
    with pytest.raises(ConfigError, match="unknown key train.bogus"):
        load_config(None, ["bogus=1"])


# ------------------------------------------------------------------ data-parallel step on one rank
def test_step_on_one_rank_is_the_mean_gradient():
    x, y = problem()
    model = make_model("logreg", x.shape[1])
    params = np.random.default_rng(0).standard_normal(model.size)
    dp = DataParallel(MPI.COMM_SELF, model)
    res = dp.step(params, x, y)
    grad = np.empty(model.size)
    loss = model.loss_grad(params, x, y, grad)
    np.testing.assert_allclose(res.grad, grad / len(y), rtol=1e-15)
    assert res.total == len(y) and res.loss_sum == pytest.approx(loss)
    assert dp.step(params, x[:0], y[:0]).grad is None


# ------------------------------------------------------------------ learning
@pytest.fixture(scope="module")
def learn_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("learn") / "ds"
    make_linear_dataset(path, n=3000, d=10, seed=7, val_fraction=0.3, shards=3)
    return path


def _sk_reference(path):
    from sklearn.linear_model import LogisticRegression

    from hpcprep.loader import open_dataset

    with open_dataset(path, split="train") as tr, open_dataset(path, split="val") as va:
        xt, yt = tr.load(dtype=np.float64)
        xv, yv = va.load(dtype=np.float64)
    clf = LogisticRegression(C=1e4, max_iter=2000).fit(xt, yt)
    return clf.score(xv, yv)


def test_logreg_matches_sklearn_and_mlp_matches_logreg(learn_data, tmp_path):
    sk = _sk_reference(learn_data)
    base = {"epochs": 8, "batch_size": 64, "seed": 1, "device": "cpu"}
    lr = train(learn_data, {**base, "model": "logreg", "lr": 0.05}, MPI.COMM_SELF, out=tmp_path / "lr",
               stream=None)
    mlp = train(learn_data, {**base, "model": "mlp", "hidden": [16], "optimizer": "adam", "lr": 0.003},
                MPI.COMM_SELF, stream=None)
    acc_lr = lr["history"][-1]["val_accuracy"]
    acc_mlp = mlp["history"][-1]["val_accuracy"]
    assert abs(acc_lr - sk) <= 0.01, (acc_lr, sk)
    # the signal is linear, so logreg is the right model: the mlp must match it (same 1 point)
    assert acc_mlp >= acc_lr - 0.01, (acc_mlp, acc_lr)
    assert lr["history"][-1]["val_auc"] > 0.85
    assert [r["epoch"] for r in lr["history"]] == list(range(1, 9))
    log = (tmp_path / "lr/train_log.jsonl").read_text().splitlines()
    assert len(log) == 8
    np.testing.assert_array_equal(checkpoint.load_params(tmp_path / "lr/model.h5"), lr["params"])


def test_softmax_learns_multiclass(tmp_path):
    path = make_linear_dataset(tmp_path / "ds", n=1500, d=6, seed=3, classes=3)
    res = train(path, {"model": "softmax", "epochs": 5, "batch_size": 50, "lr": 0.2, "device": "cpu"},
                MPI.COMM_SELF, stream=None)
    last = res["history"][-1]
    assert last["val_auc"] is None and last["val_accuracy"] > 0.6   # chance is 1/3
