"""Models with explicit forward and backward passes, written against an array module.

A model describes its parameters with a :class:`Layout` (names and shapes); the
parameters live in ONE contiguous float64 vector and ``layout.views(flat)``
gives the dict of named arrays as views into it. Gradients are written into a
flat vector of the same layout, so the data-parallel step can ``Allreduce`` a
single buffer without packing.

Every model's :meth:`Model.loss_grad` returns the *sum* of the per-sample
losses over a batch and writes the *sum* of the per-sample gradients: sums of
per-rank sums are exact totals, whatever the per-rank batch sizes.

Heads: binary models (``logreg``, ``mlp`` on 2 classes) output one logit and use
the logistic loss; multi-class models (``softmax``, ``mlp`` on k > 2 classes)
output k logits and use the cross-entropy of the softmax.
"""

import math

import numpy as np

from ..errors import ConfigError
from ..kernels.xp import array_module


class Layout:
    """Names, shapes and offsets of the parameters in one flat vector."""

    def __init__(self, shapes):
        self.names = [name for name, _ in shapes]
        self.shapes = {name: tuple(shape) for name, shape in shapes}
        self.offsets = {}
        pos = 0
        for name in self.names:
            self.offsets[name] = pos
            pos += math.prod(self.shapes[name])
        self.size = pos

    def views(self, flat) -> dict:
        """Named views into ``flat`` (writing into a view writes into ``flat``)."""
        out = {}
        for name in self.names:
            a = self.offsets[name]
            out[name] = flat[a:a + math.prod(self.shapes[name])].reshape(self.shapes[name])
        return out

    def flatten(self, arrays: dict, xp=np):
        """Copy a dict of named arrays into a new flat float64 vector."""
        flat = xp.empty(self.size, dtype=xp.float64)
        views = self.views(flat)
        for name in self.names:
            views[name][...] = arrays[name]
        return flat


def _sigmoid(xp, z):
    return 0.5 * (xp.tanh(0.5 * z) + 1.0)


def _binary_head(xp, z, y):
    """Logistic loss sum and d(loss)/dz of logits ``z`` (n,) for labels ``y`` in {0, 1}."""
    yf = y.astype(xp.float64)
    loss = xp.sum(xp.maximum(z, 0.0) - yf * z + xp.log1p(xp.exp(-xp.abs(z))))
    return float(loss), _sigmoid(xp, z) - yf


def _softmax_head(xp, z, y):
    """Cross-entropy sum and d(loss)/dz of logits ``z`` (n, k) for labels ``y`` in [0, k)."""
    n = z.shape[0]
    if n == 0:
        return 0.0, xp.zeros_like(z)
    zmax = z.max(axis=1, keepdims=True)
    e = xp.exp(z - zmax)
    s = e.sum(axis=1, keepdims=True)
    rows = xp.arange(n)
    loss = xp.sum(xp.log(s[:, 0]) + zmax[:, 0] - z[rows, y])
    p = e / s
    p[rows, y] -= 1.0
    return float(loss), p


class Model:
    """Base class. Subclasses build ``self.layout`` and implement ``_forward``/``_backward``."""

    name = ""

    def __init__(self, n_features: int, n_classes: int):
        if n_classes < 2:
            raise ConfigError(f"model {self.name!r} needs at least 2 classes, the labels have {n_classes}")
        self.n_features = int(n_features)
        self.n_classes = int(n_classes)
        self.binary = n_classes == 2
        self.layout = Layout(self._shapes())

    @property
    def size(self) -> int:
        return self.layout.size

    def spec(self) -> dict:
        """What rebuilds the model: ``make_model(**spec)``."""
        return {"name": self.name, "n_features": self.n_features, "n_classes": self.n_classes}

    def init(self, seed: int = 0, xp=np):
        """Initial parameters as a flat float64 vector (a NumPy or CuPy array)."""
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x1217])
        return xp.asarray(self._init(rng))

    def _init(self, rng) -> np.ndarray:
        return np.zeros(self.size)

    def logits(self, flat, x):
        """Logits: (n,) for binary models, (n, k) for multi-class ones."""
        return self._forward(self.layout.views(flat), x)[0]

    def loss_grad(self, flat, x, y, grad_out):
        """Sum of per-sample losses; writes the sum of per-sample gradients into ``grad_out``.

        Parameters
        ----------
        flat : array (P,) float64
        x : array (n, d)   (cast to float64)
        y : array (n,) of int labels in [0, n_classes)
        grad_out : array (P,) float64, overwritten

        Returns
        -------
        float
        """
        xp = array_module(flat)
        x = x.astype(xp.float64, copy=False)
        p = self.layout.views(flat)
        z, cache = self._forward(p, x)
        if self.binary:
            loss, dz = _binary_head(xp, z, y)
        else:
            loss, dz = _softmax_head(xp, z, y)
        self._backward(p, cache, dz, self.layout.views(grad_out))
        return loss

    def loss(self, flat, x, y) -> float:
        """Sum of per-sample losses (no gradient)."""
        xp = array_module(flat)
        z = self.logits(flat, x.astype(xp.float64, copy=False))
        return (_binary_head if self.binary else _softmax_head)(xp, z, y)[0]

    def scores(self, flat, x):
        """Predicted probability of class 1 (binary, (n,)) or of each class ((n, k))."""
        xp = array_module(flat)
        z = self.logits(flat, x.astype(xp.float64, copy=False))
        if self.binary:
            return _sigmoid(xp, z)
        e = xp.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)


