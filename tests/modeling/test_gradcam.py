"""Grad-CAM: a map computed by hand, gradients under no_grad and through frozen layers, ViT patch tokens put back
on their grid, clear errors, and the behaviour that matters: on phantom images, the map of a small CNN trained to
detect one lesion class peaks inside that lesion's box far more often than a random pixel would."""
from collections import OrderedDict

import numpy as np
import pytest
import torch
from scipy.stats import binomtest
from torch import nn
from torch.nn import functional as F

from cxr_codet.data.classes import VINDR_CXR_CLASSES
from cxr_codet.data.datasets.phantom_render import render_phantom_image
from cxr_codet.modeling.gradcam import GradCAM, activation_grid, find_module

LESION = "Consolidation"


SIZE = 96


class LinearReadout(nn.Module):
    """features -> per-channel spatial mean -> linear scores: Grad-CAM's weights are then W / (h * w)."""

    def __init__(self, channels=4, scores=3):
        super().__init__()
        self.features = nn.Conv2d(1, channels, 3, padding=1)
        self.readout = nn.Linear(channels, scores, bias=False)

    def forward(self, x):
        return self.readout(self.features(x).mean(dim=(2, 3)))


def test_gradcam_matches_the_hand_computed_map():
    torch.manual_seed(0)
    model, x = LinearReadout(), torch.randn(2, 1, 5, 6)
    scores, maps = GradCAM(model, "features")(lambda: model(x))
    activation = model.features(x).detach()
    weights = model.readout.weight.detach() / (5 * 6)  # [K, C]
    expected = F.relu(torch.einsum("kc,bchw->bkhw", weights, activation))
    torch.testing.assert_close(maps, expected)
    torch.testing.assert_close(scores, model(x).detach())
    assert maps.shape == (2, 3, 5, 6)


def test_gradcam_works_under_no_grad_and_through_frozen_layers():
    torch.manual_seed(0)
    model, x = LinearReadout(), torch.randn(1, 1, 4, 4)
    _, reference = GradCAM(model, "features")(lambda: model(x))
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    with torch.no_grad():
        _, frozen = GradCAM(model, "features")(lambda: model(x))
    torch.testing.assert_close(frozen, reference)


class TokenModel(nn.Module):
    """Patch tokens with a class token in front ("tokens"), put on the grid ("grid"), then a conv readout."""

    def __init__(self, grid=(2, 3), dim=4):
        super().__init__()
        self.grid_shape = grid
        self.embed = nn.Linear(1, dim)
        self.tokens = nn.Identity()
        self.grid = nn.Identity()
        self.readout = nn.Conv2d(dim, 2, 1)

    def forward(self, patches):  # patches [B, 1 + h*w, 1]
        tokens = self.tokens(torch.tanh(self.embed(patches)))
        grid = self.grid(activation_grid(tokens, self.grid_shape, num_prefix_tokens=1))
        return torch.sigmoid(self.readout(grid)).mean(dim=(2, 3))


def test_vit_tokens_give_the_same_map_as_their_grid():
    torch.manual_seed(0)
    model, patches = TokenModel(), torch.randn(2, 1 + 6, 1)
    _, from_tokens = GradCAM(model, "tokens")(lambda: model(patches), grid_shape=(2, 3), num_prefix_tokens=1)
    _, from_grid = GradCAM(model, "grid")(lambda: model(patches))
    assert from_tokens.shape == (2, 2, 2, 3)
    torch.testing.assert_close(from_tokens, from_grid)


def test_activation_grid_places_token_p_at_row_p_div_w():
    tokens = torch.arange(1 + 6, dtype=torch.float32).view(1, 7, 1).repeat(1, 1, 2)  # token p has value p
    grid = activation_grid(tokens, (2, 3), num_prefix_tokens=1)
    assert grid.shape == (1, 2, 2, 3)
    torch.testing.assert_close(grid[0, 0], torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
    assert activation_grid(torch.zeros(1, 1 + 9, 2), num_prefix_tokens=1).shape == (1, 2, 3, 3)
    with pytest.raises(ValueError, match="6 patch tokens .* do not fill a 2 x 2 grid"):
        activation_grid(tokens, (2, 2), num_prefix_tokens=1)


def test_unknown_target_layers_are_named():
    with pytest.raises(KeyError, match=r"'features.conv9' is not a module .* modules under 'features'"):
        find_module(nn.Sequential(OrderedDict(features=nn.Sequential(OrderedDict(conv1=nn.Conv2d(1, 1, 1))))),
                    "features.conv9")


def lesion_samples(seed, count):
    """(image, the same image without lesions, boxes) of phantom images whose only finding is LESION."""
    target, samples, index = VINDR_CXR_CLASSES.index(LESION), [], 0
    while len(samples) < count:
        sample = render_phantom_image(SIZE, seed, index, target, with_background=True)
        index += 1
        if sample.findings == [LESION]:
            samples.append((sample.image, sample.background, [box for _, box in sample.boxes]))
    return samples


def small_cnn():
    def block(c_in, c_out, stride):
        return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1), nn.GroupNorm(4, c_out), nn.ReLU())
    features = nn.Sequential(block(1, 16, 2), block(16, 32, 2), block(32, 32, 1), block(32, 64, 2), block(64, 64, 1))
    return nn.Sequential(OrderedDict(features=features, pool=nn.AdaptiveMaxPool2d(1), flatten=nn.Flatten(),
                                     score=nn.Linear(64, 1)))


def as_input(images):
    return (torch.tensor(np.stack(images), dtype=torch.float32)[:, None] / 255.0 - 0.5) / 0.25


@pytest.mark.slow
def test_lesion_class_map_peaks_inside_the_lesion_box_more_often_than_chance():
    torch.manual_seed(0)
    train = lesion_samples(seed=100, count=200)
    images = as_input([image for image, _, _ in train] + [background for _, background, _ in train])
    labels = torch.cat([torch.ones(len(train)), torch.zeros(len(train))])
    model = small_cnn()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(300):
        batch = torch.randint(0, len(images), (32,), generator=generator)
        loss = F.binary_cross_entropy_with_logits(model(images[batch])[:, 0], labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    test = lesion_samples(seed=200, count=40)
    _, maps = GradCAM(model, "features.3")(lambda: model(as_input([image for image, _, _ in test])))
    maps = F.interpolate(maps, size=(SIZE, SIZE), mode="bilinear", align_corners=False)[:, 0]
    hits, chance = 0, 0.0
    for heatmap, (_, _, boxes) in zip(maps, test):
        row, col = np.unravel_index(int(heatmap.argmax()), heatmap.shape)
        hits += any(x <= col < x + w and y <= row < y + h for x, y, w, h in boxes)
        chance += sum(w * h for _, _, w, h in boxes) / SIZE ** 2 / len(test)  # a random pixel's hit rate
    assert chance < 0.1
    assert hits / len(test) > 3 * chance
    assert binomtest(hits, len(test), chance, alternative="greater").pvalue < 1e-4
