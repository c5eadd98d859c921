"""The Pareto k-hat of torch weights: :mod:`twist_core.pareto`'s, computed on the host in float64."""
import torch
from twist_core.pareto import pareto_khat as host_pareto_khat


def pareto_khat(log_w):
    """The Pareto shape ``k-hat`` of the largest weights ``exp(log_w)`` (a tensor on any device; see
    :func:`twist_core.pareto.pareto_khat`)."""
    return host_pareto_khat(log_w.detach().to("cpu", torch.float64).numpy())
