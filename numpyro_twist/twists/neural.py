"""A neural twist family: ``log psi_k(x) = f_phi(x, k)``, fit by weighted maximum likelihood with Adam steps."""
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.nn import softmax


def time_features(k, num_steps, num_frequencies, dtype):
    """``t = k / K`` with ``sin(pi j t)`` and ``cos(pi j t)`` for ``j = 1..num_frequencies``: shape ``(1 + 2F,)``."""
    t = jnp.asarray(k, dtype) / max(num_steps, 1)
    angles = math.pi * jnp.arange(1, num_frequencies + 1, dtype=dtype) * t
    return jnp.concatenate([t[None], jnp.sin(angles), jnp.cos(angles)])


class NeuralTwist(eqx.Module):
    """A small network of the state ``x_k`` and time features of the step ``k``: ``log psi_k(x) = f_phi(x, k)``.

    Proposals shift the base mean by variance times ``grad_x f_phi`` at that mean, so it needs no
    gradient of the reward: the network's own gradient steers. The last layer starts at zero, so
    learning starts from the base chain. The family of :func:`~numpyro_twist.infer.tri_tsmc.default_twist`
    for chains other than a :class:`~numpyro_twist.chains.LinearGaussianKernel`'s, as
    ``pyro_twist.twists.NeuralTwist`` (its default configuration) is for the torch backend.

    An equinox ``Module`` is a pytree whose leaves here are all arrays (the layers' weights and
    biases and the fit's random key; sizes and settings are static fields): like
    :class:`~numpyro_twist.twists.LinearTwist`, a fitted twist is an argument of the compiled
    pass, so learning compiles its pass once. :meth:`fit` is pure and returns a new twist.

    :param int num_steps: the chain's number of transitions ``K``. :param tuple event_shape: shape of one state.
    :param rng_key: key of the initial weights and of each fit's held-out paths.
    :param int hidden: width of the hidden layers. :param int num_layers: hidden layers.
    :param int num_frequencies: sine and cosine pairs of the time features.
    :param int num_fit_steps: Adam steps per fit. :param float learning_rate: Adam's step size.
    :param dtype: of the parameters (default: JAX's default float).
    :param int context_dim: size of a context appended to the network's input (default 0: none), for one
        twist amortised over several run arguments (a model's global parameters, say). The context is
        an array of the twist, set by :meth:`with_context`: a new value runs the same compiled pass.

    Unlike the torch family, a fit trains on its own paths only (no replay of earlier fits'): the
    replayed paths would be arrays of the twist, absent before the first fit, and the compiled pass
    would compile again for the twist that carries them.
    """

    layers: tuple
    rng_key: jax.Array
    context: jax.Array | None
    num_steps: int = eqx.field(static=True)
    event_shape: tuple = eqx.field(static=True)
    num_frequencies: int = eqx.field(static=True)
    num_fit_steps: int = eqx.field(static=True)
    learning_rate: float = eqx.field(static=True)
    context_dim: int = eqx.field(static=True)

    def __init__(self, num_steps, event_shape, rng_key, hidden=32, num_layers=2, num_frequencies=4,
                 num_fit_steps=100, learning_rate=1e-2, dtype=None, context_dim=0):
        if int(num_fit_steps) != num_fit_steps or num_fit_steps < 0:
            raise ValueError(f"NeuralTwist: num_fit_steps must be a non-negative integer, got {num_fit_steps!r}")
        if not learning_rate > 0:
            raise ValueError(f"NeuralTwist: learning_rate must be positive, got {learning_rate!r}")
        if int(context_dim) != context_dim or context_dim < 0:
            raise ValueError(f"NeuralTwist: context_dim must be a non-negative integer, got {context_dim!r}")
        dtype = jnp.result_type(float) if dtype is None else dtype
        self.num_steps, self.event_shape = int(num_steps), tuple(event_shape)
        self.num_frequencies, self.num_fit_steps = int(num_frequencies), int(num_fit_steps)
        self.learning_rate = float(learning_rate)
        self.context_dim, self.context = int(context_dim), None
        widths = ([math.prod(self.event_shape) + 1 + 2 * self.num_frequencies + self.context_dim]
                  + [hidden] * num_layers + [1])
        self.rng_key, *layer_keys = jax.random.split(rng_key, len(widths))
        layers = [eqx.nn.Linear(n_in, n_out, key=key, dtype=dtype)
                  for n_in, n_out, key in zip(widths[:-1], widths[1:], layer_keys)]
        last = layers[-1]
        # start at psi = 1: the base chain
        layers[-1] = eqx.tree_at(lambda layer: (layer.weight, layer.bias), last,
                                 (jnp.zeros_like(last.weight), jnp.zeros_like(last.bias)))
        self.layers = tuple(layers)

    def with_context(self, value):
        """This twist with its context set to ``value``, of shape ``(context_dim,)`` (this one is left as it is)."""
        if self.context_dim == 0:
            raise ValueError("NeuralTwist.with_context: this twist takes no context; build it with "
                             "NeuralTwist(..., context_dim=...) to give it one")
        value = jnp.asarray(value, self.layers[0].weight.dtype)
        if value.shape != (self.context_dim,):
            raise ValueError(f"NeuralTwist.with_context: the context has shape {value.shape}, and this twist takes "
                             f"({self.context_dim},): reshape it, or build the twist with context_dim={value.size}")
        # a context not set yet is None, which tree_at only reaches as a leaf
        return eqx.tree_at(lambda t: t.context, self, value, is_leaf=lambda node: node is None)

    def _row(self, k, x):
        """``f_phi`` at one state ``x`` of the event shape."""
        parts = [x.reshape(-1), time_features(k, self.num_steps, self.num_frequencies, x.dtype)]
        if self.context_dim:
            if self.context is None:
                raise ValueError(f"NeuralTwist was built with context_dim={self.context_dim} and has no context: "
                                 "run twist.with_context(value)")
            parts.append(self.context.astype(x.dtype))
        h = jnp.concatenate(parts).astype(self.layers[0].weight.dtype)
        for layer in self.layers[:-1]:
            h = jax.nn.silu(layer(h))
        return self.layers[-1](h)[0]

    def log_psi(self, k, x):
        if x.shape[1:] != self.event_shape:
            raise ValueError(f"NeuralTwist was built for states of shape {self.event_shape}, but has states of "
                             f"shape {x.shape[1:]} (after the particle axis)")
        return jax.vmap(self._row, (None, 0))(k, x).astype(x.dtype)

    def fit(self, transitions, log_weights, log_reward):
        """Weighted maximum likelihood of the recorded paths, with the proposal noise as control variate;
        returns the fitted :class:`NeuralTwist` (this one is left as it is). A twist with a context is
        fit at its context, which should be the one in force when the paths were drawn; it keeps it.

        For a Gaussian step with base ``N(mu, v)``, old proposal mean ``m`` and new mean
        ``mu + v grad f_phi(mu, k)``, the weighted log-likelihood of the paths is, up to a constant,
        ``sum_i W_i [(x_i - m_i) d_i / v_i - d_i^2 / (2 v_i)]`` with ``d = mu + v grad f_phi - m``.
        The noise ``x_i - m_i`` has mean zero under the proposal, so its term takes ``W_i - 1/N``
        in place of ``W_i``: with uniform weights the fit has nothing to gain. A deterministic last
        step has no proposal: there ``f_phi(., 0)`` regresses the reward by weighted least squares.

        A flexible family can follow each path's own noise, so an eighth of the paths is held out:
        the fit keeps the parameters, the starting ones included, with the best held-out loss.

        :param transitions: the :data:`~numpyro_twist.infer.steps.TransitionRecord` of a pass with
            ``record_transitions=True`` (stacked over ``k = K, ..., 0``, particles unresampled).
        :param log_weights: ``(N,)`` log-weights of the paths (the trust region's tempered weights).
        :param log_reward: ``(N,)`` reward of each path.
        """
        value = transitions.value
        if value.shape[0] != self.num_steps + 1 or value.shape[2:] != self.event_shape:
            raise ValueError(
                f"NeuralTwist.fit: the twist has {self.num_steps + 1} steps of shape {self.event_shape}, the records "
                f"{value.shape[0]} of shape {value.shape[2:]}: fit a twist built for this chain"
            )
        gaussian = np.asarray(transitions.gaussian)
        if not gaussian.any():
            raise ValueError("NeuralTwist.fit: the chain has no Gaussian transition, so no proposal to fit: steer it "
                             "with FKSteering, or pass TRITSMC a twist of your own")
        if (~gaussian[:-1]).any():  # records run over k = K..0
            steps = [self.num_steps - int(i) for i in np.flatnonzero(~gaussian[:-1])]
            raise ValueError(f"NeuralTwist fits deterministic steps only at k = 0 (the last step), and the chain has "
                             f"deterministic steps at k = {steps}: pass TRITSMC a twist of your own")
        fitted, diverged = _fit(self, transitions, softmax(log_weights), log_reward)
        if bool(diverged):
            raise ValueError(f"NeuralTwist.fit: the loss is NaN within {self.num_fit_steps} steps: check that the "
                             "recorded paths' states and rewards are finite, or lower the learning_rate")
        return fitted


