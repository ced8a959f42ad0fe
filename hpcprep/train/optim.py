"""Optimizers on flat parameter vectors: SGD with momentum, Adam.

Both update a flat float64 parameter vector in place from a flat gradient of
the same length, so one vectorized expression updates every parameter. Their
state is also one flat vector (:meth:`state_vector`), which checkpoints store.
"""

import numpy as np

from ..errors import ConfigError
from ..kernels.xp import array_module


class SGD:
    """SGD with (heavy-ball) momentum: ``v = momentum * v + g``; ``params -= lr * v``."""

    name = "sgd"

    def __init__(self, size: int, lr: float, momentum: float = 0.0, xp=np):
        self.lr, self.momentum = float(lr), float(momentum)
        self.velocity = xp.zeros(size, dtype=xp.float64)
        self.steps = 0

    def step(self, params, grad) -> None:
        if self.momentum:
            self.velocity *= self.momentum
            self.velocity += grad
            params -= self.lr * self.velocity
        else:
            params -= self.lr * grad
        self.steps += 1

    def state_vector(self):
        xp = array_module(self.velocity)
        return xp.concatenate([self.velocity, xp.asarray([float(self.steps)])])

    def load_state_vector(self, vec) -> None:
        n = self.velocity.shape[0]
        self.velocity[...] = vec[:n]
        self.steps = int(vec[n])


class Adam:
    """Adam (Kingma & Ba) with bias correction."""

    name = "adam"

    def __init__(self, size: int, lr: float, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8, xp=np):
        self.lr, self.beta1, self.beta2, self.eps = float(lr), beta1, beta2, eps
        self.m = xp.zeros(size, dtype=xp.float64)
        self.v = xp.zeros(size, dtype=xp.float64)
        self.steps = 0

    def step(self, params, grad) -> None:
        self.steps += 1
        self.m *= self.beta1
        self.m += (1 - self.beta1) * grad
        self.v *= self.beta2
        self.v += (1 - self.beta2) * grad * grad
        xp = array_module(params)
        mhat = self.m / (1 - self.beta1 ** self.steps)
        vhat = self.v / (1 - self.beta2 ** self.steps)
        params -= self.lr * mhat / (xp.sqrt(vhat) + self.eps)

    def state_vector(self):
        xp = array_module(self.m)
        return xp.concatenate([self.m, self.v, xp.asarray([float(self.steps)])])

    def load_state_vector(self, vec) -> None:
        n = self.m.shape[0]
        self.m[...] = vec[:n]
        self.v[...] = vec[n:2 * n]
        self.steps = int(vec[2 * n])


def make_optimizer(name: str, size: int, lr: float, momentum: float = 0.9, xp=np):
    """``sgd`` (with ``momentum``) or ``adam``."""
    if name == "sgd":
        return SGD(size, lr, momentum, xp)
    if name == "adam":
        return Adam(size, lr, xp=xp)
    raise ConfigError(f"train.optimizer = {name!r}: expected one of 'sgd', 'adam'")
