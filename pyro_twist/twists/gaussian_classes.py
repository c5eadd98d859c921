"""A twist from Gaussian class models: the probability of the target class given the noisy state."""
import math

import torch
from torch import nn

from .gaussian import value_and_grad

DAMPING = (0.0, 0.125, 0.25, 0.5, 1.0)  # the shares of a fitted change that held-out paths choose from
RENYI_ORDER = 2  # the moment of the path weights that the fit minimises: the chi-square divergence plus one
RIDGE = 1.0  # nats per squared unit of bump height: what a change of guidance must gain on the fitting paths
NUM_BUMPS = 5  # guidance changes are smooth in k: sums of this many Gaussian bumps spread over the steps
LEARNING_FLOOR = 0.002  # the floor of a twist that TRITSMC learns from guidance=0 (see GaussianClassTwist)


class GaussianClassTwist(nn.Module):
    """``log psi_k(x) = log(floor + p(c | x_k))``, where ``p(c | x_k)`` is the class posterior of Gaussian class
    models pushed through the chain's noise, and proposals guided by ``gamma_k`` times its gradient.

    With Gaussian components ``x_0 | j ~ N(m_j, S_j)`` of weights ``pi_j``, each of one class (several may
    share a class), the forward process's state ``x_k = sqrt(a_k) x_0 + sqrt(1 - a_k) noise`` (``a_k``: the
    step's ``signal_variance``) has ``x_k | j ~ N(sqrt(a_k) m_j, a_k S_j + (1 - a_k) I)``, so ``p(c | x_k)``
    is the share of the components of class ``c`` in a softmax over all of them.
    For a reward ``log p(c | x_0)`` this is the value function ``E[p(c | x_0) | x_k]`` exactly when the data
    are that mixture; for real data it is a noise-conditioned classifier with no training, flat where the
    noise hides the class (as the value function is there) and sharp near the data. The ``floor`` keeps the
    twist from ruling out states the class models find unlikely but the reward does not. It also damps the
    proposals' pull by ``p / (floor + p)`` wherever ``p(c | x_k)`` is below it, which is where a path's class
    is still open and the pull is needed. For a twist that ``TRITSMC`` learns, the floor is best small: on
    the digits model (learning from ``guidance=0``, 16 iterations at N = 256, digit/seed 2/702 and 4/704)
    floors 0.05, 0.01 and 0.002 gave learning peaks of path ESS/N 0.48/0.47, 0.55/0.58 and 0.63/0.61, and
    the learned twists' ``log Z_hat`` at N = 32 spread 0.25/0.30, 0.19/0.22 and 0.13/0.22 over 8 seeds.
    Over nine more learning runs, two runs at floor 0.01 fell below the base chain's path ESS (0.033
    against 0.111, 0.062 against 0.084), none at 0.002 (a tenth, digit 8, fell to 0.037 against 0.105
    at 0.002). The price of a small floor: where the class models give a state less of the class than
    the reward gives its end, the ratio (up to ``1 / floor``) enters the path's weight, and the health
    check's Pareto k-hat can flag it. Used as it is (``guidance=1``, no learning), the full gradient
    overshoots where the floor is small: at N = 32 digit 7's ``log Z_hat`` spread 0.83 with floor 0.002
    and 0.22 with the default 0.05.

    Proposals shift the base mean by variance times the gradient of ``log psi_k`` at it (``TwistedSMC``'s
    default), scaled by ``gamma_k``: the guidance starts at ``guidance`` and :meth:`fit` learns it per step
    (so ``TRITSMC`` can start from this twist), while the twist's values, which resampling follows, stay the
    class posterior's. To learn, start at ``guidance=0``: the first learning run is then the base chain's,
    whose paths keep in view, for every later fit, the paths that guidance makes rare (see :meth:`fit`).
    A proposal is exact whatever its guidance; the values are the value function's estimate, and scaling
    them would move them away from it.

    :param signal_variance: ``signal_variance(k)``, ``a_k`` for ``k = 0, ..., num_steps`` (a
        :class:`~pyro_twist.chains.denoising.DenoisingKernel`'s method of that name).
    :param int num_steps: the chain's number of transitions.
    :param means: ``(C, D)`` component means of the flattened data. :param covariances: ``(C, D, D)``.
    :param log_weights: ``(C,)`` log component weights (normalised here).
    :param target: the class ``c``: a label, or ``target(*args, **kwargs)`` taking it from each run's arguments.
    :param float floor: added to ``p(c | x_k)`` (0: none); ``LEARNING_FLOOR`` (0.002) for a twist to learn.
    :param classes: each component's class label, in order (default ``0, ..., C - 1``: one per class).
    :param float guidance: the starting ``gamma_k`` of every step (1: the gradient proposal; 0: the base chain's).
    """

    def __init__(self, signal_variance, num_steps, means, covariances, log_weights, target, floor=0.05,
                 classes=None, guidance=1.0):
        super().__init__()
        means = torch.as_tensor(means, dtype=torch.float64)
        covariances = torch.as_tensor(covariances, dtype=torch.float64)
        log_weights = torch.as_tensor(log_weights, dtype=torch.float64)
        num_classes, dim = means.shape
        if covariances.shape != (num_classes, dim, dim) or log_weights.shape != (num_classes,):
            raise ValueError(f"GaussianClassTwist: {num_classes} component means of size {dim} need covariances of "
                             f"shape ({num_classes}, {dim}, {dim}) and log_weights of shape ({num_classes},); got "
                             f"{tuple(covariances.shape)} and {tuple(log_weights.shape)}")
        if not floor >= 0:
            raise ValueError(f"floor must be non-negative, got {floor!r}")
        self.guidance = nn.Parameter(torch.full((num_steps + 1,), float(guidance), dtype=torch.float64),
                                     requires_grad=False)
        signal = torch.tensor([signal_variance(k) for k in range(num_steps + 1)], dtype=torch.float64)
        eye = torch.eye(dim, dtype=torch.float64)
        # per step and class, the Cholesky factor of a_k S_j + (1 - a_k) I and half its log-determinant
        cholesky = torch.stack([torch.linalg.cholesky(a * covariances + (1 - a) * eye) for a in signal])
        for name, value in (("means", means), ("log_weights", torch.log_softmax(log_weights, 0)), ("signal", signal),
                            ("cholesky", cholesky),
                            ("half_log_det", torch.log(torch.diagonal(cholesky, dim1=-2, dim2=-1)).sum(-1))):
            self.register_buffer(name, value, persistent=False)  # fixed by the class models: not learning state
        self.classes = list(range(num_classes)) if classes is None else list(classes)
        if len(self.classes) != num_classes:
            raise ValueError(f"GaussianClassTwist: {len(self.classes)} class labels for {num_classes} components")
        self.target = target
        self._class = self._in_class = None  # the class of the runs, and its components as a mask
        if not callable(target):
            self._select(target)
        self.log_floor = math.log(floor) if floor > 0 else -math.inf
        self._pool = {}  # the chain's steps, the class, and each fit's paths, summarised (see fit)

    @classmethod
    def from_labelled(cls, signal_variance, num_steps, data, labels, target, floor=0.05, shrinkage=0.1,
                      components_per_class=3, seed=0, guidance=1.0):
        """Class models fitted to labelled data: each class split into ``components_per_class`` clusters by
        k-means (``seed``), each cluster a Gaussian with its mean and covariance plus ``shrinkage`` times the
        identity (a cluster has few points for its dimensions), weighted by its count. Several clusters
        follow a class's styles. ``guidance``: as in the constructor."""
        from sklearn.cluster import KMeans

        flat = torch.as_tensor(data).flatten(1).to(torch.float64)
        labels = torch.as_tensor(labels)
        classes = torch.unique(labels)
        if len(classes) < 2:
            raise ValueError("GaussianClassTwist.from_labelled needs data of at least two classes")
        eye = torch.eye(flat.shape[1], dtype=torch.float64)
        means, covariances, counts, component_classes = [], [], [], []
        for label in classes.tolist():
            points = flat[labels == label]
            if len(points) < 2 * components_per_class:
                raise ValueError(f"class {label!r} has {len(points)} points: too few for {components_per_class} "
                                 "components of at least two points each")
            clusters = KMeans(components_per_class, n_init=4, random_state=seed).fit_predict(points.numpy())
            for cluster in range(components_per_class):
                members = points[torch.as_tensor(clusters) == cluster]
                means.append(members.mean(0))
                covariances.append((torch.cov(members.T) if len(members) > 1 else 0 * eye) + shrinkage * eye)
                counts.append(float(len(members)))
                component_classes.append(label)
        return cls(signal_variance, num_steps, torch.stack(means), torch.stack(covariances),
                   torch.tensor(counts, dtype=torch.float64).log(), target, floor, component_classes, guidance)

    def _select(self, target):
        """Steer toward the class ``target``."""
        if target not in self.classes:
            raise ValueError(f"GaussianClassTwist: target class {target!r} is not one of its classes {self.classes}")
        self._class, self._in_class = target, torch.tensor([label == target for label in self.classes])

    def bind(self, *args, **kwargs):
        """Take the target class from the arguments of the run about to start."""
        if callable(self.target):
            self._select(self.target(*args, **kwargs))

    def class_log_prob(self, k, x):
        """``log p(c | x_k = x)``, one value per row of ``x``."""
        if self._in_class is None:
            raise ValueError("GaussianClassTwist takes its class from the run's arguments: call bind(*args, **kwargs)")
        rows = x.reshape(len(x), -1).to(torch.float64)
        centred = rows[None] - self.signal[k].sqrt() * self.means[:, None]  # (C, N, D)
        whitened = torch.linalg.solve_triangular(self.cholesky[k], centred.transpose(1, 2), upper=False)
        log_joint = self.log_weights - 0.5 * whitened.square().sum(1).T - self.half_log_det[k]  # (N, C)
        return torch.logsumexp(log_joint[:, self._in_class], 1) - torch.logsumexp(log_joint, 1)

    def _potential(self, k, x):
        log_prob = self.class_log_prob(k, x)
        return torch.logaddexp(log_prob, torch.full_like(log_prob, self.log_floor))

    def log_psi(self, k, x):
        if not x.requires_grad:  # a value for the weights: the guidance acts through the gradient alone
            return self._potential(k, x).to(x.dtype)
        value, grad = value_and_grad(self._potential, k, x)
        # the value of the potential with gamma_k times its gradient: what the proposal follows
        slope = (self.guidance[k] * grad.to(torch.float64) * (x - x.detach()).to(torch.float64)).flatten(1).sum(1)
        return (value + slope).to(x.dtype)

    @torch.no_grad()
    def fit(self, transitions, log_weights, log_reward):
        """Per-step guidance that minimises an estimate of the order-``RENYI_ORDER`` moment of the target's path
        weights under the guided proposal, from every path this twist has been fitted on.

        Drawn from the base mean ``mu`` plus ``v gamma_k g`` (``g``: the potential's gradient at ``mu``), a
        path's log density relative to the base chain's is ``sum_k gamma_k L_k - gamma_k^2 Q_k / 2``, with
        ``L_k = g.(x - mu)`` and ``Q_k = v |g|^2`` fixed by the path. So every path kept from earlier fits
        (with the guidance that drew it) tells the weight ``pi / q_gamma`` it would have under any guidance:
        ``E_q[(pi / q)^a]`` is estimated over all of them, each weighted by the target over the mixture of
        the proposals that drew them (multiple importance sampling), and its log is a log-sum-exp of convex
        quadratics in ``gamma``. Pooling keeps in view the paths a guided proposal rarely draws: those of
        the base chain (a twist started at ``guidance=0``) or of weaker guidance earlier, where the class
        models misjudge a path whose class shows late. Their weights are the heavy tail that makes a single
        run collapse, which the paths of the current proposal alone cannot show.

        The order is 2 (the chi-square divergence) and the ridge firm (``RIDGE``), because the first fit has
        only the base chain's paths, of which about one in ten is of the class. On the digits model the
        order-4 moment with a ridge of 0.01 let a few paths carry the estimate: the change fitted on one
        half was e^80 times worse on the other at full share (digit 7, seed 207), the held-out half kept an
        eighth of it, and the first learned twists of the four weakest seeds measured path ESS/N 0.11-0.17
        (mean of 4 runs each), near the base chain's 0.08-0.13. With order 2 and a ridge of 1 they measured
        0.31-0.35. With the floor 0.002, over 26 learning runs of 16 iterations (digits 0-5, 7 and 8, one to
        five seeds each) every run after the base chain's stayed above it but two single runs (0.041
        against the base's 0.092, 0.037 against 0.105), which the guard rejected; peaks 0.46-0.69.

        The change of guidance is a sum of a few Gaussian bumps in ``k`` (neighbouring steps face nearly the
        same noise) with a ridge on their heights; half the pooled paths fit it, the other half choose
        the share of it taken (none if no share improves their estimate). The target is the reward-tilted
        law itself (``log_reward``); the trust region's tempered ``log_weights`` are not used, the held-out
        share keeping the step where the estimate holds.
        """
        linear, quadratic, steps = [], [], []
        for record in transitions:
            if record.base_mean is None:
                continue
            k = record.step
            grad = value_and_grad(self._potential, k, record.base_mean)[1].to(torch.float64)
            offset = (record.value - record.base_mean).to(torch.float64)
            linear.append((offset * grad).flatten(1).sum(1))
            quadratic.append((record.base_variance.to(torch.float64) * grad * grad).flatten(1).sum(1))
            steps.append(k)
        if not steps:
            return
        pool = self._pool.setdefault("runs", [])
        if pool and (self._pool["steps"], self._pool["target"]) != (steps, self._class):
            raise ValueError(
                f"GaussianClassTwist.fit: these paths steer toward class {self._class!r} with Gaussian transitions "
                f"at steps {steps}, the earlier fits' toward {self._pool['target']!r} at steps {self._pool['steps']}: "
                "a twist learns its guidance for one class on one chain; build one twist per class")
        self._pool.update(steps=steps, target=self._class)
        pool.append({"linear": torch.stack(linear, 1), "quadratic": torch.stack(quadratic, 1),
                     "log_reward": log_reward.detach().to(torch.float64), "proposal": self.guidance[steps].clone()})
        linear, quadratic, log_reward = (torch.cat([run[name] for run in pool])
                                         for name in ("linear", "quadratic", "log_reward"))
        proposals = torch.stack([run["proposal"] for run in pool])
        counts = torch.tensor([len(run["log_reward"]) for run in pool], dtype=torch.float64)
        # log (base / mixture of the proposals that drew the paths), for every pooled path
        log_q = linear @ proposals.T - 0.5 * quadratic @ proposals.square().T + (counts / counts.sum()).log()
        log_base_over_mixture = -torch.logsumexp(log_q, 1)
        order = RENYI_ORDER
        current = self.guidance[steps].to(torch.float64)

        def log_moment(guidance, rows):
            log_base_over_q = -linear[rows] @ guidance + 0.5 * quadratic[rows] @ guidance.square()
            return torch.logsumexp(order * log_reward[rows] + (order - 1) * log_base_over_q
                                   + log_base_over_mixture[rows], 0)

        shuffled = torch.randperm(len(log_reward), device=log_reward.device)
        fitting, held_out = shuffled[: len(shuffled) // 2], shuffled[len(shuffled) // 2:]
        k = torch.tensor(steps, dtype=torch.float64, device=log_reward.device)
        centres = torch.linspace(0, len(self.guidance) - 1, NUM_BUMPS, dtype=torch.float64, device=k.device)
        width = (len(self.guidance) - 1) / (NUM_BUMPS - 1)
        bumps = torch.exp(-0.5 * ((k[:, None] - centres) / width) ** 2)
        coefficients = torch.zeros(NUM_BUMPS, dtype=torch.float64, device=k.device, requires_grad=True)
        optimizer = torch.optim.LBFGS([coefficients], max_iter=100, line_search_fn="strong_wolfe")

        def closure():
            optimizer.zero_grad()
            loss = log_moment(current + bumps @ coefficients, fitting) + RIDGE * coefficients.square().sum()
            loss.backward()
            return loss

        with torch.enable_grad():
            optimizer.step(closure)
        change = bumps @ coefficients.detach()
        share = min(DAMPING, key=lambda s: log_moment(current + s * change, held_out).item())
        self.guidance[steps] = (current + share * change).to(self.guidance.dtype)

    def learning_state(self):
        """The pooled paths' summaries that later fits reuse (for a checkpoint)."""
        return dict(self._pool)

    def load_learning_state(self, state):
        self._pool = dict(state)
