"""Finding descriptions, class prompts, captions and pseudo-reports (cxr_codet.data.descriptions)."""
import re

import pytest

from cxr_codet.data.classes import NIH_CXR14_BBOX_CLASSES, NO_FINDING, VINDR_CXR_CLASSES
from cxr_codet.data.descriptions import (
    CAPTION_TEMPLATES,
    DESCRIPTIONS_FILE,
    check_granularity_list,
    class_prompts,
    compose_caption,
    compose_report,
    finding_descriptions,
)

ALL_FINDINGS = list(dict.fromkeys(VINDR_CXR_CLASSES + NIH_CXR14_BBOX_CLASSES))


def _mentions(text: str, finding: str) -> bool:
    """Whether `text` names `finding` (its class name or its short phrase) as whole words."""
    terms = {finding.lower(), finding_descriptions("unelaborate")[finding][0].lower()}
    return any(re.search(r"\b" + re.escape(t) + r"\b", text.lower()) for t in terms)


def test_class_vocabularies():
    assert len(VINDR_CXR_CLASSES) == 14 and VINDR_CXR_CLASSES[0] == "Aortic enlargement"
    assert VINDR_CXR_CLASSES[8] == "Nodule/Mass" and VINDR_CXR_CLASSES[13] == "Pulmonary fibrosis"
    assert NIH_CXR14_BBOX_CLASSES == (
        "Atelectasis", "Cardiomegaly", "Effusion", "Infiltrate", "Mass", "Nodule", "Pneumonia", "Pneumothorax"
    )
    assert NO_FINDING == "No finding"


def test_every_finding_has_three_sentences_and_a_phrase():
    assert DESCRIPTIONS_FILE.is_file()
    elaborate, unelaborate = finding_descriptions("elaborate"), finding_descriptions("unelaborate")
    for name in ALL_FINDINGS + [NO_FINDING]:
        sentences = elaborate[name]
        assert len(sentences) == 3, name
        assert all(s.endswith(".") and len(s.split()) >= 6 for s in sentences), name
        assert len(unelaborate[name]) == 1 and 0 < len(unelaborate[name][0].split()) <= 5, name


def test_texts_name_no_other_finding_of_their_vocabulary():
    """Captions can be parsed for concepts: a finding's texts never name another finding of its vocabulary."""
    elaborate = finding_descriptions("elaborate")
    for vocabulary in (VINDR_CXR_CLASSES, NIH_CXR14_BBOX_CLASSES):
        for name in vocabulary:
            for other in vocabulary:
                if other != name:
                    assert not _mentions(" ".join(elaborate[name]), other), (name, other)
    for other in ALL_FINDINGS:
        assert not _mentions(" ".join(elaborate[NO_FINDING]), other), other


def test_finding_descriptions_returns_a_copy():
    finding_descriptions()["Atelectasis"].append("changed")
    assert len(finding_descriptions()["Atelectasis"]) == 3


def test_unknown_granularity_and_finding_are_named():
    with pytest.raises(ValueError, match=r"unknown description granularity 'fine'.*'elaborate', 'unelaborate'"):
        finding_descriptions("fine")
    with pytest.raises(ValueError, match="unknown description granularity 'short'"):
        compose_caption(["Atelectasis"], "short")
    with pytest.raises(KeyError, match=r"no description for finding 'Tumour'.*known findings.*Atelectasis"):
        class_prompts(["Atelectasis", "Tumour"])


def test_granularity_lists_are_checked_with_the_config_key_named():
    assert check_granularity_list(("elaborate", "unelaborate"), "KEY") == ["elaborate", "unelaborate"]
    with pytest.raises(ValueError, match=r"MODEL.X.GRANULARITIES must be a non-empty list of .*got \['verbose'\]"):
        check_granularity_list(["verbose"], "MODEL.X.GRANULARITIES")
    with pytest.raises(ValueError, match=r"must be a non-empty list of .*got \[\]"):
        check_granularity_list([], "MODEL.X.GRANULARITIES")


def test_class_prompts_one_text_per_class_in_order():
    prompts = class_prompts(VINDR_CXR_CLASSES)
    assert len(prompts) == 14
    for name, prompt in zip(VINDR_CXR_CLASSES, prompts):
        assert prompt == " ".join(finding_descriptions()[name])
    assert class_prompts(["ILD", "Pleural effusion"], "unelaborate") == [
        "interstitial lung disease (ILD)",
        "pleural effusion",
    ]
    assert class_prompts(["pleural EFFUSION"], "unelaborate") == ["pleural effusion"]  # case-insensitive


@pytest.mark.parametrize("granularity", ["elaborate", "unelaborate"])
def test_captions_mention_every_finding(granularity):
    for name in ALL_FINDINGS:
        caption = compose_caption([name], granularity)
        assert _mentions(caption, name), caption
        assert name.lower() in caption.lower()
    caption = compose_caption(["Cardiomegaly", "Pleural effusion", "Nodule/Mass"], granularity, index=2)
    assert caption.startswith("Radiograph reveals cardiomegaly, pleural effusion and nodule/mass.")


def test_caption_templates_follow_index_and_are_deterministic():
    openings = [compose_caption(["Atelectasis"], "unelaborate", index=i) for i in range(5)]
    assert openings == [t.format("atelectasis") for t in CAPTION_TEMPLATES]
    assert openings[0] == "Chest X-ray showing atelectasis."
    assert compose_caption(["Atelectasis"], index=7) == compose_caption(["Atelectasis"], index=2)
    assert compose_caption(["Atelectasis", "ILD"]) == compose_caption(["Atelectasis", "ILD"])


def test_elaborate_caption_appends_the_sentences():
    caption = compose_caption(["Pneumothorax", "Pneumothorax"], "elaborate", index=1)
    sentences = finding_descriptions()["Pneumothorax"]
    assert caption == "Findings: pneumothorax. " + " ".join(sentences)  # repeats are dropped


def test_normal_study_caption():
    assert compose_caption([], "unelaborate", index=4) == "Impression: no finding."
    assert compose_caption([], "elaborate") == compose_caption([NO_FINDING], "elaborate")
    assert "no finding" in compose_caption([]).lower()
    with pytest.raises(ValueError, match="'No finding' cannot be combined with other findings"):
        compose_caption([NO_FINDING, "Atelectasis"])


def test_reports_have_findings_and_impression_sections():
    report = compose_report(["Atelectasis", "Cardiomegaly"])
    assert report.startswith("FINDINGS: ") and "IMPRESSION: Atelectasis and cardiomegaly." in report
    for sentence in finding_descriptions()["Atelectasis"] + finding_descriptions()["Cardiomegaly"]:
        assert sentence in report
    short = compose_report(["Pleural effusion"], "unelaborate")
    assert short == "FINDINGS: Findings suggesting pleural effusion. IMPRESSION: Pleural effusion."
    sentences = [s for s in re.split(r"(?<=\.)\s+", compose_report(["Nodule/Mass", "ILD"], "unelaborate")) if s]
    assert len(sentences) >= 3 and all(len(s.split()) >= 2 for s in sentences)
    normal = compose_report([])
    assert "IMPRESSION: No finding." in normal and all(not _mentions(normal, f) for f in ALL_FINDINGS)
