"""Per-step log-linear twists: ``log psi_k(x) = <w_k, x> + c_k``, and their weighted maximum-likelihood fit."""
import jax
import jax.numpy as jnp
import numpy as np
from jax.nn import softmax


@jax.tree_util.register_pytree_node_class
class LinearTwist:
    """A log-linear twist for each step ``k = 0, ..., num_steps``.

    On a Gaussian step the gradient proposal is ``N(mu + v * w_k, v)``: the family contains
    the optimal twist of a linear-Gaussian chain with a linear reward, and its twisted kernel
    is then exact. A pytree of its ``weight`` and ``bias``: a compiled pass takes it as an
    argument, so a new twist of the same shapes runs without compiling again.

    :param weight: ``(num_steps + 1,) + event_shape``. :param bias: ``(num_steps + 1,)``.
    :param float smoothing: bandwidth, in steps, of the Gaussian kernel that pools each fit's
        score and information over neighbouring ``k`` (0: no pooling).
    """

    def __init__(self, weight, bias, smoothing=0.0):
        self.weight, self.bias = jnp.asarray(weight), jnp.asarray(bias)
        if self.bias.shape != self.weight.shape[:1]:
            raise ValueError(f"LinearTwist: bias must have shape ({self.weight.shape[0]},), got {self.bias.shape}")
        if not smoothing >= 0:
            raise ValueError(f"LinearTwist: smoothing must be a non-negative number of steps, got {smoothing!r}")
        self.smoothing = float(smoothing)

    @classmethod
    def zeros(cls, num_steps, event_shape, dtype=None, smoothing=0.0):
        """The twist ``log psi_k = 0`` (the base chain), for states of ``event_shape``."""
        dtype = jnp.result_type(float) if dtype is None else dtype
        return cls(jnp.zeros((num_steps + 1,) + tuple(event_shape), dtype), jnp.zeros(num_steps + 1, dtype),
                   smoothing)

    def tree_flatten(self):
        return (self.weight, self.bias), self.smoothing

    @classmethod
    def tree_unflatten(cls, smoothing, children):
        twist = object.__new__(cls)  # leaves may be tracers or placeholders: no checks
        twist.weight, twist.bias = children
        twist.smoothing = smoothing
        return twist

    @property
    def event_dim(self):
        return self.weight.ndim - 1

    def log_psi(self, k, x):
        if x.shape[1:] != self.weight.shape[1:]:
            raise ValueError(f"LinearTwist was built for states of shape {self.weight.shape[1:]}, but has states of "
                             f"shape {x.shape[1:]} (after the particle axis)")
        return (x * self.weight[k]).reshape(x.shape[0], -1).sum(-1) + self.bias[k]

    def fit(self, transitions, log_weights, log_reward):
        """Weighted maximum likelihood of the recorded paths under the twisted family; returns the
        fitted :class:`LinearTwist` (this one is left as it is).

        On a Gaussian step, the likelihood of ``x_k ~ N(mu + v * w_k, v)`` is maximised by
        ``w_k = sum_i W_i (x_i - mu_i) / sum_i W_i v_i``. Writing ``x_i - mu_i`` as the current
        shift plus the proposal's noise ``x_i - m_i``, whose mean under the proposal is known to be
        zero, the noise enters as ``sum_i (W_i - 1/N)(x_i - m_i)``: the unweighted mean is a control
        variate, and the update vanishes when the weights are uniform. With ``smoothing``, numerator
        and information ``sum_i W_i v_i`` are pooled over neighbouring steps by a Gaussian kernel (a
        local likelihood: steps of small variance, whose own estimate is noisy, borrow from their
        neighbours). A deterministic step has no proposal to fit: its ``w_k, c_k`` regress the next
        potential (the reward at ``k = 0``) on ``x_k``, by weighted least squares.

        :param transitions: the :data:`~numpyro_twist.infer.steps.TransitionRecord` of a pass with
            ``record_transitions=True`` (stacked over ``k = K, ..., 0``, particles unresampled).
        :param log_weights: ``(N,)`` log-weights of the paths (the trust region's tempered weights).
        :param log_reward: ``(N,)`` reward of each path.
        """
        num_records = transitions.value.shape[0]
        if num_records != self.weight.shape[0] or transitions.value.shape[2:] != self.weight.shape[1:]:
            raise ValueError(
                f"LinearTwist.fit: the twist has {self.weight.shape[0]} steps of shape {self.weight.shape[1:]}, "
                f"the records {num_records} of shape {transitions.value.shape[2:]}: fit a twist built for this chain"
            )
        W = softmax(log_weights)
        twist = _fit_gaussian_steps(self, transitions, W)
        deterministic = np.flatnonzero(~np.asarray(transitions.gaussian))  # records run over k = K..0
        for index in deterministic:
            k = num_records - 1 - int(index)
            target = log_reward if k == 0 else twist.log_psi(k - 1, transitions.value[index + 1])
            twist = _regress(twist, k, transitions.value[index], target, W)
        return twist

    def _smooth(self, per_step):
        if self.smoothing <= 0:
            return per_step
        steps = jnp.arange(per_step.shape[0], dtype=per_step.dtype)
        kernel = jnp.exp(-0.5 * ((steps[:, None] - steps[None, :]) / self.smoothing) ** 2)
        return jnp.tensordot(kernel, per_step, axes=1)


@jax.jit
def _fit_gaussian_steps(twist, transitions, W):
    """``twist`` with the control-variate update of :meth:`LinearTwist.fit` at its Gaussian steps."""
    # records run over k = K..0; the twist's arrays over k = 0..K
    value, proposal_mean, base_variance, gaussian = (jnp.flip(v, 0) for v in (
        transitions.value, transitions.proposal_mean, transitions.base_variance, transitions.gaussian))
    N = W.shape[0]
    weights = W.astype(value.dtype).reshape((1, N) + (1,) * twist.event_dim)
    per_step = (-1,) + (1,) * twist.event_dim
    numerator = jnp.where(gaussian.reshape(per_step), ((weights - 1.0 / N) * (value - proposal_mean)).sum(1), 0.0)
    information = jnp.where(gaussian.reshape(per_step), (weights * base_variance).sum(1), 0.0)
    fitted = (information > 0).reshape(value.shape[0], -1).any(1).reshape(per_step)
    numerator, information = twist._smooth(numerator), twist._smooth(information)
    update = numerator / jnp.maximum(information, jnp.finfo(information.dtype).tiny)
    return LinearTwist(twist.weight + jnp.where(fitted, update, 0.0).astype(twist.weight.dtype), twist.bias,
                       twist.smoothing)


@jax.jit
def _regress(twist, k, x, target, W):
    """``twist`` with ``w_k, c_k`` the weighted least-squares fit of ``target`` on ``x``."""
    features = x.reshape(x.shape[0], -1)
    design = jnp.concatenate([features, jnp.ones_like(features[:, :1])], 1)
    gram = design.T @ (W[:, None] * design)
    ridge = 1e-8 * jnp.diagonal(gram).mean() * jnp.eye(gram.shape[0], dtype=gram.dtype)
    # paths a hard constraint rules out have weight zero and target -inf: no say in the fit
    weighted_target = jnp.where(W > 0, W * target, 0.0)
    solution = jnp.linalg.solve(gram + ridge, design.T @ weighted_target)
    weight = twist.weight.at[k].set(solution[:-1].reshape(twist.weight.shape[1:]).astype(twist.weight.dtype))
    return LinearTwist(weight, twist.bias.at[k].set(solution[-1].astype(twist.bias.dtype)), twist.smoothing)
