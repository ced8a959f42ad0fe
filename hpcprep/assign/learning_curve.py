"""The learning curve that turns a kept fraction into an accuracy loss (no cvxpy needed)."""

import numpy as np

APPROX = False   # True: cvxpy rewrites the power into SOCs, and its compile grew ~n^3 here


def accuracy_loss(f, beta: float):
    """Learning-curve loss of keeping a fraction ``f`` of a task's data.

    ``loss(f) = (f**-beta - 1) / beta`` (``-log f`` for ``beta = 0``): zero at
    ``f = 1``, convex and decreasing, so ``-loss`` is a concave accuracy. It is
    the power-law learning curve ``err(n) = a + b * n**-beta`` relative to its
    value on the whole task, in units of ``b * n_full**-beta``; measured
    exponents are 0.07-0.5 (Hestness et al., 2017, "Deep learning scaling is
    predictable, empirically"); the default is 0.3.

    Parameters
    ----------
    f : float, array or cvxpy expression
        Kept fraction(s), > 0.
    beta : float
        Exponent, >= 0.

    Returns
    -------
    float, array or cvxpy expression (convex in ``f``)
    """
    if type(f).__module__.startswith("cvxpy"):
        import cvxpy as cp
        if beta == 0:
            return -cp.log(f)
        return (cp.power(f, -beta, approx=APPROX) - 1) / beta
    f = np.asarray(f, dtype=np.float64)
    return -np.log(f) if beta == 0 else (f ** -beta - 1) / beta
