"""Word, sentence and report features from BERT-family encoders, as GLoRIA and AFLoc build them.

Word features: the last four hidden states are summed per token, and WordPiece continuation pieces
("##...") are summed into the word they continue; special and padding tokens are dropped. A sentence is
the mean of its words (sentences end at ".", "!" or "?", which are not part of them); a report is the mean
of all its word slots.
"""
from typing import List, NamedTuple, Optional, Sequence

import torch
from torch import nn

SENTENCE_END_WORDS = (".", "!", "?")


class TokenEmbeddings(NamedTuple):
    """Word-level text features: `embeddings` [N, W, D] (zero where `mask` is False), `words` (N lists of
    words, sub-word pieces merged), `mask` [N, W] bool marking real words."""

    embeddings: torch.Tensor
    words: List[List[str]]
    mask: torch.Tensor


class ReportEmbeddings(NamedTuple):
    """Multi-level features of texts: `words`, `sentences` [N, S, D] (mean of each sentence's words; zero where
    `sentence_mask` [N, S] is False), `sentence_texts` (the words of each sentence joined) and `report` [N, D]
    (mean of all word slots)."""

    words: TokenEmbeddings
    sentences: torch.Tensor
    sentence_mask: torch.Tensor
    sentence_texts: List[List[str]]
    report: torch.Tensor


def resolve_max_length(requested: int, tokenizer, model_config, owner: str) -> int:
    """Token limit: `requested` if > 0 (checked against the model's positions), else the model's own limit."""
    positions = getattr(model_config, "max_position_embeddings", None)
    tokenizer_limit = getattr(tokenizer, "model_max_length", None) or positions
    if requested and requested > 0:
        if positions is not None and requested > positions:
            raise ValueError(
                f"{owner}: MAX_LENGTH {requested} exceeds the model's {positions} position embeddings"
            )
        return int(requested)
    limits = [limit for limit in (positions, tokenizer_limit) if limit is not None]
    if not limits:
        raise ValueError(f"{owner}: the model states no token limit; set MODEL.TEXT_ENCODER.MAX_LENGTH")
    return int(min(limits))


def bert_word_features(
    tokenizer, model: nn.Module, texts: Sequence[str], max_length: int, num_layers: int = 4
) -> TokenEmbeddings:
    """Word features of one batch from a Hugging Face tokenizer and BERT-family model (see module docstring)."""
    device = next(model.parameters()).device
    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    outputs = model(**{key: value.to(device) for key, value in batch.items()}, output_hidden_states=True)
    hidden = torch.stack(outputs.hidden_states[-num_layers:]).sum(dim=0).float().cpu()
    word_index, words = _word_pieces_to_words(tokenizer, batch["input_ids"], batch["attention_mask"])
    return _sum_pieces(hidden, word_index, words)


def _word_pieces_to_words(tokenizer, input_ids: torch.Tensor, attention_mask: torch.Tensor):
    """Per token, the index of the word it belongs to (-1 for special/padding tokens), and the words."""
    special_ids = set(tokenizer.all_special_ids)
    word_index = torch.full_like(input_ids, -1)
    all_words = []
    for row, (ids, attended) in enumerate(zip(input_ids.tolist(), attention_mask.tolist())):
        words: List[str] = []
        for position, (token_id, token) in enumerate(zip(ids, tokenizer.convert_ids_to_tokens(ids))):
            if not attended or token_id in special_ids:
                continue
            if token.startswith("##") and words:
                words[-1] += token[2:]
            else:
                words.append(token)
            word_index[row, position] = len(words) - 1
        all_words.append(words)
    return word_index, all_words


def _sum_pieces(hidden: torch.Tensor, word_index: torch.Tensor, words: List[List[str]]) -> TokenEmbeddings:
    """Sum token features [N, T, D] into word slots [N, W, D] following `word_index` [N, T]."""
    num_texts, _, dim = hidden.shape
    width = max((len(w) for w in words), default=0)
    embeddings = torch.zeros(num_texts * max(width, 1), dim)
    valid = word_index >= 0
    rows = torch.arange(num_texts).unsqueeze(1).expand_as(word_index)
    flat_slots = (rows * max(width, 1) + word_index)[valid]
    embeddings.index_add_(0, flat_slots, hidden[valid])
    embeddings = embeddings.view(num_texts, max(width, 1), dim)[:, :width]
    mask = torch.arange(width).unsqueeze(0) < torch.tensor([len(w) for w in words]).unsqueeze(1)
    return TokenEmbeddings(embeddings, words, mask)


def concat_token_embeddings(parts: List[TokenEmbeddings], dim: int) -> TokenEmbeddings:
    """Join per-batch word features, padding every batch to the longest word count."""
    if not parts:
        return TokenEmbeddings(torch.zeros(0, 0, dim), [], torch.zeros(0, 0, dtype=torch.bool))
    width = max(part.embeddings.shape[1] for part in parts)
    embeddings, masks, words = [], [], []
    for part in parts:
        pad = width - part.embeddings.shape[1]
        embeddings.append(nn.functional.pad(part.embeddings, (0, 0, 0, pad)))
        masks.append(nn.functional.pad(part.mask, (0, pad), value=False))
        words.extend(part.words)
    return TokenEmbeddings(torch.cat(embeddings), words, torch.cat(masks))


def pool_sentences_and_report(
    tokens: TokenEmbeddings, sentence_end: Optional[Sequence[str]] = SENTENCE_END_WORDS
) -> ReportEmbeddings:
    """Sentence features (mean of each sentence's words) and report features (mean of all word slots)."""
    num_texts, _, dim = tokens.embeddings.shape
    spans = [_sentence_spans(words, tuple(sentence_end or ())) for words in tokens.words]
    num_sentences = max((len(s) for s in spans), default=0)
    sentences = torch.zeros(num_texts, num_sentences, dim)
    sentence_mask = torch.zeros(num_texts, num_sentences, dtype=torch.bool)
    sentence_texts = []
    for row, text_spans in enumerate(spans):
        for column, (start, stop) in enumerate(text_spans):
            sentences[row, column] = tokens.embeddings[row, start:stop].mean(dim=0)
            sentence_mask[row, column] = True
        sentence_texts.append([" ".join(tokens.words[row][start:stop]) for start, stop in text_spans])
    counts = tokens.mask.sum(dim=1, keepdim=True).clamp(min=1)
    report = (tokens.embeddings * tokens.mask.unsqueeze(-1)).sum(dim=1) / counts
    return ReportEmbeddings(tokens, sentences, sentence_mask, sentence_texts, report)


def _sentence_spans(words: List[str], sentence_end: tuple) -> List[tuple]:
    """[start, stop) word ranges of the non-empty sentences of one text; end words belong to none."""
    spans, start = [], 0
    for position, word in enumerate(words + [None]):
        if word is None or word in sentence_end:
            if position > start:
                spans.append((start, position))
            start = position + 1
    return spans
