"""A small convolutional digit classifier for 8x8 images in [-1, 1]: the reward of the digits examples."""
import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn


class DigitClassifier(ModelMixin, ConfigMixin):
    """Logits over the ten digits for images ``(..., 1, 8, 8)``; saved and loaded with
    ``save_pretrained`` / ``from_pretrained`` like any diffusers model.

    ``log_prob(x, label)`` is the reward ``log p(label | x)`` with one value per image.
    """

    @register_to_config
    def __init__(self, channels=(16, 32), hidden=64, num_classes=10):
        super().__init__()
        c1, c2 = channels
        self.net = nn.Sequential(
            nn.Conv2d(1, c1, 3, padding=1), nn.SiLU(),
            nn.Conv2d(c1, c2, 3, padding=1), nn.SiLU(), nn.AvgPool2d(2),
            nn.Flatten(), nn.Linear(c2 * 16, hidden), nn.SiLU(), nn.Linear(hidden, num_classes),
        )

    def forward(self, x):
        batch_shape = x.shape[:-3]
        logits = self.net(x.reshape((-1,) + x.shape[-3:]).to(self.dtype))
        return logits.reshape(batch_shape + (logits.shape[-1],)).to(x.dtype)

    def log_prob(self, x, label):
        """``log p(label | x)`` per image; ``label`` an int or a tensor broadcasting with the batch."""
        log_p = torch.log_softmax(self(x), -1)
        label = torch.as_tensor(label, device=log_p.device)
        if label.dim() == 0:
            return log_p[..., label]
        return log_p.gather(-1, label.expand(log_p.shape[:-1]).unsqueeze(-1)).squeeze(-1)
