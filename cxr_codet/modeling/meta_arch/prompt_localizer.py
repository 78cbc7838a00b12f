"""`PromptLocalizer`: the base of the box-free side heads (AFLoc, PhraseGrounding).

Shared parts: the backbone and image normalisation, the frozen text features, the finding prompts of the
active vocabulary (the training classes, or a test dataset's classes via `set_test_vocabulary`, which
CXRTrainer.test calls), and inference: one similarity map per prompt on the feature grid, turned into
heat maps on the original image and boxes (see modeling/localization/maps.py). An input dict with a "phrase"
(e.g. MS-CXR) gets the map of that phrase instead of the vocabulary's prompts.

Inference output per image: {"instances": boxes from the maps, "localization": {"findings": [...],
"prompts": [...], "heatmaps": [P, H, W] float32 in [-1, 1], NaN where invalid}}.
"""
import random
from typing import Dict, List, Sequence, Tuple

import torch
from detectron2.structures import ImageList
from torch import nn

from .image_text import image_text_config
from ...config import run_seed
from ..localization.maps import (
    MapSettings,
    bias_merged_grid_maps,
    grid_to_heatmaps,
    heatmap_instances,
    normalized_heatmaps,
)
from ..localization.prompts import finding_prompts
from ..text.frozen_features import FrozenTextFeatures


