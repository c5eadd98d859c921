"""Finding rows again after resampling: resampled particles are exact copies of earlier rows."""
from contextlib import contextmanager

import torch

# The evaluation in chunks now running (see ``evaluation_in_chunks``), or None.
_chunked_evaluation = None


def match_rows(rows, reference):
    """For each row of ``rows``, the index of an equal row of ``reference`` (compared over
    all trailing dimensions, exactly); ``None`` when some row has no equal."""
    if rows.shape[1:] != reference.shape[1:] or rows.dtype != reference.dtype or rows.device != reference.device:
        return None
    flat_rows, flat_reference = rows.reshape(rows.shape[0], -1), reference.reshape(reference.shape[0], -1)
    _, inverse = torch.unique(torch.cat([flat_reference, flat_rows]), dim=0, return_inverse=True)
    reference_ids, row_ids = inverse[: reference.shape[0]], inverse[reference.shape[0]:]
    # There are at most as many distinct rows as rows: sizing by that reads nothing from the device.
    position = torch.full(inverse.shape, -1, dtype=torch.long, device=inverse.device)
    position[reference_ids] = torch.arange(reference.shape[0], device=inverse.device)
    index = position[row_ids]
    return None if (index < 0).any() else index


@contextmanager
def evaluation_in_chunks():
    """Calls made inside evaluate chunks of the rows of one evaluation: a :class:`RowCache` keeps
    every chunk put under one key, not only the last, so the whole evaluation is found again."""
    global _chunked_evaluation
    outer, _chunked_evaluation = _chunked_evaluation, object()
    try:
        yield
    finally:
        _chunked_evaluation = outer


class RowCache:
    """The outputs of a function's latest call, per key, found again for any rows copied from its inputs.

    A look-ahead twist evaluates the denoiser at ``x_k``; the next transition needs the
    same evaluation at the resampled ``x_k``, whose rows are copies of those. Looking the
    rows up (exact equality) saves that second evaluation. An evaluation made in chunks
    (inside :func:`evaluation_in_chunks`) is kept whole.
    """

    def __init__(self):
        self.clear()

    def clear(self):
        self._key, self._inputs, self._outputs, self._evaluation = None, [], [], None

    def get(self, key, inputs):
        """The cached outputs for ``inputs``, or ``None``; never while gradients are recorded,
        since cached outputs carry no graph."""
        if key != self._key or torch.is_grad_enabled():
            return None
        if len(self._inputs) > 1:
            self._inputs, self._outputs = [torch.cat(self._inputs)], [torch.cat(self._outputs)]
        index = match_rows(inputs, self._inputs[0])
        return None if index is None else self._outputs[0][index]

    def put(self, key, inputs, outputs):
        inputs, outputs = inputs.detach(), outputs.detach()
        if key == self._key and _chunked_evaluation is not None and self._evaluation is _chunked_evaluation:
            self._inputs.append(inputs)
            self._outputs.append(outputs)
        else:
            self._key, self._inputs, self._outputs = key, [inputs], [outputs]
        self._evaluation = _chunked_evaluation
