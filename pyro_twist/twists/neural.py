"""A neural twist family: ``log psi_k(x) = f_phi(x, k)`` (plus ``alpha_k`` times a look-ahead reward),
fit by weighted maximum likelihood with gradient steps."""
import math
from collections import deque, namedtuple

import torch
from torch import nn

from ..chains.row_cache import match_rows
from .gaussian import value_and_grad

_FitData = namedtuple("_FitData", ["anchor_steps", "anchor", "anchor_lookahead_grad", "mu", "variance", "old_mean",
                                   "noise", "noise_weight", "path_weight", "num_gaussian", "weights", "final_values",
                                   "final_lookahead", "log_reward", "context", "held_out", "state_steps", "states",
                                   "log_future_weight", "state_lookahead"])
_Lookahead = namedtuple("_Lookahead", ["x", "value", "grad"])


def _time_features(num_steps, num_frequencies):
    """Each step's input features, ``(num_steps + 1, 1 + 2 * num_frequencies)``: computed once, indexed per call."""
    t = torch.arange(num_steps + 1, dtype=torch.get_default_dtype()) / max(num_steps, 1)
    frequencies = math.pi * torch.arange(1, num_frequencies + 1, dtype=t.dtype, device=t.device)
    return torch.cat([t[:, None], torch.sin(t[:, None] * frequencies), torch.cos(t[:, None] * frequencies)], -1)


def _tempering(log_weights, log_path_weight):
    """The exponent ``tau`` with ``log_weights = tau * log_path_weight + c`` (the trust region's tempering),
    by least squares over the paths where both are finite; 1 where the path weights do not vary."""
    finite = torch.isfinite(log_weights) & torch.isfinite(log_path_weight)
    if finite.sum() < 2:
        return 1.0
    a, b = log_weights[finite], log_path_weight[finite]
    a, b = a - a.mean(), b - b.mean()
    spread = (b * b).sum()
    if spread <= 1e-12:
        return 1.0
    return float(((a * b).sum() / spread).clamp(0.0, 1.0))


