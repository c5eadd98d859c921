"""A neural twist family: ``log psi_k(x) = f_phi(x, k)``, fit by weighted maximum likelihood with gradient steps."""
import math
from collections import deque, namedtuple

import torch
from torch import nn


_FitData = namedtuple("_FitData", ["steps", "mu", "variance", "old_mean", "noise", "noise_weight", "path_weight",
                                   "num_gaussian", "weights", "final_values", "log_reward", "context", "held_out"])


def _time_features(k, num_steps, num_frequencies):
    t = k.to(torch.get_default_dtype()) / max(num_steps, 1)
    frequencies = math.pi * torch.arange(1, num_frequencies + 1, dtype=t.dtype)
    return torch.cat([t[:, None], torch.sin(t[:, None] * frequencies), torch.cos(t[:, None] * frequencies)], -1)


class NeuralTwist(nn.Module):
    """A small network of the state ``x_k`` and the step ``k``.

    Its proposals shift the base mean by variance times ``grad_x log psi_k`` at that
    mean, so it needs no gradient of the reward: the network's own gradient steers.

    :param int num_steps: the chain's number of transitions.
    :param tuple event_shape: shape of one state.
    :param int hidden: width of the hidden layers. :param int num_layers: hidden layers.
    :param optim: ``optim(parameters)`` gives the optimiser of the fit (default Adam, lr 1e-2).
    :param int num_fit_steps: optimiser steps per fit.
    :param context: optional ``context(*args, **kwargs) -> tensor of shape (context_dim,)``:
        inputs taken from the model's ``run()`` arguments (a target label, say), so that
        one learned twist serves several of them (amortised use).
    :param int context_dim: size of the context.
    :param int replay: how many of the latest fits' paths each fit trains on (1: only its own).
    """

    def __init__(self, num_steps, event_shape, hidden=32, num_layers=2, optim=None, num_fit_steps=50,
                 num_frequencies=4, context=None, context_dim=0, replay=1):
        super().__init__()
        if (context is None) != (context_dim == 0):
            raise ValueError("NeuralTwist: pass both context and context_dim, or neither")
        self.context, self.context_dim = context, context_dim
        self._context_value = None
        self._replay = deque(maxlen=replay)
        self.num_steps = num_steps
        self.event_shape = tuple(event_shape)
        self.num_frequencies = num_frequencies
        width = math.prod(self.event_shape) + 1 + 2 * num_frequencies + context_dim
        layers = []
        for _ in range(num_layers):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)
        nn.init.zeros_(layers[-1].weight)  # start at psi = 1: the base chain
        nn.init.zeros_(layers[-1].bias)
        self.optim = optim or (lambda parameters: torch.optim.Adam(parameters, lr=1e-2))
        self.num_fit_steps = num_fit_steps

    def bind(self, *args, **kwargs):
        """Take the context from the arguments of the run about to start."""
        if self.context is not None:
            value = torch.as_tensor(self.context(*args, **kwargs)).detach()
            if value.shape != (self.context_dim,):
                raise ValueError(
                    f"NeuralTwist: context gave shape {tuple(value.shape)}, expected ({self.context_dim},)"
                )
            self._context_value = value

    def _rows(self, steps, x, context):
        parts = [x.flatten(1), _time_features(steps, self.num_steps, self.num_frequencies).to(x.dtype)]
        if self.context is not None:
            if context is None:
                raise ValueError("NeuralTwist has a context but no run bound it: call bind(*args, **kwargs)")
            parts.append(context.to(x.dtype).expand(x.shape[0], self.context_dim))
        features = torch.cat(parts, -1)
        return self.net(features.to(self.net[0].weight.dtype)).squeeze(-1).to(x.dtype)

    def log_psi(self, k, x):
        return self._rows(torch.full(x.shape[:1], k), x, self._context_value)

    def fit(self, transitions, log_weights, log_reward):
        """Weighted maximum likelihood of the recorded paths, with the proposal noise as control variate.

        For a Gaussian step with base ``N(mu, v)``, old proposal mean ``m`` and new
        mean ``m_phi = mu + v grad log psi_phi(k, mu)``, the weighted log-likelihood is,
        up to a constant, ``sum_i W_i [(x_i - m_i) d_i / v_i - d_i^2 / (2 v_i)]`` with
        ``d = m_phi - m``. The noise ``x_i - m_i`` has mean zero under the proposal, so its
        term takes ``W_i - 1/N`` in place of ``W_i``. A deterministic last step has no
        proposal: there ``log psi_0`` regresses the reward by weighted least squares.
        The objective sums over the last ``replay`` fits' paths, each with its own
        weights and context (several run arguments train one amortised twist).

        A flexible family can follow each path's own noise (with few particles in many
        dimensions it does), so an eighth of the paths is held out: the fit keeps the
        parameters, the starting ones included, with the best held-out likelihood.
        """
        self._replay.append(self._fit_data(transitions, log_weights, log_reward))
        optimizer = self.optim(self.parameters())
        best_loss, best_state = math.inf, None
        for step in range(self.num_fit_steps + 1):
            losses = [self._per_path_loss(data) for data in self._replay]
            held_out = sum(loss[data.held_out].sum() for loss, data in zip(losses, self._replay)).item()
            if held_out < best_loss:
                best_loss, best_state = held_out, {k: v.detach().clone() for k, v in self.state_dict().items()}
            if step == self.num_fit_steps:
                break
            optimizer.zero_grad()
            sum(loss[~data.held_out].sum() for loss, data in zip(losses, self._replay)).backward()
            optimizer.step()
        self.load_state_dict(best_state)

    def _fit_data(self, transitions, log_weights, log_reward):
        W = torch.softmax(log_weights, 0).to(torch.get_default_dtype())
        N = W.shape[0]
        gaussian = [r for r in transitions if r.base_mean is not None]
        deterministic = [r for r in transitions if r.base_mean is None]
        if any(r.step != 0 for r in deterministic):
            raise ValueError("NeuralTwist fits deterministic steps only at k = 0 (the last step)")
        dims = (slice(None),) + (None,) * len(self.event_shape)
        stack = lambda field: torch.cat([getattr(r, field) for r in gaussian]).detach().to(W.dtype)  # noqa: E731
        mu, old_mean = stack("base_mean"), stack("proposal_mean")
        return _FitData(
            steps=torch.cat([torch.full((N,), r.step) for r in gaussian]),
            mu=mu, variance=stack("base_variance"), old_mean=old_mean, noise=stack("value") - old_mean,
            noise_weight=(W - 1.0 / N).repeat(len(gaussian))[dims], path_weight=W.repeat(len(gaussian))[dims],
            num_gaussian=len(gaussian), weights=W,
            final_values=[r.value.detach().to(W.dtype) for r in deterministic],
            log_reward=log_reward.to(W.dtype), context=self._context_value,
            held_out=torch.randperm(N) < max(1, N // 8),
        )

    def _per_path_loss(self, data):
        """The negative weighted log-likelihood of each path, shape ``(N,)``."""
        mu = data.mu.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(self._rows(data.steps, mu, data.context).sum(), mu, create_graph=True)
        d = data.mu + data.variance * grad - data.old_mean
        log_lik = data.noise_weight * data.noise * d / data.variance - data.path_weight * d**2 / (2 * data.variance)
        N = data.weights.shape[0]
        loss = -log_lik.reshape(data.num_gaussian, N, -1).sum((0, 2)) / data.num_gaussian
        for x0 in data.final_values:
            residual = self._rows(torch.zeros(x0.shape[0], dtype=torch.long), x0, data.context) - data.log_reward
            residual = residual - (data.weights * residual).sum()
            loss = loss + data.weights * residual**2
        return loss
