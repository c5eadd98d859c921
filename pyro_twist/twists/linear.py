"""Per-step log-linear twists: ``log psi_k(x) = <w_k, x> + c_k``."""
import torch
from torch import nn


class LinearTwist(nn.Module):
    """A log-linear twist for each step ``k = 0, ..., num_steps``.

    It contains the optimal twist of a linear-Gaussian chain with a linear
    reward, and its twisted Gaussian kernel is exact (the gradient is constant).

    :param int num_steps: the chain's number of transitions.
    :param tuple event_shape: shape of one state.
    """

    def __init__(self, num_steps, event_shape, weight=None, bias=None):
        super().__init__()
        shape = (num_steps + 1,) + tuple(event_shape)
        self.weight = nn.Parameter(torch.zeros(shape) if weight is None else torch.as_tensor(weight).clone())
        self.bias = nn.Parameter(torch.zeros(num_steps + 1) if bias is None else torch.as_tensor(bias).clone())
        if self.weight.shape != shape or self.bias.shape != (num_steps + 1,):
            raise ValueError(
                f"LinearTwist: weight must have shape {shape} and bias ({num_steps + 1},); "
                f"got {tuple(self.weight.shape)} and {tuple(self.bias.shape)}"
            )
        self.event_dim = len(event_shape)

    def log_psi(self, k, x):
        return (x * self.weight[k]).flatten(-self.event_dim).sum(-1) + self.bias[k]