def _per_path_loss(layers, twist, transitions, W, log_reward):
    """The negative weighted log-likelihood of each path's proposal noise, plus at a deterministic last
    step the weighted squared residual of ``f_phi(x_0, 0)`` against the reward: shape ``(N,)``."""
    twist = eqx.tree_at(lambda t: t.layers, twist, layers)
    num_records, N = transitions.value.shape[:2]
    k = twist.num_steps - jnp.arange(num_records)
    per_row = (num_records, N) + (1,) * len(twist.event_shape)
    grad_at = jax.vmap(jax.vmap(jax.grad(twist._row, 1), (None, 0)))
    mu, old_mean = transitions.base_mean, transitions.proposal_mean
    gaussian = transitions.gaussian.reshape((num_records,) + (1,) * (len(per_row) - 1))
    variance = jnp.where(gaussian, transitions.base_variance, 1.0)
    d = mu + variance * grad_at(k, mu) - old_mean
    noise = transitions.value - old_mean
    log_lik = ((W - 1.0 / N).reshape(per_row[1:]) * noise * d - W.reshape(per_row[1:]) * d**2 / 2) / variance
    log_lik = jnp.where(gaussian, log_lik, 0.0).reshape(num_records, N, -1).sum((0, 2))
    loss = -log_lik / transitions.gaussian.sum()

    log_psi_0 = jax.vmap(twist._row, (None, 0))(0, transitions.value[-1])
    # paths a hard constraint rules out have weight zero and reward -inf: no regression target
    residual = jnp.where(W > 0, log_psi_0 - log_reward, 0.0)
    residual = residual - (W * residual).sum()  # the constant of log psi changes no weight
    return loss + jnp.where(transitions.gaussian[-1], 0.0, W * residual**2)


