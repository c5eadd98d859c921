"""Twisted Gaussian kernels: a Gaussian transition times a locally quadratic twist is Gaussian again."""
import torch

from ..chains.row_cache import evaluation_in_chunks


def newton_moments(mean, variance, grad, hess_diag):
    """Moments of the Gaussian ``N(mean, variance) * exp(g.(x - mean) + (x - mean)' diag(h) (x - mean) / 2)``.

    The precision ``1/variance - h`` is kept at least a tenth of the base precision, so a
    convex stretch of ``log psi`` widens the proposal at most tenfold.
    """
    precision = torch.maximum(1 / variance - hess_diag, 0.1 / variance)
    return mean + grad / precision, 1 / precision


def bounded_shift(shift, variance, max_shift):
    """``shift`` per row, scaled down where its norm exceeds ``max_shift`` times the norm of the
    standard deviation ``variance ** 0.5`` (``max_shift=None``: unchanged). A gradient of a sharp reward
    can be far larger than one step of the chain can follow; any proposal keeps the weights exact."""
    if max_shift is None:
        return shift
    dims = tuple(range(1, shift.dim()))
    limit = max_shift * variance.expand_as(shift).sum(dims, keepdim=True).sqrt()
    norm = shift.square().sum(dims, keepdim=True).sqrt()
    return shift * torch.clamp(limit / norm.clamp(min=torch.finfo(shift.dtype).tiny), max=1.0)


def value_and_grad(fn, k, x, batch_size=None):
    """``fn(k, x)`` per row and its gradient in ``x`` (zero where ``fn`` does not depend on ``x``), both detached.

    With ``batch_size``, on at most that many rows at a time: ``fn`` gives each row a value that
    depends on that row alone, so the chunks give the same result and the backward pass's memory
    is that of one chunk.
    """
    if batch_size is None or x.shape[0] <= batch_size:
        return _value_and_grad(fn, k, x)
    with evaluation_in_chunks():
        values, grads = zip(*(_value_and_grad(fn, k, chunk) for chunk in x.split(batch_size)))
    return torch.cat(values), torch.cat(grads)


def _differentiated(fn, k, x, create_graph=False):
    """``(value, leaf, grad)``: ``fn(k, .)`` at a fresh leaf copy of ``x`` and its gradient there, ``None``
    where ``fn`` does not depend on ``x`` (constant, a function of parameters only, or computed without a
    graph, like a black-box reward). Called with grad mode enabled."""
    leaf = x.detach().requires_grad_(True)
    value = fn(k, leaf)
    if not value.requires_grad:
        return value, leaf, None
    (grad,) = torch.autograd.grad(value.sum(), leaf, create_graph=create_graph, allow_unused=True)
    return value, leaf, grad


def _value_and_grad(fn, k, x):
    with torch.enable_grad():
        value, _, grad = _differentiated(fn, k, x)
    return value.detach(), torch.zeros_like(x) if grad is None else finite_rows_only(value, grad)


def finite_rows_only(value, derivative):
    """``derivative`` with zero in the rows where both ``value`` and the derivative are not finite: a
    particle a hard constraint rules out (``log psi = -inf``) may still have a direction from the rest
    of the reward, but its backward pass may also hold ``0 * inf = NaN``, which must not reach the
    proposal. A non-finite derivative at a finite value is left for the weight checks to report."""
    shape = (-1,) + (1,) * (derivative.dim() - 1)
    finite_value = torch.isfinite(value.detach()).reshape(shape)
    finite_row = torch.isfinite(derivative).reshape(len(derivative), -1).all(1).reshape(shape)
    return torch.where(finite_value | finite_row, derivative, torch.zeros_like(derivative))


def newton_step_parts(fn, k, x):
    """The gradient of ``fn(k, .)`` at ``x`` and its Hessian's diagonal, both detached (see
    :func:`finite_rows_only` for rows where ``fn`` is not finite; zero where ``fn`` does not depend on ``x``)."""
    with torch.enable_grad():
        value, leaf, grad = _differentiated(fn, k, x, create_graph=True)
        if grad is None:
            return torch.zeros_like(x), torch.zeros_like(x)
        hess_diag = hessian_diagonal(grad, leaf)
    return finite_rows_only(value, grad.detach()), finite_rows_only(value, hess_diag.detach())


def hessian_diagonal(grad, x):
    """The diagonal of the Hessian from a gradient ``grad`` of a sum over rows, one backward pass per dimension."""
    if not grad.requires_grad:  # log psi is linear in x
        return torch.zeros_like(x)
    flat = grad.reshape(len(grad), -1)
    columns = []
    for i in range(flat.shape[1]):
        # None where log psi is linear in x: its gradient then depends on the parameters alone
        (row,) = torch.autograd.grad(flat[:, i].sum(), x, retain_graph=True, allow_unused=True)
        columns.append(torch.zeros_like(flat[:, i]) if row is None else row.reshape(len(row), -1)[:, i])
    return torch.stack(columns, 1).reshape(x.shape)
