"""Per-step log-linear twists: ``log psi_k(x) = <w_k, x> + c_k``, and their weighted maximum-likelihood fit."""
import torch
from torch import nn


class LinearTwist(nn.Module):
    """A log-linear twist for each step ``k = 0, ..., num_steps``.

    On a Gaussian step the twisted proposal is ``N(mu + v * w_k, v)``: the family
    contains the optimal twist of a linear-Gaussian chain with a linear reward, and
    its twisted kernel is exact.

    :param int num_steps: the chain's number of transitions.
    :param tuple event_shape: shape of one state.
    :param float smoothing: bandwidth, in steps, of the Gaussian kernel that pools
        each fit's score and information over neighbouring ``k`` (0: no pooling).
    """

    def __init__(self, num_steps, event_shape, weight=None, bias=None, smoothing=0.0):
        super().__init__()
        shape = (num_steps + 1,) + tuple(event_shape)
        self.weight = nn.Parameter(torch.zeros(shape) if weight is None else torch.as_tensor(weight).clone())
        device = self.weight.device  # a bias left out joins the weight given
        self.bias = nn.Parameter(torch.zeros(num_steps + 1, device=device) if bias is None
                                 else torch.as_tensor(bias, device=device).clone())
        if self.weight.shape != shape or self.bias.shape != (num_steps + 1,):
            raise ValueError(
                f"LinearTwist: weight must have shape {shape} and bias ({num_steps + 1},); "
                f"got {tuple(self.weight.shape)} and {tuple(self.bias.shape)}"
            )
        self.event_dim = len(event_shape)
        self.smoothing = smoothing

    def log_psi(self, k, x):
        if x.shape[1:] != self.weight.shape[1:]:
            raise ValueError(f"LinearTwist was built for states of shape {tuple(self.weight.shape[1:])}, but step {k} "
                             f"has states of shape {tuple(x.shape[1:])} (after the particle dimension)")
        return (x * self.weight[k]).reshape(len(x), -1).sum(-1) + self.bias[k]

    @torch.no_grad()
    def fit(self, transitions, log_weights, log_reward):
        """Weighted maximum likelihood of the recorded paths under the twisted family.

        On a Gaussian step, the likelihood of ``x_k ~ N(mu + v * w_k, v)`` is maximised
        by ``w_k = sum_i W_i (x_i - mu_i) / sum_i W_i v_i``. Writing ``x_i - mu_i`` as the
        current shift plus the proposal's noise ``x_i - m_i``, whose mean under the
        proposal is known to be zero, the noise enters as ``sum_i (W_i - 1/N)(x_i - m_i)``:
        the unweighted mean is a control variate, and the update vanishes when the
        weights are uniform. With ``smoothing``, numerator and information
        ``sum_i W_i v_i`` are pooled over neighbouring steps by a Gaussian kernel (a
        local likelihood: steps of small variance, whose own estimate is noisy, borrow
        from their neighbours). A deterministic
        step has no proposal to fit: its ``w_k, c_k`` regress the next potential (the
        reward at ``k = 0``) on ``x_k``, by weighted least squares.

        :param transitions: ``TransitionRecord`` per step, from ``TwistedSMC(record_transitions=True)``.
        :param log_weights: ``(N,)`` log-weights of the paths (the trust-region's tempered weights).
        :param log_reward: ``(N,)`` reward of each path.
        """
        W = torch.softmax(log_weights, 0)
        N = W.shape[0]
        numerator = torch.zeros_like(self.weight)
        information = torch.zeros_like(self.weight)
        for record in transitions:
            if record.base_mean is None:
                continue
            weights = W.to(record.value.dtype).reshape((N,) + (1,) * self.event_dim)
            noise = record.value - record.proposal_mean
            numerator[record.step] = ((weights - 1.0 / N) * noise).sum(0).to(self.weight.dtype)
            information[record.step] = (weights * record.base_variance).sum(0).to(self.weight.dtype)
        fitted = (information > 0).reshape(len(information), -1).any(1)
        numerator, information = self._smooth(numerator), self._smooth(information)
        update = numerator / information.clamp(min=torch.finfo(information.dtype).tiny)
        self.weight += torch.where(fitted.reshape((-1,) + (1,) * self.event_dim), update, torch.zeros_like(update))
        for record in transitions:
            if record.base_mean is None:
                target = log_reward if record.step == 0 else self._next_potential(transitions, record.step)
                self._regress(record.step, record.value, target, W)

    def _smooth(self, per_step):
        if self.smoothing <= 0:
            return per_step
        steps = torch.arange(per_step.shape[0], dtype=per_step.dtype, device=per_step.device)
        kernel = torch.exp(-0.5 * ((steps[:, None] - steps[None, :]) / self.smoothing) ** 2)
        return torch.tensordot(kernel, per_step, dims=1)

    def _next_potential(self, transitions, k):
        following = next(r for r in transitions if r.step == k - 1)
        return self.log_psi(k - 1, following.value)

    def _regress(self, k, x, target, W):
        features = x.reshape(len(x), -1).to(torch.float64)
        design = torch.cat([features, torch.ones_like(features[:, :1])], 1)
        gram = design.T @ (W[:, None] * design)
        ridge = 1e-8 * gram.diagonal().mean() * torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
        # paths a hard constraint rules out have weight zero and target -inf: no say in the fit
        weighted_target = torch.where(W > 0, W * target.to(torch.float64), torch.zeros_like(W))
        solution = torch.linalg.solve(gram + ridge, design.T @ weighted_target)
        self.weight[k] = solution[:-1].reshape(self.weight.shape[1:]).to(self.weight.dtype)
        self.bias[k] = solution[-1].to(self.bias.dtype)
