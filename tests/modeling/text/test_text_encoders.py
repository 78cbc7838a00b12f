"""Frozen text encoders: every backend on a tiny model saved in tmp_path, the bundled MiniLM, class
embeddings, the on-disk cache, precomputed files and the dump tool."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import REPO_ROOT, make_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog

from cxr_codet.data.classes import NIH_CXR14_BBOX_CLASSES, VINDR_CXR_CLASSES
from cxr_codet.data.descriptions import class_prompts, finding_descriptions
from cxr_codet.modeling.text import (
    TEXT_ENCODER_REGISTRY,
    TextEncoder,
    build_class_embeddings,
    build_text_encoder,
    build_text_encoder_from_spec,
)
from cxr_codet.modeling.text import class_embeddings as class_embeddings_module
from cxr_codet.modeling.text import (
    class_texts,
    encode_class_names,
    load_class_embeddings,
    pool_sentences_and_report,
    resolve_vocabulary,
    text_encoder_spec,
)
from cxr_codet.modeling.text.dump import (
    dump_caption_embeddings,
    dump_class_embeddings,
)
from cxr_codet.modeling.text.dump import main as dump_main
from cxr_codet.modeling.text.dump import metadata_path
from cxr_codet.modeling.text.word_features import TokenEmbeddings

BIOMEDBERT_HUB_NAME = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"


WORDS = (
    "the a of and in is with no seen chest x ray showing pleural effusion fluid space lung opacity nodule mass "
    "heart enlarged right left base small large there cardiomegaly atelectasis pneumothorax consolidation "
    "aortic enlargement calcification infiltration lesion thickening fibrosis pulmonary other ild"
).split()


PIECES = ["##s", "##ing", "##ed", "##al", "##ar", "##y", "##ion"]


VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS + PIECES + list("abcdefghijklmnopqrstuvwxyz.,!?/")


def tiny_texts():
    return ["pleural effusion", "fluid in the pleural space", "heart enlarged", "small nodule in the left lung"]


def save_tiny_bert(directory: Path, seed: int = 0) -> Path:
    """A 2-layer, 32-wide BERT with a ~100-token WordPiece vocabulary, saved with its tokenizer."""
    from transformers import BertConfig, BertModel, BertTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    BertTokenizer(vocab={token: index for index, token in enumerate(VOCAB)}).save_pretrained(directory)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(directory)
    return directory


def copy_bert_files(bert_dir: Path, target: Path, with_config: bool):
    """Copy the tokenizer files (and the BERT config.json) but never the BERT weights into `target`."""
    for file in bert_dir.iterdir():
        if file.name.startswith("tokenizer") or file.name in ("vocab.txt", "special_tokens_map.json") or (
                with_config and file.name == "config.json"):
            (target / file.name).write_bytes(file.read_bytes())


def tiny_vision_cfg():
    return {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16}


def save_open_clip_dir(directory: Path, model_cfg: dict, build_text_cfg: dict = None) -> torch.nn.Module:
    """Write open_clip_config.json + open_clip_pytorch_model.bin (the hub layout); returns the saved model.
    `build_text_cfg` replaces text_cfg while building (e.g. to read the tiny BERT from another folder)."""
    import open_clip

    directory.mkdir(parents=True, exist_ok=True)
    build_cfg = dict(model_cfg, text_cfg=build_text_cfg or model_cfg["text_cfg"])
    with open(directory / "open_clip_config.json", "w") as f:
        json.dump({"model_cfg": build_cfg, "preprocess_cfg": {}}, f)
    torch.manual_seed(0)
    model = open_clip.create_model(f"local-dir:{directory}").eval()
    torch.save(model.state_dict(), directory / "open_clip_pytorch_model.bin")
    with open(directory / "open_clip_config.json", "w") as f:
        json.dump({"model_cfg": model_cfg, "preprocess_cfg": {}}, f)
    return model


def cosine(a, b):
    return float(F.cosine_similarity(a, b, dim=0))


class RecordingEncoder(TextEncoder):
    """A deterministic stand-in: each text maps to a fixed random vector seeded by its content."""

    backend = "recording"

    def __init__(self, dim=8):
        super().__init__("recording", batch_size=3)
        self.dim = dim
        self.seen = []
        self._freeze()

    def _encode_batch(self, texts):
        self.seen.extend(texts)
        vectors = [torch.randn(self.dim, generator=torch.Generator().manual_seed(sum(map(ord, t)) * 31 + len(t)))
                   for t in texts]
        return torch.stack(vectors) * 3.0


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory) -> Path:
    return save_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="module")
def tiny_bert(tiny_bert_dir):
    return build_text_encoder_from_spec("transformers", str(tiny_bert_dir), pooling="mean", batch_size=2)


@pytest.fixture(scope="module")
def minilm():
    return build_text_encoder_from_spec("sentence_transformers")


def text_cfg(**text_encoder_keys):
    cfg = make_cfg(tiny=False)
    for key, value in text_encoder_keys.items():
        cfg.MODEL.TEXT_ENCODER[key] = value
    return cfg


def test_registry_names_the_four_backends():
    names = {name for name, _ in TEXT_ENCODER_REGISTRY}
    assert {"open_clip", "transformers", "sentence_transformers", "precomputed"} <= names
    with pytest.raises(KeyError, match="unknown text encoder backend 'bert'.*registered"):
        build_text_encoder_from_spec("bert", "x")


def test_config_defaults_and_spec_reads_only_the_backends_keys(tiny_bert_dir):
    section = text_cfg().MODEL.TEXT_ENCODER
    assert section.BACKEND == "sentence_transformers" and section.NAME == ""
    assert section.POOLING == "mean" and section.CLASS_EMBEDDINGS_PATH == ""
    prompts = text_cfg().MODEL.PROMPTS
    assert prompts.GRANULARITY == "elaborate" and prompts.TEMPLATE == "a chest x-ray showing {}."
    assert text_encoder_spec(text_cfg()) == {"backend": "sentence_transformers", "name_or_path": "",
                                             "batch_size": 64, "device": "cpu"}
    spec = text_encoder_spec(text_cfg(BACKEND="transformers", NAME=str(tiny_bert_dir), POOLING="cls"))
    assert spec["pooling"] == "cls" and spec["max_length"] == 0 and "pretrained" not in spec
    assert text_encoder_spec(text_cfg(BACKEND="open_clip", PRETRAINED="openai"))["pretrained"] == "openai"


def test_build_text_encoder_from_cfg(tiny_bert_dir):
    encoder = build_text_encoder(text_cfg(BACKEND="transformers", NAME=str(tiny_bert_dir), POOLING="cls"))
    assert encoder.pooling == "cls" and encoder.dim == 32
    assert encoder.spec["backend"] == "transformers" and encoder.spec["pooling"] == "cls"


def test_encoder_is_frozen_inside_a_training_parent(tiny_bert):
    parent = torch.nn.ModuleDict({"text": tiny_bert, "head": torch.nn.Linear(2, 2)})
    parent.train()
    assert parent["head"].training and not tiny_bert.training
    assert not any(module.training for module in tiny_bert.modules())
    assert all(not p.requires_grad for p in tiny_bert.parameters())
    assert not tiny_bert.encode(["pleural effusion"]).requires_grad


def test_encode_checks_its_input(tiny_bert):
    assert tiny_bert.encode([]).shape == (0, 32)
    with pytest.raises(TypeError, match="expected a list of texts, got a single str"):
        tiny_bert.encode("pleural effusion")
    with pytest.raises(TypeError, match="text 1 is a int"):
        tiny_bert.encode(["ok", 3])


def test_transformers_shapes_determinism_and_distinct_texts(tiny_bert):
    first = tiny_bert.encode(tiny_texts())
    assert first.shape == (4, 32) and first.dtype == torch.float32 and first.device.type == "cpu"
    assert torch.equal(first, tiny_bert.encode(tiny_texts()))
    assert not torch.allclose(first[0], first[1])
    # batch_size 2 (two batches) matches one big batch: padding does not leak into the pooling
    tiny_bert.batch_size = 64
    try:
        assert torch.allclose(first, tiny_bert.encode(tiny_texts()), atol=1e-5)
    finally:
        tiny_bert.batch_size = 2


def test_transformers_pooling_matches_the_hidden_states(tiny_bert_dir, tiny_bert):
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    model = AutoModel.from_pretrained(tiny_bert_dir).eval()
    texts = ["pleural effusion", "heart enlarged with small nodule"]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    assert torch.allclose(tiny_bert.encode(texts), (hidden * mask).sum(1) / mask.sum(1), atol=1e-5)
    cls_encoder = build_text_encoder_from_spec("transformers", str(tiny_bert_dir), pooling="cls")
    assert torch.allclose(cls_encoder.encode(texts), hidden[:, 0], atol=1e-5)


def test_transformers_bad_options_and_missing_model(tiny_bert_dir, tmp_path):
    with pytest.raises(ValueError, match="POOLING must be one of"):
        build_text_encoder_from_spec("transformers", str(tiny_bert_dir), pooling="max")
    with pytest.raises(ValueError, match="MAX_LENGTH 100 exceeds the model's 64 position embeddings"):
        build_text_encoder_from_spec("transformers", str(tiny_bert_dir), max_length=100)
    with pytest.raises(OSError, match="could not load .*MODEL.TEXT_ENCODER.NAME"):
        build_text_encoder_from_spec("transformers", str(tmp_path / "no_such_model"))


def test_word_pieces_are_summed_into_words_over_the_last_layers(tiny_bert_dir, tiny_bert):
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    model = AutoModel.from_pretrained(tiny_bert_dir).eval()
    text = "pleural effusions seen"
    pieces = tokenizer.tokenize(text)
    assert pieces == ["pleural", "effusion", "##s", "seen"]
    with torch.no_grad():
        states = model(**tokenizer([text], return_tensors="pt"), output_hidden_states=True).hidden_states
    summed = torch.stack(states[-4:]).sum(0)[0]  # 3 states for 2 layers: all of them; positions: CLS + 4 + SEP
    tokens = tiny_bert.encode_tokens([text, "heart"])
    assert tokens.words == [["pleural", "effusions", "seen"], ["heart"]]
    assert tokens.embeddings.shape == (2, 3, 32)
    assert tokens.mask.tolist() == [[True, True, True], [True, False, False]]
    assert torch.allclose(tokens.embeddings[0, 1], summed[2] + summed[3], atol=1e-5)
    assert torch.allclose(tokens.embeddings[0, 2], summed[4], atol=1e-5)
    assert torch.count_nonzero(tokens.embeddings[1, 1:]) == 0


def test_encode_tokens_pads_across_batches_and_truncates(tiny_bert_dir, tiny_bert):
    texts = ["heart", "a", "small nodule in the left lung base", "mass"]  # batches of 2: widths 1 and 7
    tokens = tiny_bert.encode_tokens(texts)
    assert tokens.embeddings.shape == (4, 7, 32)
    assert tokens.mask.sum(1).tolist() == [1, 1, 7, 1]
    short = build_text_encoder_from_spec("transformers", str(tiny_bert_dir), max_length=5)
    assert short.encode_tokens(["small nodule in the left lung base"]).words == [["small", "nodule", "in"]]


def test_sentence_and_report_pooling():
    embeddings = torch.arange(2 * 5 * 2, dtype=torch.float32).view(2, 5, 2)
    words = [["heart", "enlarged", ".", "no", "effusion"], ["mass", "!"]]
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    embeddings[1, 2:] = 0
    pooled = pool_sentences_and_report(TokenEmbeddings(embeddings, words, mask))
    assert pooled.sentence_texts == [["heart enlarged", "no effusion"], ["mass"]]
    assert pooled.sentence_mask.tolist() == [[True, True], [True, False]]
    assert torch.allclose(pooled.sentences[0, 0], embeddings[0, :2].mean(0))
    assert torch.allclose(pooled.sentences[0, 1], embeddings[0, 3:5].mean(0))
    assert torch.allclose(pooled.sentences[1, 0], embeddings[1, 0])
    assert torch.allclose(pooled.report[0], embeddings[0].mean(0))
    assert torch.allclose(pooled.report[1], embeddings[1, :2].mean(0))


def test_encode_reports_end_to_end(tiny_bert):
    reports = tiny_bert.encode_reports(["heart enlarged. no pleural effusion.", "mass"])
    assert reports.sentences.shape == (2, 2, 32) and reports.report.shape == (2, 32)
    assert reports.sentence_texts == [["heart enlarged", "no pleural effusion"], ["mass"]]


def test_minilm_is_offline_and_semantic(minilm):
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    assert minilm.dim == 384
    effusion, paraphrase, car = minilm.encode(["pleural effusion", "fluid in the pleural space", "a red sports car"])
    assert cosine(effusion, paraphrase) > cosine(effusion, car) + 0.2


def test_minilm_class_embeddings_find_their_class(minilm):
    embeddings = encode_class_names(minilm, list(VINDR_CXR_CLASSES), "unelaborate")
    assert embeddings.shape == (14, 384)
    assert torch.allclose(embeddings.norm(dim=1), torch.ones(14), atol=1e-5)
    queries = F.normalize(minilm.encode([f"chest x-ray with {name.lower()}" for name in VINDR_CXR_CLASSES]), dim=-1)
    correct = (queries @ embeddings.t()).argmax(1) == torch.arange(14)
    assert int(correct.sum()) >= 12, [VINDR_CXR_CLASSES[i] for i in (queries @ embeddings.t()).argmax(1)]


def test_minilm_word_features(minilm):
    tokens = minilm.encode_tokens(["Cardiomegaly is seen."])
    assert tokens.words == [["cardiomegaly", "is", "seen", "."]]
    assert tokens.embeddings.shape == (1, 4, 384)


def biomedclip_model_cfg(hf_model_name):
    return {
        "embed_dim": 16,
        "vision_cfg": tiny_vision_cfg(),
        "text_cfg": {"hf_model_name": hf_model_name, "hf_tokenizer_name": hf_model_name, "hf_proj_type": "mlp",
                     "hf_pooler_type": "cls_last_hidden_state_pooler", "context_length": 32},
    }


def check_open_clip_encoder(encoder, saved_model, model_dir):
    import open_clip

    texts = tiny_texts()
    first = encoder.encode(texts)
    assert first.shape == (4, 16) and first.dtype == torch.float32 and encoder.dim == 16
    assert torch.equal(first, encoder.encode(texts))
    assert not torch.allclose(first[0], first[2])
    assert encoder.model.visual is None
    tokenizer = open_clip.get_tokenizer(f"local-dir:{model_dir}")
    with torch.no_grad():
        expected = saved_model.encode_text(tokenizer(texts))
    assert torch.allclose(first, expected, atol=1e-5)  # the saved weights were loaded, not a random init


def test_open_clip_biomedclip_layout_with_local_text_tower(tmp_path, tiny_bert_dir):
    model_dir = tmp_path / "biomedclip_tiny"
    model_dir.mkdir()
    copy_bert_files(tiny_bert_dir, model_dir, with_config=False)
    saved = save_open_clip_dir(model_dir, biomedclip_model_cfg(str(tiny_bert_dir)))
    encoder = build_text_encoder_from_spec("open_clip", str(model_dir))
    check_open_clip_encoder(encoder, saved, model_dir)


def test_open_clip_biomedclip_hub_download_loads_offline_with_bert_config(tmp_path, tiny_bert_dir):
    """A downloaded BiomedCLIP folder names its text tower by hub id; its config.json makes it load offline."""
    model_dir = tmp_path / "biomedclip_hub_copy"
    model_dir.mkdir()
    copy_bert_files(tiny_bert_dir, model_dir, with_config=True)
    saved = save_open_clip_dir(model_dir, biomedclip_model_cfg(BIOMEDBERT_HUB_NAME),
                               build_text_cfg=biomedclip_model_cfg(str(tiny_bert_dir))["text_cfg"])
    encoder = build_text_encoder_from_spec("open_clip", f"local-dir:{model_dir}")
    check_open_clip_encoder(encoder, saved, model_dir)


def test_open_clip_plain_clip_local_dir(tmp_path):
    model_cfg = {"embed_dim": 16, "vision_cfg": tiny_vision_cfg(),
                 "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2}}
    model_dir = tmp_path / "clip_tiny"
    saved = save_open_clip_dir(model_dir, model_cfg)
    encoder = build_text_encoder(text_cfg(BACKEND="open_clip", NAME=str(model_dir)))
    check_open_clip_encoder(encoder, saved, model_dir)


def test_open_clip_refuses_what_it_cannot_load(tmp_path):
    with pytest.raises(ValueError, match="needs MODEL.TEXT_ENCODER.PRETRAINED"):
        build_text_encoder_from_spec("open_clip", "ViT-B-32")
    with pytest.raises(ValueError, match="PRETRAINED='openai' applies only to built-in"):
        build_text_encoder_from_spec("open_clip", "hf-hub:org/repo", pretrained="openai")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="open_clip_config.json is missing"):
        build_text_encoder_from_spec("open_clip", str(tmp_path / "empty"))
    with pytest.raises(RuntimeError, match="could not load 'hf-hub:microsoft/BiomedCLIP.*local directory"):
        build_text_encoder_from_spec("open_clip")  # the default (BiomedCLIP) needs the network


def test_precomputed_files_in_both_orientations(tmp_path):
    matrix = torch.randn(5, 12)
    np.save(tmp_path / "classes.npy", matrix.numpy())
    torch.save(matrix.t().clone(), tmp_path / "classes_t.pt")
    assert torch.equal(load_class_embeddings(str(tmp_path / "classes.npy"), 5), matrix)
    assert torch.equal(load_class_embeddings(str(tmp_path / "classes_t.pt"), 5), matrix)
    with pytest.raises(ValueError, match=r"classes.npy has shape \(5, 12\).*the 7 classes"):
        load_class_embeddings(str(tmp_path / "classes.npy"), 7)
    np.save(tmp_path / "cube.npy", np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match=r"cube.npy has shape \(2, 3, 4\), expected a 2-D"):
        load_class_embeddings(str(tmp_path / "cube.npy"), 2)
    with pytest.raises(ValueError, match="unsupported suffix '.txt'"):
        load_class_embeddings(str(tmp_path / "classes.txt"), 5)
    with pytest.raises(FileNotFoundError, match="missing.npy does not exist"):
        load_class_embeddings(str(tmp_path / "missing.npy"), 5)


def test_precomputed_backend_serves_classes_but_encodes_nothing(tmp_path):
    matrix = torch.randn(14, 6)
    np.save(tmp_path / "vindr.npy", matrix.numpy())
    encoder = build_text_encoder_from_spec("precomputed", str(tmp_path / "vindr.npy"))
    assert encoder.dim == 6
    embeddings = encode_class_names(encoder, list(VINDR_CXR_CLASSES))
    assert torch.allclose(embeddings, F.normalize(matrix, dim=-1))
    with pytest.raises(NotImplementedError, match="cannot encode new texts such as 'pleural effusion'"):
        encoder.encode(["pleural effusion"])
    with pytest.raises(ValueError, match="NAME must be the .npy/.pt embedding file"):
        build_text_encoder_from_spec("precomputed", "")


def test_elaborate_class_texts_are_the_description_sentences():
    descriptions = finding_descriptions("elaborate")
    groups = class_texts(list(VINDR_CXR_CLASSES) + list(NIH_CXR14_BBOX_CLASSES), "elaborate")
    for name, group in zip(list(VINDR_CXR_CLASSES) + list(NIH_CXR14_BBOX_CLASSES), groups):
        canonical = next(key for key in descriptions if key.lower() == name.lower())
        assert group == descriptions[canonical], name


def test_unelaborate_class_texts_use_the_template():
    phrase = class_prompts(["Pleural effusion"], "unelaborate")[0]
    assert class_texts(["Pleural effusion"], "unelaborate", "x-ray: {}") == [[f"x-ray: {phrase}"]]
    assert class_texts(["Pleural effusion"], "unelaborate", "") == [[phrase]]
    with pytest.raises(ValueError, match="exactly one '{}'"):
        class_texts(["Pleural effusion"], "unelaborate", "no placeholder")
    with pytest.raises(ValueError, match="granularity must be one of"):
        class_texts(["Pleural effusion"], "verbose")


def test_elaborate_embedding_is_the_normalised_mean_of_sentence_embeddings():
    encoder = RecordingEncoder()
    names = ["Pleural effusion", "Cardiomegaly"]
    embeddings = encode_class_names(encoder, names, "elaborate")
    groups = class_texts(names, "elaborate")
    assert encoder.seen == [sentence for group in groups for sentence in group]
    for row, group in enumerate(groups):
        sentence_embeddings = F.normalize(RecordingEncoder().encode(group), dim=-1)
        assert torch.allclose(embeddings[row], F.normalize(sentence_embeddings.mean(0), dim=0), atol=1e-6)
    unelaborate = encode_class_names(encoder, names, "unelaborate", "a chest x-ray showing {}.")
    assert torch.allclose(unelaborate.norm(dim=1), torch.ones(2), atol=1e-6)
    assert encoder.seen[-2:] == [f"a chest x-ray showing {p}." for p in class_prompts(names, "unelaborate")]


def test_build_class_embeddings_from_path(tmp_path):
    matrix = torch.randn(8, 5)
    np.save(tmp_path / "nih.npy", matrix.numpy())
    embeddings = build_class_embeddings(text_cfg(CLASS_EMBEDDINGS_PATH=str(tmp_path / "nih.npy")),
                                        list(NIH_CXR14_BBOX_CLASSES))
    assert torch.allclose(embeddings, F.normalize(matrix, dim=-1))
    by_backend = build_class_embeddings(text_cfg(BACKEND="precomputed", NAME=str(tmp_path / "nih.npy")),
                                        list(NIH_CXR14_BBOX_CLASSES))
    assert torch.allclose(by_backend, F.normalize(matrix, dim=-1))
    with pytest.raises(ValueError, match=r"nih.npy has shape \(8, 5\).*the 14 classes"):
        build_class_embeddings(text_cfg(CLASS_EMBEDDINGS_PATH=str(tmp_path / "nih.npy")), list(VINDR_CXR_CLASSES))


def test_build_class_embeddings_cache_skips_the_encoder(tmp_path, tiny_bert_dir, monkeypatch):
    cfg = text_cfg(BACKEND="transformers", NAME=str(tiny_bert_dir), CACHE_DIR=str(tmp_path / "cache"))
    cfg.MODEL.PROMPTS.GRANULARITY = "unelaborate"
    names = list(NIH_CXR14_BBOX_CLASSES)
    first = build_class_embeddings(cfg, names)
    assert first.shape == (8, 32) and len(list((tmp_path / "cache").glob("transformers-*.pt"))) == 1

    def no_encoder(*args, **kwargs):
        raise AssertionError("the encoder was built although the cache holds the embeddings")

    monkeypatch.setattr(class_embeddings_module, "build_text_encoder_from_spec", no_encoder)
    assert torch.equal(build_class_embeddings(cfg, names), first)
    cfg.MODEL.PROMPTS.TEMPLATE = "{} on a radiograph"  # other texts: a different cache entry
    with pytest.raises(AssertionError, match="the encoder was built"):
        build_class_embeddings(cfg, names)


def test_resolve_vocabulary():
    assert resolve_vocabulary("vindr_cxr") == list(VINDR_CXR_CLASSES)
    assert resolve_vocabulary("nih_cxr14") == list(NIH_CXR14_BBOX_CLASSES)
    DatasetCatalog.register("text_encoder_test_vocab", lambda: [])
    MetadataCatalog.get("text_encoder_test_vocab").thing_classes = ["Mass", "Nodule"]
    try:
        assert resolve_vocabulary("text_encoder_test_vocab") == ["Mass", "Nodule"]
    finally:
        DatasetCatalog.remove("text_encoder_test_vocab")
        MetadataCatalog.remove("text_encoder_test_vocab")
    with pytest.raises(KeyError, match="unknown vocabulary 'no_such'"):
        resolve_vocabulary("no_such")


def test_dump_class_embeddings_npy_and_pt(tmp_path):
    encoder = RecordingEncoder()
    names = ["Atelectasis", "Mass"]
    written = dump_class_embeddings(encoder, names, str(tmp_path / "out" / "classes.npy"), "unelaborate")
    assert torch.allclose(torch.from_numpy(np.load(tmp_path / "out" / "classes.npy")), written)
    meta = json.loads(metadata_path(str(tmp_path / "out" / "classes.npy")).read_text())
    assert meta["kind"] == "class" and meta["class_names"] == names and meta["shape"] == [2, 8]
    assert meta["texts"] == class_texts(names, "unelaborate")
    dump_class_embeddings(encoder, names, str(tmp_path / "classes.pt"), "unelaborate")
    assert torch.allclose(load_class_embeddings(str(tmp_path / "classes.pt"), 2), written)
    with pytest.raises(ValueError, match="unsupported suffix '.txt'"):
        dump_class_embeddings(encoder, names, str(tmp_path / "classes.txt"))


def test_dump_caption_embeddings_counts_every_image(tmp_path):
    coco = {"images": [
        {"id": 1, "captions": {"elaborate": "heart enlarged. long text.", "unelaborate": "heart enlarged"}},
        {"id": 2, "caption": "no finding"},
        {"id": 3, "file_name": "x.png"},
    ], "annotations": [], "categories": []}
    (tmp_path / "train.json").write_text(json.dumps(coco))
    encoder = RecordingEncoder()
    embeddings = dump_caption_embeddings(encoder, str(tmp_path / "train.json"), str(tmp_path / "cap.pt"),
                                         "unelaborate")
    assert embeddings.shape == (2, 8) and encoder.seen == ["heart enlarged", "no finding"]
    meta = json.loads(metadata_path(str(tmp_path / "cap.pt")).read_text())
    assert meta["image_ids"] == [1, 2]
    assert meta["caption_sources"] == {"captions[unelaborate]": 1, "caption": 1, "skipped: no caption": 1}
    with pytest.raises(FileNotFoundError, match="missing.json does not exist"):
        dump_caption_embeddings(encoder, str(tmp_path / "missing.json"), str(tmp_path / "c.pt"))


def test_dump_command_line_with_a_config_file(tmp_path, tiny_bert_dir):
    config = tmp_path / "text.yaml"
    config.write_text(f"MODEL:\n  TEXT_ENCODER:\n    BACKEND: transformers\n    NAME: {tiny_bert_dir}\n"
                      "  PROMPTS:\n    GRANULARITY: unelaborate\n")
    output = tmp_path / "nih.npy"
    written = dump_main(["--config-file", str(config), "--vocabulary", "nih_cxr14", "--pooling", "cls",
                         "--template", "{}", "--output", str(output)])
    meta = json.loads(metadata_path(str(output)).read_text())
    assert written.shape == (8, 32) and np.load(output).shape == (8, 32)
    assert meta["encoder"]["pooling"] == "cls" and meta["granularity"] == "unelaborate"
    assert meta["texts"][0] == class_prompts(["Atelectasis"], "unelaborate")
    with pytest.raises(KeyError, match="unknown vocabulary 'nope'"):
        dump_main(["--config-file", str(config), "--vocabulary", "nope", "--output", str(output)])


@pytest.mark.slow
def test_dump_tool_help_runs():
    result = subprocess.run([sys.executable, str(REPO_ROOT / "tools" / "dump_text_embeddings.py"), "--help"],
                            capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    assert "--vocabulary" in result.stdout and "--captions" in result.stdout and "--template" in result.stdout
