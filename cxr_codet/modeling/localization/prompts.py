"""Text prompts for findings, built from the finding descriptions at either granularity."""
from typing import List, Sequence

from ...data.descriptions import GRANULARITIES, class_prompts
from ..text.class_embeddings import apply_template


def finding_prompts(findings: Sequence[str], granularity: str, template: str) -> List[str]:
    """One prompt per finding: the short phrase put into `template` ("unelaborate", e.g. "Findings suggesting
    pleural effusion.") or the finding's three description sentences ("elaborate")."""
    if granularity not in GRANULARITIES:
        raise ValueError(f"prompt granularity must be one of {list(GRANULARITIES)}, got {granularity!r}")
    texts = class_prompts(list(findings), granularity)
    if granularity == "unelaborate":
        return [apply_template(template, text) for text in texts]
    return texts
