"""modeling/roi_heads/classifier.py and open_vocab_fast_rcnn.py: the cosine classifier with a zero background
logit and the inference-only vocabulary switch."""
import pytest
import torch

from cxr_codet.modeling.roi_heads.classifier import OpenVocabularyClassifier


def test_classifier_scores_are_scaled_cosines_with_a_zero_background():
    torch.manual_seed(0)
    embeddings = torch.randn(3, 5)
    classifier = OpenVocabularyClassifier(4, embeddings, norm_temperature=50.0)
    x = torch.randn(6, 4)
    logits = classifier(x)
    projected = classifier.proj(x)
    expected = 50.0 * torch.nn.functional.cosine_similarity(projected[:, None], embeddings[None], dim=-1)
    assert logits.shape == (6, 4)
    assert torch.allclose(logits[:, :3], expected, atol=1e-4)
    assert torch.equal(logits[:, 3], torch.zeros(6))


def test_set_vocabulary_switches_inference_only_and_reset_restores():
    torch.manual_seed(0)
    classifier = OpenVocabularyClassifier(4, torch.randn(14, 5))
    x = torch.randn(2, 4)
    classifier.set_vocabulary(torch.randn(8, 5))
    classifier.train()
    assert classifier(x).shape == (2, 15)  # training keeps the training vocabulary
    classifier.eval()
    assert classifier(x).shape == (2, 9)
    classifier.reset_vocabulary()
    assert classifier(x).shape == (2, 15)
    assert "test_class_embeddings" not in classifier.state_dict()
    with pytest.raises(ValueError, match="dimension 7, but the classifier was built for 5-d"):
        classifier.set_vocabulary(torch.randn(8, 7))
    with pytest.raises(ValueError, match=r"rows \[1\] are all zero"):
        classifier.set_vocabulary(torch.tensor([[1.0, 0, 0, 0, 0], [0.0, 0, 0, 0, 0]]))