@jax.jit
def _fit(twist, transitions, W, log_reward):
    """``num_fit_steps`` Adam steps on the kept paths' loss as one scan, keeping the parameters of the best
    held-out loss; returns the fitted twist and whether a loss was NaN."""
    N = W.shape[0]
    key, held_key = jax.random.split(twist.rng_key)
    held_out = jax.random.permutation(held_key, N) < max(1, N // 8)
    W = W.astype(twist.layers[0].weight.dtype)
    optimizer = optax.adam(twist.learning_rate)

    def losses(layers):
        loss = _per_path_loss(layers, twist, transitions, W, log_reward)
        return jnp.where(held_out, 0.0, loss).sum(), jnp.where(held_out, loss, 0.0).sum()

    def step(carry, _):
        layers, opt_state, best, best_loss, diverged = carry
        (_, held), grads = jax.value_and_grad(losses, has_aux=True)(layers)
        better = held < best_loss
        best = jax.tree_util.tree_map(lambda new, old: jnp.where(better, new, old), layers, best)
        updates, opt_state = optimizer.update(grads, opt_state, layers)
        return (optax.apply_updates(layers, updates), opt_state, best, jnp.where(better, held, best_loss),
                diverged | jnp.isnan(held)), None

    start = (twist.layers, optimizer.init(twist.layers), twist.layers, jnp.asarray(jnp.inf, W.dtype),
             jnp.asarray(False))
    (layers, _, best, best_loss, diverged), _ = jax.lax.scan(step, start, None, length=twist.num_fit_steps)
    held = losses(layers)[1]
    best = jax.tree_util.tree_map(lambda new, old: jnp.where(held < best_loss, new, old), layers, best)
    fitted = eqx.tree_at(lambda t: (t.layers, t.rng_key), twist, (best, key))
    return fitted, diverged | jnp.isnan(held)
