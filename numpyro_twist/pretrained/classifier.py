"""The shipped digit classifier's forward pass in JAX: the reward of the digits examples.

The twin of ``pyro_twist.pretrained.classifier.DigitClassifier`` (a ``torch.nn.Sequential`` of a 3x3
convolution, SiLU, a 3x3 convolution, SiLU, a 2x2 average pool, a flatten in torch's ``NCHW`` order, a
linear layer, SiLU and a linear layer to the logits), read from its safetensors without torch.
"""
import json
import math
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ..chains.unet import conv2d, linear

# the torch module's layers with weights, by their index in its nn.Sequential
_LAYERS = {"conv1": "net.0", "conv2": "net.2", "hidden": "net.6", "output": "net.8"}


def classifier_logits(params, x):
    """The logits ``(N, num_classes)`` of images ``x`` ``(N, C, H, W)``."""
    h = jax.nn.silu(conv2d(params["conv1"], x.transpose(0, 2, 3, 1)))  # NHWC inside, as in the UNet
    h = jax.nn.silu(conv2d(params["conv2"], h))
    n, height, width, channels = h.shape
    h = h.reshape(n, height // 2, 2, width // 2, 2, channels).mean((2, 4))
    h = h.transpose(0, 3, 1, 2).reshape(n, -1)  # torch's nn.Flatten order: channel, then row, then column
    return linear(params["output"], jax.nn.silu(linear(params["hidden"], h)))


class DigitClassifier(NamedTuple):
    """Logits over the digits for images ``(..., 1, 8, 8)`` in ``[-1, 1]``.

    A named tuple of its parameters, so it can be closed over in a model or passed through ``jax.jit``.
    ``log_prob(x, label)`` is the reward ``log p(label | x)``, one value per image.
    """

    params: dict

    @classmethod
    def from_pretrained(cls, folder, dtype=jnp.float32):
        """Load a ``DigitClassifier`` saved by diffusers' ``save_pretrained`` in ``folder`` (its
        ``config.json`` and ``diffusion_pytorch_model.safetensors``), with ``safetensors.numpy``."""
        from safetensors.numpy import load_file

        folder = Path(folder).expanduser()
        config_path = folder / "config.json"
        if not config_path.is_file():
            raise FileNotFoundError(f"DigitClassifier.from_pretrained: {str(folder)!r} has no config.json: "
                                    "pass the folder written by the classifier's save_pretrained")
        class_name = json.loads(config_path.read_text()).get("_class_name")
        if class_name != "DigitClassifier":
            raise ValueError(f"{str(folder)!r} holds a {class_name!r}, not a DigitClassifier")
        flat = load_file(folder / "diffusion_pytorch_model.safetensors")
        params = {layer: {part: jnp.asarray(flat[f"{name}.{part}"], dtype) for part in ("weight", "bias")}
                  for layer, name in _LAYERS.items()}
        return cls(params)

    @property
    def event_shape(self):
        """The shape of one image: the first convolution's channels, and the square side whose pooled
        feature maps fill the hidden layer's inputs."""
        channels = self.params["conv1"]["weight"].shape[1]
        pooled = self.params["hidden"]["weight"].shape[1] // self.params["conv2"]["weight"].shape[0]
        side = 2 * math.isqrt(pooled)
        return (channels, side, side)

    @property
    def num_classes(self):
        return self.params["output"]["weight"].shape[0]

    def logits(self, x):
        """Logits ``(..., num_classes)`` of images ``x`` ``(..., 1, 8, 8)``, in the dtype of ``x``."""
        x = jnp.asarray(x)
        if x.shape[-3:] != self.event_shape:
            raise ValueError(f"DigitClassifier takes images of shape (..., {', '.join(map(str, self.event_shape))}), "
                             f"got {x.shape}: reshape x0 to the digits' (1, 8, 8) images")
        batch_shape = x.shape[:-3]
        rows = x.reshape((-1,) + self.event_shape).astype(self.params["conv1"]["weight"].dtype)
        return classifier_logits(self.params, rows).reshape(batch_shape + (-1,)).astype(x.dtype)

    def log_prob(self, x, label):
        """``log p(label | x)`` per image; ``label`` an integer or an integer array broadcasting with the batch."""
        log_p = jax.nn.log_softmax(self.logits(x), axis=-1)
        label = jnp.broadcast_to(jnp.asarray(label), log_p.shape[:-1])
        return jnp.take_along_axis(log_p, label[..., None], axis=-1)[..., 0]
