"""Per-step log-linear twists: ``log psi_k(x) = <w_k, x> + c_k``."""
import jax.numpy as jnp


class LinearTwist:
    """A log-linear twist for each step ``k = 0, ..., num_steps``.

    On a Gaussian step the gradient proposal is ``N(mu + v * w_k, v)``: the family contains
    the optimal twist of a linear-Gaussian chain with a linear reward, and its twisted kernel
    is then exact.

    :param weight: ``(num_steps + 1,) + event_shape``. :param bias: ``(num_steps + 1,)``.
    """

    def __init__(self, weight, bias):
        self.weight, self.bias = jnp.asarray(weight), jnp.asarray(bias)
        if self.bias.shape != self.weight.shape[:1]:
            raise ValueError(f"LinearTwist: bias must have shape ({self.weight.shape[0]},), got {self.bias.shape}")

    def log_psi(self, k, x):
        if x.shape[1:] != self.weight.shape[1:]:
            raise ValueError(f"LinearTwist was built for states of shape {self.weight.shape[1:]}, but has states of "
                             f"shape {x.shape[1:]} (after the particle axis)")
        return (x * self.weight[k]).reshape(x.shape[0], -1).sum(-1) + self.bias[k]
