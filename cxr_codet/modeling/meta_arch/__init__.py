"""CXR-CoDet's meta-architecture (registered in detectron2's META_ARCH_REGISTRY) and batch concept groups."""
from .concept_groups import ConceptGroups, concept_groups_from_batch
from .cxr_codet import CXRCoDet

__all__ = ["CXRCoDet", "ConceptGroups", "concept_groups_from_batch"]