class NeuralTwist(nn.Module):
    """A small network of the state ``x_k`` and the step ``k``, optionally over a look-ahead reward.

    Without look-ahead, ``log psi_k(x) = f_phi(x, k)`` and proposals shift the base mean
    by variance times ``grad_x log psi_k`` at that mean, so it needs no gradient of the
    reward: the network's own gradient steers.

    With ``lookahead=True``, ``log psi_k(x) = alpha_k r_k(x) + f_phi(x, k)``, where
    ``r_k(x)`` is the model's reward at the denoiser's ``predict_x0(k, x)`` (set by the
    sampler through ``set_lookahead``) and ``alpha_k`` is learned, starting at 1 with
    ``f_phi = 0``: the Twisted Diffusion Sampler's twist, which learning then corrects.
    Proposals shift the mean by variance times ``grad log psi_k`` at the current state
    (``"gradient_at_state"``), where one denoiser call serves the look-ahead and the
    next transition. Where the reward has a gradient, ``grad r_k`` (one backward pass
    through the denoiser per step) steers too; a black-box reward enters the weights only.

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
    :param bool lookahead: add the learned multiple of the look-ahead reward (above).
    :param float value_weight: weight of the value fit (see ``_value_loss``): ``log psi_k`` regresses
        the weight each path carries from ``x_k`` on, at every step (0: no value fit).
    :param bool shrink_inputs: scale each step's input by the linear denoiser's coefficient, measured
        on the first fit's paths, so that the network is flat where the noise hides ``x_0``.
    :param float lookahead_start: the look-ahead scale ``alpha_k`` learning starts from (1: the
        Twisted Diffusion Sampler's twist; 0: the base chain, with the look-ahead reward an input the
        value fit learns to weigh per step).
    :param float likelihood_weight: weight of the proposal-noise likelihood in the fit (0: the
        value fit alone, which spares the fit its second-order gradients).
    :param bool network: with ``False`` (needs ``lookahead=True``), ``f_phi = 0``: the family is the
        per-step look-ahead scale alone, ``log psi_k = alpha_k r_k`` (51 parameters on 50 steps).
    :param bool temper_value: the value fit follows the trust-region step: with ``tau`` the tempering of
        the path weights it is given (read off ``log_weights`` against the paths' own log-weights), each
        path's target at step ``k`` is ``tau`` times its log future weight plus ``1 - tau`` times the
        current ``log psi_k``, so a fit moves the twist a ``tau`` share of the way (``False``: all the way).
    :param bool proposal_scale: proposals shift by ``beta_k`` times the look-ahead gradient, ``beta_k``
        a separate per-step parameter (fit by the proposal-noise likelihood) from the value's ``alpha_k``.

    On the digits model (N = 256, 16 iterations), ``lookahead=True, lookahead_start=0,
    value_weight=1, likelihood_weight=0, shrink_inputs=True`` raised the path ESS/N from the
    base's 0.09 to 0.35 for the digit 3; the defaults, which keep the earlier behaviour, stay near 0.1.
    """

    def __init__(self, num_steps, event_shape, hidden=32, num_layers=2, optim=None, num_fit_steps=100,
                 num_frequencies=4, context=None, context_dim=0, replay=2, lookahead=False, value_weight=0.0,
                 shrink_inputs=False, lookahead_start=1.0, likelihood_weight=1.0, network=True,
                 temper_value=False, proposal_scale=False):
        super().__init__()
        if not network and not lookahead:
            raise ValueError("NeuralTwist(network=False) is the look-ahead scale alone: pass lookahead=True too")
        self.temper_value = temper_value
        self.likelihood_weight = likelihood_weight
        self.value_weight = value_weight
        self.shrink_inputs = shrink_inputs
        # per step, the least-squares coefficient of x_0 on x_k (1 until the first fit measures it)
        self.register_buffer("shrinkage", torch.ones(num_steps + 1))
        self._shrinkage_measured = False
        self.lookahead = bool(lookahead)
        self.proposal = "gradient_at_state" if self.lookahead else "gradient"
        if self.lookahead:
            self.lookahead_scale = nn.Parameter(torch.full((num_steps + 1,), float(lookahead_start)))
        # the look-ahead gradient's own scale in the proposals (None: alpha_k, as in log psi_k)
        self.proposal_scale = (nn.Parameter(torch.full((num_steps + 1,), float(lookahead_start)))
                               if self.lookahead and proposal_scale else None)
        self._lookahead_reward, self._lookahead_batch_size = None, None
        self._lookahead_log = {}
        if (context is None) != (context_dim == 0):
            raise ValueError("NeuralTwist: pass both context and context_dim, or neither")
        self.context, self.context_dim = context, context_dim
        self._context_value = None
        self._replay = deque(maxlen=replay)
        self.num_steps = num_steps
        self.event_shape = tuple(event_shape)
        self.num_frequencies = num_frequencies
        self.register_buffer("time_features", _time_features(num_steps, num_frequencies), persistent=False)
        width = math.prod(self.event_shape) + 1 + 2 * num_frequencies + context_dim
        layers = []
        for _ in range(num_layers):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers) if network else None
        nn.init.zeros_(layers[-1].weight)  # start at psi = 1: the base chain
        nn.init.zeros_(layers[-1].bias)
        self.optim = optim or (lambda parameters: torch.optim.Adam(parameters, lr=1e-2))
        self.num_fit_steps = num_fit_steps

    def bind(self, *args, **kwargs):
        """Take the context from the arguments of the run about to start."""
        if self.context is not None:
            value = torch.as_tensor(self.context(*args, **kwargs), device=self.shrinkage.device).detach()
            if value.shape != (self.context_dim,):
                raise ValueError(
                    f"NeuralTwist: context gave shape {tuple(value.shape)}, expected ({self.context_dim},)"
                )
            self._context_value = value

    def set_lookahead(self, lookahead_reward, batch_size=None):
        """``lookahead_reward(k, x)``: the reward at the denoiser's estimate of ``x_0`` from ``x_k``, one value
        per row; its gradient is taken on at most ``batch_size`` rows at a time (``None``: all)."""
        self._lookahead_reward = lookahead_reward
        self._lookahead_batch_size = batch_size
        self._lookahead_log = {}

    def _lookahead_at(self, k, x):
        """The look-ahead reward at ``x`` and its gradient (zero for a black-box reward), logged for the fit."""
        if self._lookahead_reward is None:
            raise ValueError("NeuralTwist(lookahead=True) has no look-ahead reward: run it through TwistedSMC or "
                             "TRITSMC, which set it from the model, or call set_lookahead(fn)")
        value, grad = value_and_grad(self._lookahead_reward, k, x, self._lookahead_batch_size)
        self._lookahead_log[k] = _Lookahead(x.detach(), value, grad)
        return value.to(x.dtype), grad.to(x.dtype)

    def _logged_lookahead(self, k, x):
        entry = self._lookahead_log.get(k)
        index = None if entry is None else match_rows(x.detach(), entry.x)
        if index is None:
            raise ValueError(f"NeuralTwist(lookahead=True) fits paths drawn with its own look-ahead, but the states "
                             f"at step {k} were not: fit it on transitions recorded by a run with this twist")
        return entry.value[index], entry.grad[index]

    def _rows(self, steps, x, context):
        if x.shape[1:] != self.event_shape:
            raise ValueError(f"NeuralTwist was built for states of shape {self.event_shape}, but got states of shape "
                             f"{tuple(x.shape[1:])} (after the particle dimension)")
        if self.net is None:  # no network: zero, with a graph to the state for the proposal's gradient
            return x.reshape(len(x), -1).sum(-1) * 0.0
        scale = self.shrinkage[steps].to(x.dtype)[:, None] if self.shrink_inputs else 1.0
        parts = [scale * x.reshape(len(x), -1), self.time_features[steps].to(x.dtype)]
        if self.context is not None:
            if context is None:
                raise ValueError("NeuralTwist has a context but no run bound it: call bind(*args, **kwargs)")
            parts.append(context.to(x.dtype).expand(x.shape[0], self.context_dim))
        features = torch.cat(parts, -1)
        return self.net(features.to(self.net[0].weight.dtype)).squeeze(-1).to(x.dtype)

    def log_psi(self, k, x):
        log_psi = self._rows(torch.full(x.shape[:1], k, device=x.device), x, self._context_value)
        if self.lookahead:
            value, grad = self._lookahead_at(k, x)
            # value and first derivative of alpha_k r_k at x, without a graph through the denoiser
            slope = (grad * (x - x.detach())).reshape(len(x), -1).sum(-1)
            alpha = self.lookahead_scale[k].to(x.dtype)
            beta = alpha if self.proposal_scale is None else self.proposal_scale[k].to(x.dtype)
            log_psi = log_psi + alpha * value + beta * slope
        return log_psi

    def fit(self, transitions, log_weights, log_reward):
        """Weighted maximum likelihood of the recorded paths, with the proposal noise as control variate.

        For a Gaussian step with base ``N(mu, v)``, old proposal mean ``m`` and new
        mean ``m_phi = mu + v grad log psi_phi`` (at ``mu``, or with look-ahead at the
        state the step starts from), the weighted log-likelihood is,
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
        if self.shrink_inputs and not self._shrinkage_measured:
            self._measure_shrinkage(transitions)
        self._replay.append(self._fit_data(transitions, log_weights, log_reward))
        optimizer = self.optim(self.parameters())
        best_loss, best_state = math.inf, None
        for step in range(self.num_fit_steps + 1):
            losses = [self._per_path_loss(data) for data in self._replay]
            held_out = sum(loss[data.held_out].sum() for loss, data in zip(losses, self._replay)).item()
            if math.isnan(held_out):
                raise ValueError(f"NeuralTwist.fit: the loss is NaN after {step} of {self.num_fit_steps} steps: "
                                 "check that the recorded paths' states and rewards are finite, or lower the "
                                 "optimiser's learning rate")
            if held_out < best_loss:
                best_loss, best_state = held_out, {k: v.detach().clone() for k, v in self.state_dict().items()}
            if step == self.num_fit_steps:
                break
            optimizer.zero_grad()
            sum(loss[~data.held_out].sum() for loss, data in zip(losses, self._replay)).backward()
            optimizer.step()
        self.load_state_dict(best_state)

    def learning_state(self):
        """What learning needs beyond the parameters: the replayed fits' paths and whether the input
        shrinkage is measured (for a checkpoint; each fit creates its optimiser afresh, so it has no
        state to keep)."""
        return {"replay": [data._asdict() for data in self._replay], "shrinkage_measured": self._shrinkage_measured}

    def load_learning_state(self, state):
        self._replay.clear()
        self._replay.extend(_FitData(**data) for data in state["replay"])
        self._shrinkage_measured = state["shrinkage_measured"]

    def _measure_shrinkage(self, transitions):
        """Scale each step's input by the linear denoiser's coefficient ``cov(x_0, x_k) / var(x_k)``,
        pooled over dimensions and measured once, on the first fit's paths. At high noise ``x_k``
        says little of ``x_0`` and the coefficient is near 0, so the network's values and gradients
        start as flat there as the optimal twist is; near ``k = 0`` it is near 1."""
        x0 = transitions[-1].value.detach().reshape(len(transitions[-1].value), -1).to(self.shrinkage.dtype)
        x0 = x0 - x0.mean(0)
        for r in transitions:
            x = r.value.detach().reshape(len(r.value), -1).to(x0.dtype)
            x = x - x.mean(0)
            self.shrinkage[r.step] = (x * x0).sum() / (x * x).sum().clamp(min=1e-12)
        self._shrinkage_measured = True

    def _fit_data(self, transitions, log_weights, log_reward):
        W = torch.softmax(log_weights, 0).to(torch.get_default_dtype())
        N = W.shape[0]
        gaussian = [r for r in transitions if r.base_mean is not None]
        deterministic = [r for r in transitions if r.base_mean is None]
        if any(r.step != 0 for r in deterministic):
            raise ValueError("NeuralTwist fits deterministic steps only at k = 0 (the last step)")
        if self.lookahead:  # the first state is drawn from the prior, untwisted
            gaussian = [r for r in gaussian if r.state is not None]
        stack = lambda field: torch.cat([getattr(r, field) for r in gaussian]).detach().to(W.dtype)  # noqa: E731
        mu, old_mean = stack("base_mean"), stack("proposal_mean")
        steps = torch.cat([torch.full((N,), r.step, device=W.device) for r in gaussian])
        anchor_steps, anchor, anchor_lookahead_grad = steps, mu, None
        final_lookahead = None
        state_steps = torch.cat([torch.full((N,), r.step, device=W.device) for r in gaussian])
        states = stack("value")
        state_lookahead = None if not self.lookahead else torch.cat(
            [self._logged_lookahead(r.step, r.value)[0] for r in gaussian]).to(W.dtype)
        log_future_weight = None
        if self.value_weight:
            log_future_weight, log_path_weight = self._log_future_weight(transitions, gaussian, log_reward.to(W.dtype))
            if self.temper_value:
                with torch.no_grad():
                    log_psi = self._rows(state_steps, states, self._context_value)
                    if state_lookahead is not None:
                        log_psi = log_psi + self.lookahead_scale[state_steps].to(W.dtype) * state_lookahead
                tau = self.last_tau = _tempering(log_weights.to(W.dtype), log_path_weight)
                log_future_weight = torch.where(
                    torch.isfinite(log_future_weight),
                    tau * log_future_weight + (1 - tau) * log_psi.reshape(len(gaussian), N), log_future_weight)
        if self.lookahead:
            anchor_steps, anchor = steps + 1, stack("state")
            anchor_lookahead_grad = torch.cat(
                [self._logged_lookahead(r.step + 1, r.state)[1] for r in gaussian]).to(W.dtype)
            final_lookahead = [self._logged_lookahead(0, r.value)[0].to(W.dtype) for r in deterministic]
        return _FitData(
            anchor_steps=anchor_steps, anchor=anchor,
            anchor_lookahead_grad=anchor_lookahead_grad,
            mu=mu, variance=stack("base_variance"), old_mean=old_mean, noise=stack("value") - old_mean,
            noise_weight=self._per_row((W - 1.0 / N).repeat(len(gaussian))),
            path_weight=self._per_row(W.repeat(len(gaussian))),
            num_gaussian=len(gaussian), weights=W,
            final_values=[r.value.detach().to(W.dtype) for r in deterministic], final_lookahead=final_lookahead,
            log_reward=log_reward.to(W.dtype), context=self._context_value,
            held_out=torch.randperm(N, device=W.device) < max(1, N // 8),
            state_steps=state_steps,
            states=states,
            log_future_weight=log_future_weight,
            state_lookahead=state_lookahead,
        )

    def _log_future_weight(self, transitions, gaussian, log_reward):
        """``log(rho_k exp(reward))`` of each path at each Gaussian step, shape ``(steps, N)``: the reward
        plus the log ratio of base to proposal densities of the transitions after step ``k``."""
        def log_density(mean, variance, x):
            return torch.distributions.Normal(mean, variance.sqrt()).log_prob(x).reshape(len(x), -1).sum(-1)

        log_ratio = {id(r): (log_density(r.base_mean, r.base_variance, r.value)
                             - log_density(r.proposal_mean, r.proposal_variance, r.value)).to(log_reward.dtype)
                     for r in transitions if r.base_mean is not None}
        later = torch.zeros_like(log_reward)
        future = {}
        for r in reversed(transitions):
            future[id(r)] = log_reward + later
            later = later + log_ratio.get(id(r), 0.0)
        return torch.stack([future[id(r)] for r in gaussian]), log_reward + later

    def _per_row(self, values):
        """One value per row, broadcast over the state's dimensions."""
        return values[(slice(None),) + (None,) * len(self.event_shape)]

    def _per_path_loss(self, data):
        """The negative weighted log-likelihood of each path, shape ``(N,)``, plus the value fit."""
        loss = torch.zeros_like(data.weights)
        if self.likelihood_weight:
            loss = loss - self.likelihood_weight * self._proposal_log_likelihood(data)
        for i, x0 in enumerate(data.final_values):
            log_psi = self._rows(torch.zeros(x0.shape[0], dtype=torch.long, device=x0.device), x0, data.context)
            if data.final_lookahead is not None:
                log_psi = log_psi + self.lookahead_scale[0].to(x0.dtype) * data.final_lookahead[i]
            # paths a hard constraint rules out have weight zero and reward -inf: no regression target
            residual = torch.where(data.weights > 0, log_psi - data.log_reward, torch.zeros_like(log_psi))
            residual = residual - (data.weights * residual).sum()
            loss = loss + data.weights * residual**2
        if self.value_weight:
            loss = loss + self.value_weight * self._value_loss(data)
        return loss

    def _proposal_log_likelihood(self, data):
        """The weighted log-likelihood of each path's proposal noise under the twist's proposals, shape ``(N,)``."""
        anchor = data.anchor.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(self._rows(data.anchor_steps, anchor, data.context).sum(), anchor,
                                      create_graph=True)
        if data.anchor_lookahead_grad is not None:
            scales = self.lookahead_scale if self.proposal_scale is None else self.proposal_scale
            scale = self._per_row(scales[data.anchor_steps]).to(grad.dtype)
            grad = grad + scale * data.anchor_lookahead_grad
        d = data.mu + data.variance * grad - data.old_mean
        log_lik = data.noise_weight * data.noise * d / data.variance - data.path_weight * d**2 / (2 * data.variance)
        return log_lik.reshape(data.num_gaussian, len(data.weights), -1).sum((0, 2)) / data.num_gaussian

    def _value_loss(self, data):
        """Cross-entropy between each step's particles rated by ``psi_k`` (a softmax of ``log psi_k``) and
        by the weight their paths carry from ``x_k`` on, shape ``(N,)`` (summing to the loss).

        Under the proposal ``q`` that drew the paths, ``psi_k(x) = E_q[rho_k exp(reward) | x_k = x]``
        with ``rho_k`` the path's ratio of base to proposal densities after step ``k``: the optimal
        twist is the regression of this future weight on ``x_k``, and a softmax over particles
        regresses it up to a per-step constant, which changes no weight. Where a step's noise is
        large the future weights do not depend on ``x_k``, and neither does the fit.
        """
        N = data.weights.shape[0]
        log_psi = self._rows(data.state_steps, data.states, data.context)
        if data.state_lookahead is not None:
            log_psi = log_psi + self.lookahead_scale[data.state_steps].to(log_psi.dtype) * data.state_lookahead
        log_psi = log_psi.reshape(data.num_gaussian, N)
        future = torch.softmax(data.log_future_weight, -1)
        return (-future * log_psi + torch.logsumexp(log_psi, -1, keepdim=True) / N).mean(0)