class LogReg(Model):
    """Binary logistic regression: ``p(y=1|x) = sigmoid(x @ w + b)``. Zero initialization."""

    name = "logreg"

    def __init__(self, n_features: int, n_classes: int = 2):
        if n_classes != 2:
            raise ConfigError(f"train.model = 'logreg' is binary; the labels have {n_classes} classes "
                              "(use 'softmax' or 'mlp')")
        super().__init__(n_features, n_classes)

    def _shapes(self):
        return [("w", (self.n_features,)), ("b", (1,))]

    def _forward(self, p, x):
        return x @ p["w"] + p["b"][0], x

    def _backward(self, p, x, dz, g):
        g["w"][...] = x.T @ dz
        g["b"][...] = dz.sum()


class Softmax(Model):
    """Multinomial logistic regression: ``softmax(x @ W + b)``. Zero initialization."""

    name = "softmax"

    def __init__(self, n_features: int, n_classes: int):
        super().__init__(n_features, n_classes)
        self.binary = False  # k logits even for 2 classes

    def _shapes(self):
        return [("W", (self.n_features, self.n_classes)), ("b", (self.n_classes,))]

    def _forward(self, p, x):
        return x @ p["W"] + p["b"], x

    def _backward(self, p, x, dz, g):
        g["W"][...] = x.T @ dz
        g["b"][...] = dz.sum(axis=0)


class MLP(Model):
    """Fully connected network: hidden layers with ReLU, then a binary or softmax head.

    He-normal weights drawn from the seed, zero biases.
    """

    name = "mlp"

    def __init__(self, n_features: int, n_classes: int, hidden=(64,)):
        self.hidden = [int(h) for h in hidden]
        if any(h <= 0 for h in self.hidden):
            raise ConfigError(f"train.hidden = {list(hidden)}: every layer width must be > 0")
        super().__init__(n_features, n_classes)

    def spec(self) -> dict:
        return {**super().spec(), "hidden": list(self.hidden)}

    def _widths(self):
        out = 1 if self.n_classes == 2 else self.n_classes
        return [self.n_features] + self.hidden + [out]

    def _shapes(self):
        w = self._widths()
        shapes = []
        for k in range(len(w) - 1):
            shapes += [(f"W{k}", (w[k], w[k + 1])), (f"b{k}", (w[k + 1],))]
        return shapes

    def _init(self, rng):
        flat = np.zeros(self.size)
        views = self.layout.views(flat)
        w = self._widths()
        for k in range(len(w) - 1):
            views[f"W{k}"][...] = rng.standard_normal((w[k], w[k + 1])) * np.sqrt(2.0 / w[k])
        return flat

    def _forward(self, p, x):
        layers = len(self.hidden) + 1
        acts = [x]
        h = x
        for k in range(layers):
            z = h @ p[f"W{k}"] + p[f"b{k}"]
            if k < layers - 1:
                h = z * (z > 0)
                acts.append(h)
        if self.n_classes == 2:
            z = z[:, 0]
        return z, acts

    def _backward(self, p, acts, dz, g):
        if dz.ndim == 1:
            dz = dz[:, None]
        for k in range(len(self.hidden), -1, -1):
            h = acts[k]
            g[f"W{k}"][...] = h.T @ dz
            g[f"b{k}"][...] = dz.sum(axis=0)
            if k > 0:
                dz = (dz @ p[f"W{k}"].T) * (h > 0)


MODELS = {"logreg": LogReg, "softmax": Softmax, "mlp": MLP}


def make_model(name: str, n_features: int, n_classes: int = 2, hidden=(64,)) -> Model:
    """Build a model by name (``logreg``, ``softmax``, ``mlp``)."""
    if name not in MODELS:
        raise ConfigError(f"train.model = {name!r}: expected one of {', '.join(map(repr, MODELS))}")
    if name == "mlp":
        return MLP(n_features, n_classes, hidden)
    return MODELS[name](n_features, n_classes)
