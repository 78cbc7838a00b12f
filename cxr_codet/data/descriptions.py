"""Finding descriptions at two granularities, and the class prompts, captions and pseudo-reports built from them.

The texts live in datasets/metadata/finding_descriptions.json: "unelaborate" is the bare finding as a short
phrase, "elaborate" is three radiology-style sentences (appearance, typical location, what it suggests).
Finding names are matched case-insensitively ("Pleural Effusion" finds "Pleural effusion").
"""
import copy
import functools
import json
from pathlib import Path
from typing import Dict, List, Sequence

from .classes import NO_FINDING

DESCRIPTIONS_FILE = Path(__file__).resolve().parents[2] / "datasets" / "metadata" / "finding_descriptions.json"
GRANULARITIES = ("elaborate", "unelaborate")
ELABORATE_SENTENCES = 3

# Report-style openings of a caption; `compose_caption(..., index=i)` uses CAPTION_TEMPLATES[i % 5].
CAPTION_TEMPLATES = (
    "Chest X-ray showing {}.",
    "Findings: {}.",
    "Radiograph reveals {}.",
    "Abnormalities: {}.",
    "Impression: {}.",
)


@functools.lru_cache(maxsize=None)
def _load_descriptions() -> Dict[str, Dict[str, List[str]]]:
    """Read and validate the descriptions file once: {finding: {granularity: [texts]}}."""
    if not DESCRIPTIONS_FILE.is_file():
        raise FileNotFoundError(f"finding descriptions file {DESCRIPTIONS_FILE} is missing")
    with open(DESCRIPTIONS_FILE, encoding="utf-8") as f:
        findings = json.load(f)["findings"]
    for name, entry in findings.items():
        for granularity in GRANULARITIES:
            texts = entry.get(granularity)
            if not texts or not all(isinstance(t, str) and t.strip() for t in texts):
                raise ValueError(f"{DESCRIPTIONS_FILE}: finding {name!r} has no {granularity!r} texts")
        if len(entry["elaborate"]) != ELABORATE_SENTENCES:
            raise ValueError(
                f"{DESCRIPTIONS_FILE}: finding {name!r} has {len(entry['elaborate'])} elaborate sentences, "
                f"expected {ELABORATE_SENTENCES}"
            )
    return findings


@functools.lru_cache(maxsize=None)
def _names_by_lowercase() -> Dict[str, str]:
    return {name.lower(): name for name in _load_descriptions()}


def check_granularity_list(granularities: Sequence[str], key: str) -> List[str]:
    """`granularities` as a list, or a ValueError naming the config `key` if it is empty or has unknown ones."""
    values = list(granularities)
    if not values or any(g not in GRANULARITIES for g in values):
        raise ValueError(f"{key} must be a non-empty list of {list(GRANULARITIES)}, got {values}")
    return values


def _check_granularity(granularity: str) -> None:
    if granularity not in GRANULARITIES:
        raise ValueError(f"unknown description granularity {granularity!r}; valid choices: {list(GRANULARITIES)}")


def _texts(finding: str, granularity: str) -> List[str]:
    """The texts of one finding (case-insensitive name) at one granularity."""
    _check_granularity(granularity)
    canonical = _names_by_lowercase().get(str(finding).lower())
    if canonical is None:
        raise KeyError(
            f"no description for finding {finding!r}; known findings: {list(_load_descriptions())} "
            f"(edit {DESCRIPTIONS_FILE} to add one)"
        )
    return _load_descriptions()[canonical][granularity]


def _phrase(finding: str) -> str:
    return _texts(finding, "unelaborate")[0]


def finding_descriptions(granularity: str = "elaborate") -> Dict[str, List[str]]:
    """Every known finding's texts at `granularity`: 3 sentences ("elaborate") or [short phrase] ("unelaborate")."""
    _check_granularity(granularity)
    return {name: list(entry[granularity]) for name, entry in copy.deepcopy(_load_descriptions()).items()}


def class_prompts(class_names: Sequence[str], granularity: str = "elaborate") -> List[str]:
    """One text per class, in order, for embedding a classifier vocabulary (the sentences joined, or the phrase)."""
    return [" ".join(_texts(name, granularity)) for name in class_names]


def _normalise_findings(finding_names: Sequence[str]) -> List[str]:
    """Drop repeats (first occurrence wins); "No finding" alone means a normal study, beside findings it is an error."""
    unique = list(dict.fromkeys(finding_names))
    has_no_finding = any(str(name).lower() == NO_FINDING.lower() for name in unique)
    if has_no_finding and len(unique) > 1:
        raise ValueError(f"{NO_FINDING!r} cannot be combined with other findings: {unique}")
    return [] if has_no_finding else unique


def _join_phrases(phrases: List[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def compose_caption(finding_names: Sequence[str], granularity: str = "elaborate", index: int = 0) -> str:
    """A deterministic caption for an image with these findings; `index` picks the template (modulo 5).

    The caption is the template filled with the findings' short phrases; "elaborate" appends each finding's
    three sentences. No findings (or ["No finding"]) gives a normal-study caption.
    """
    _check_granularity(granularity)
    findings = _normalise_findings(finding_names) or [NO_FINDING]
    caption = CAPTION_TEMPLATES[index % len(CAPTION_TEMPLATES)].format(_join_phrases([_phrase(f) for f in findings]))
    if granularity == "elaborate":
        caption = " ".join([caption] + [s for f in findings for s in _texts(f, "elaborate")])
    return caption


def compose_report(finding_names: Sequence[str], granularity: str = "elaborate") -> str:
    """A multi-sentence pseudo-report (FINDINGS then IMPRESSION) for datasets that have no real reports.

    Every sentence has several words, so sentence-splitting text encoders never see a one-word sentence.
    """
    _check_granularity(granularity)
    findings = _normalise_findings(finding_names) or [NO_FINDING]
    if granularity == "elaborate":
        sentences = [s for f in findings for s in _texts(f, "elaborate")]
    else:
        sentences = [f"Findings suggesting {_phrase(f)}." for f in findings]
    impression = _join_phrases([_phrase(f) for f in findings])
    return f"FINDINGS: {' '.join(sentences)} IMPRESSION: {impression[0].upper()}{impression[1:]}."
