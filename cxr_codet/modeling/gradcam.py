"""Grad-CAM (Selvaraju et al., 2017) for CNN stages and ViT blocks.

For a score y_k and the activations A [C, h, w] of a target layer: weights a_kc = mean over (h, w) of
dy_k/dA_c, map = ReLU(sum_c a_kc A_c). A CNN layer gives A directly; a ViT block gives tokens [N, D],
whose patch tokens (after `num_prefix_tokens` class/register tokens) are reshaped to the patch grid.
Maps stay on the layer's grid; callers upsample them to the image.
"""
from typing import Callable, Optional, Tuple

import torch
from torch import nn
from torch.nn import functional as F


def find_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule of `model` called `name` (dotted, as in `named_modules`), or a KeyError listing
    the names one level below the deepest part of `name` that exists."""
    modules = dict(model.named_modules())
    if name in modules:
        return modules[name]
    parent = name
    while parent and parent not in modules:
        parent = parent.rpartition(".")[0]
    prefix = parent + "." if parent else ""
    children = sorted(n for n in modules if n.startswith(prefix) and n and "." not in n[len(prefix):])
    raise KeyError(f"Grad-CAM target layer {name!r} is not a module of {type(model).__name__}; "
                   f"modules under {parent or 'the model'!r}: {children}")


def activation_grid(activation: torch.Tensor, grid_shape: Optional[Tuple[int, int]] = None,
                    num_prefix_tokens: int = 0) -> torch.Tensor:
    """[B, C, h, w] view of a layer output: a CNN map as is, ViT tokens [B, prefix + h*w, D] as their
    patch tokens on the (h, w) grid (`grid_shape`, or a square grid when None)."""
    if activation.dim() == 4:
        return activation
    if activation.dim() != 3:
        raise ValueError(f"Grad-CAM needs a [B, C, h, w] map or [B, N, D] tokens, got shape {tuple(activation.shape)}")
    patches = activation[:, num_prefix_tokens:]
    count = patches.shape[1]
    if grid_shape is None:
        side = int(round(count ** 0.5))
        grid_shape = (side, side)
    height, width = grid_shape
    if height * width != count:
        raise ValueError(f"{count} patch tokens (after {num_prefix_tokens} prefix tokens) do not fill a "
                         f"{height} x {width} grid")
    return patches.transpose(1, 2).reshape(activation.shape[0], activation.shape[2], height, width)


class GradCAM:
    """Grad-CAM maps of a model's scores at one of its layers (`target_layer`, a module name)."""

    def __init__(self, model: nn.Module, target_layer: str):
        self.target_layer = target_layer
        self.layer = find_module(model, target_layer)

    def __call__(self, forward: Callable[[], torch.Tensor], grid_shape: Optional[Tuple[int, int]] = None,
                 num_prefix_tokens: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
        """Run `forward()` (returning scores [B, K]) with gradients on, even inside `torch.no_grad()`;
        returns (the scores, detached, and Grad-CAM maps [B, K, h, w] on the layer's grid)."""
        captured = []

        def hook(module, inputs, output):
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"Grad-CAM target layer {self.target_layer!r} returns a {type(output).__name__}, "
                                "not a tensor")
            if not output.requires_grad:  # a frozen layer: start the gradient here
                output = output.detach().requires_grad_(True)
            captured.append(output)
            return output

        handle = self.layer.register_forward_hook(hook)
        try:
            with torch.enable_grad():
                scores = forward()
                if not captured:
                    raise RuntimeError(f"Grad-CAM target layer {self.target_layer!r} did not run in the forward pass")
                if scores.dim() != 2:
                    raise ValueError(f"Grad-CAM needs scores [B, K], got shape {tuple(scores.shape)}")
                gradients = self._gradients(scores, captured[-1])
        finally:
            handle.remove()
        grid = activation_grid(captured[-1].detach(), grid_shape, num_prefix_tokens)
        maps = []
        for gradient in gradients:
            weights = activation_grid(gradient, grid_shape, num_prefix_tokens).mean(dim=(2, 3), keepdim=True)
            maps.append(F.relu((weights * grid).sum(dim=1)))
        return scores.detach(), torch.stack(maps, dim=1)

    @staticmethod
    def _gradients(scores: torch.Tensor, activation: torch.Tensor):
        """d(sum over the batch of score k)/d(activation) for every k (zeros where score k does not use it)."""
        gradients = []
        for k in range(scores.shape[1]):
            (gradient,) = torch.autograd.grad(scores[:, k].sum(), activation, retain_graph=k + 1 < scores.shape[1],
                                              allow_unused=True)
            gradients.append(torch.zeros_like(activation) if gradient is None else gradient)
        return gradients
