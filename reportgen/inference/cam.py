"""Grad-CAM for AlexNet, exact and batched, without autograd.

Grad-CAM (Selvaraju et al., 2017) weighs the last conv layer's rectified maps ``A`` (features.11,
256x13x13) by the spatial mean of the class score's gradient, ``alpha_c = mean_ij dy_c/dA_ij``, and
keeps the positive part of ``sum_k alpha_c[k] A_k``.

For AlexNet the gradient has a closed form, so no backward pass is needed, and the whole batch's
top-5 classes cost three matrix products:

- ``A`` goes through a 3x3 max-pool to ``P`` (256x6x6); the adaptive average pool is the identity
  at 6x6 (a 224x224 input); dropout is the identity in eval mode. Max-pool sends each output's
  gradient to exactly one input, so ``sum_ij dy/dA_ij = sum_p dy/dP_p``: the spatial sum over ``A``
  equals the sum over the 36 pooled positions, and the max-pool's routing never matters.
- ``P`` feeds ``h1 = relu(W1 p + b1)``, ``h2 = relu(W2 h1 + b2)``, ``y = W3 h2 + b3``, so
  ``dy_c/dp = ((W3[c] * [h2 > 0]) @ W2 * [h1 > 0]) @ W1``, and summing ``W1`` over the 36 pooled
  positions first (``W1s``, 4096x256) gives the per-channel sums directly.

We write it by hand rather than use torchcam or pytorch-grad-cam: both run one backward pass per
class through autograd (five per photo here) and would be new dependencies; this costs about a
tenth of the forward pass. tests/test_cam.py checks it against an autograd Grad-CAM.
"""

from __future__ import annotations

import torch
from torch import nn

from ..layout import CONV_LAYERS
from .model import Hook, HookOwner

# Where Grad-CAM looks: the rectified output of AlexNet's last convolution.
TARGET_LAYER = "features.11"
_HIDDEN = ("classifier.2", "classifier.5")  # the two rectified hidden layers of the head


class CamRecorder(HookOwner):
    """Keeps what Grad-CAM needs from a forward pass: ``A``, ``h1`` and ``h2``.

    A pass may run its convolutions over a batch in parts, a few photos at a time, and then the
    head over all of them: each layer's outputs are kept in order and joined when asked for. A
    pass that starts after the head has run replaces what the last one left.

    A context manager like :class:`~reportgen.inference.model.Conv1Recorder`; its hooks are
    removed on exit, also when the body raises.
    """

    def __init__(self, model: nn.Module) -> None:
        modules = dict(model.named_modules())
        super().__init__([modules[TARGET_LAYER], *(modules[name] for name in _HIDDEN)])
        self.outputs: list[list[torch.Tensor]] = [[] for _ in self.modules]
        weights = model.classifier
        self.w3 = weights[6].weight.detach()
        self.w2 = weights[4].weight.detach()
        w1 = weights[1].weight.detach()
        channels = modules[CONV_LAYERS["conv5"]].out_channels  # what TARGET_LAYER rectifies
        # Summed over the pooled positions (6x6) of each of the 256 channels: (4096, 256).
        self.w1s = w1.view(w1.shape[0], channels, -1).sum(dim=2)

    def _hook(self, slot: int) -> Hook:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            if slot == 0 and self.outputs[-1]:  # the last pass went through the head
                self.clear()
            self.outputs[slot].append(output.detach())

        return hook

    def clear(self) -> None:
        self.outputs = [[] for _ in self.modules]

    def _joined(self) -> list[torch.Tensor]:
        if not all(self.outputs):
            raise RuntimeError("no forward pass was recorded")
        return [parts[0] if len(parts) == 1 else torch.cat(parts) for parts in self.outputs]

    def codes(self) -> torch.Tensor:
        """The last forward pass's fc7 codes: ``h2``, the 4096 outputs of the head's second fully
        connected layer after its ReLU (``classifier.5``), (B, 4096)."""
        return self._joined()[2]

    def cams(self, classes: torch.Tensor) -> torch.Tensor:
        """Grad-CAM maps of the last forward pass for ``classes`` (B, K): (B, K, 13, 13), >= 0."""
        a, h1, h2 = self._joined()
        if a.shape[-2:] != (13, 13):
            raise ValueError(f"Grad-CAM here assumes a 224x224 input (got maps of {a.shape})")
        g = self.w3[classes] * (h2 > 0).unsqueeze(1)  # (B, K, 4096): dy/dh2_pre
        g = (g @ self.w2) * (h1 > 0).unsqueeze(1)  # (B, K, 4096): dy/dh1_pre
        alpha = (g @ self.w1s) / (a.shape[-2] * a.shape[-1])  # (B, K, 256): mean_ij dy/dA_ij
        return torch.relu(torch.einsum("bkc,bchw->bkhw", alpha, a.float()))