class PromptLocalizer(nn.Module):
    """Backbone + prompt maps. Subclasses implement `losses(images, features, batched_inputs)` and
    `grid_maps(features, texts)` ([B, P, h, w] similarity of each image's grid with each text)."""

    def __init__(self, *, backbone: nn.Module, text_features: FrozenTextFeatures, class_names: Sequence[str],
                 pixel_mean: Sequence[float], pixel_std: Sequence[float], prompt_granularity: str = "unelaborate",
                 prompt_template: str = "Findings suggesting {}.", map_settings: MapSettings = MapSettings(),
                 seed: int = 0):
        """
        Args:
            backbone: a detectron2 backbone whose outputs the subclass reads.
            text_features: the frozen text encoder with caches (a plain object, not a submodule).
            class_names: training findings, in contiguous-id order; the default (training) vocabulary.
            pixel_mean, pixel_std: input normalisation, per channel.
            prompt_granularity, prompt_template: how findings become prompts (see `finding_prompts`).
            map_settings: how grid maps become heat maps and boxes.
            seed: seed of the random choices made in training (the run's SEED).
        """
        super().__init__()
        self.backbone = backbone
        self.text = text_features
        self.training_class_names = list(class_names)
        self.prompt_granularity = prompt_granularity
        self.prompt_template = prompt_template
        self.map_settings = map_settings
        self.rng = random.Random(seed)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)
        self._vocabulary = list(self.training_class_names)
        finding_prompts(self._vocabulary, prompt_granularity, prompt_template)  # fail early on unknown findings

    @classmethod
    def base_config(cls, cfg) -> Dict:
        """Constructor arguments of the base class, from cfg."""
        return {
            **image_text_config(cfg),
            "prompt_granularity": cfg.MODEL.PROMPTS.GRANULARITY,
            "prompt_template": cfg.MODEL.PROMPTS.TEMPLATE,
            "map_settings": MapSettings.from_config(cfg),
            "seed": run_seed(cfg),
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def vocabulary(self) -> List[str]:
        """Findings whose prompt maps inference returns."""
        return list(self._vocabulary)

    def set_test_vocabulary(self, class_names: Sequence[str]) -> None:
        """Return maps (and boxes with these class ids) for `class_names` at inference."""
        names = list(class_names)
        if not names or not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"test vocabulary must be a non-empty list of finding names; got {names!r}")
        finding_prompts(names, self.prompt_granularity, self.prompt_template)
        self._vocabulary = names

    def reset_test_vocabulary(self) -> None:
        """Back to the training findings."""
        self._vocabulary = list(self.training_class_names)

    def prompt(self, finding: str, granularity: str = "") -> str:
        """The prompt of one finding at `granularity` ("" = cfg.MODEL.PROMPTS.GRANULARITY)."""
        return finding_prompts([finding], granularity or self.prompt_granularity, self.prompt_template)[0]

    def preprocess_image(self, batched_inputs: List[dict]) -> ImageList:
        """Normalised images of the batch, padded to one tensor."""
        images = [(x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        return ImageList.from_tensors(images, self.backbone.size_divisibility)

    def forward(self, batched_inputs: List[dict]):
        """Training: a dict of losses. Inference: per image "instances" and "localization" (see module doc)."""
        if not self.training:
            return self.inference(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        return self.losses(images, self.backbone(images.tensor), batched_inputs)

    def losses(self, images: ImageList, features: Dict[str, torch.Tensor], batched_inputs: List[dict]):
        raise NotImplementedError

    def grid_maps(self, features: Dict[str, torch.Tensor], texts: Sequence[str]) -> torch.Tensor:
        raise NotImplementedError

    def _prompts_of(self, record: dict) -> Tuple[List[str], List[str], List[int]]:
        """(findings, prompts, class ids) to map for one input: its "phrase", else the vocabulary's prompts.
        A phrase's class id is its "category_name"'s index in the vocabulary, or -1 (no boxes)."""
        if "phrase" in record:
            finding = record.get("category_name", "")
            class_id = self._vocabulary.index(finding) if finding in self._vocabulary else -1
            return [finding], [record["phrase"]], [class_id]
        prompts = finding_prompts(self._vocabulary, self.prompt_granularity, self.prompt_template)
        return list(self._vocabulary), prompts, list(range(len(prompts)))

    def _single(self, features: Dict[str, torch.Tensor], index: int) -> Dict[str, torch.Tensor]:
        """The features of image `index` alone (batch of one)."""
        return {name: value[index:index + 1] for name, value in features.items()}

    def _bias_merged(self, features, grid: torch.Tensor, prompts: List[str], padded_shape) -> torch.Tensor:
        """BBM of one image's prompt maps: image bias = mean of the vocabulary's min-max normalised maps on
        this image, text bias = each prompt's map on a blank (all-mean) image."""
        vocabulary_prompts = finding_prompts(self._vocabulary, self.prompt_granularity, self.prompt_template)
        vocabulary_maps = self.grid_maps(features, vocabulary_prompts)[0]
        low = vocabulary_maps.flatten(1).min(dim=1).values[:, None, None]
        high = vocabulary_maps.flatten(1).max(dim=1).values[:, None, None]
        image_bias = ((vocabulary_maps - low) / (high - low).clamp(min=1e-12)).mean(dim=0)
        blank = torch.zeros((1, *padded_shape), device=self.device)
        text_bias = self.grid_maps(self.backbone(blank), prompts)[0]
        return bias_merged_grid_maps(grid, image_bias, text_bias, self.map_settings.bbm_mode)

    @torch.no_grad()
    def inference(self, batched_inputs: List[dict]) -> List[dict]:
        """Per image: boxes from the prompt maps and the normalised heat maps at the original image size."""
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        padded_size = tuple(images.tensor.shape[-2:])
        results = []
        for index, record in enumerate(batched_inputs):
            findings, prompts, class_ids = self._prompts_of(record)
            single = self._single(features, index)
            grid = self.grid_maps(single, prompts)[0]
            if self.map_settings.bbm_enabled:
                grid = self._bias_merged(single, grid, prompts, images.tensor.shape[1:])
            image_size = tuple(images.image_sizes[index])
            output_size = (int(record.get("height", image_size[0])), int(record.get("width", image_size[1])))
            raw = grid_to_heatmaps(grid, image_size, padded_size, output_size, self.map_settings)
            results.append({
                "instances": heatmap_instances(raw, class_ids, self.map_settings),
                "localization": {"findings": findings, "prompts": prompts, "heatmaps": normalized_heatmaps(raw)},
            })
        return results
