"""The reference's language-only baseline: the dialog text through BERT, no image; ViLBERT's inputs and
NSP ranking, parameter names the reference's (and a Hugging Face BERT's)."""
from typing import Optional

import torch
from torch import nn

from models import losses
from models.config import BertConfig
from models.layers import (TEXT_STREAM_PARAMETERS, DialogTextEmbeddings, FirstTokenPooler, LMPredictionHead,
                           PreTraining, TransformerLayer, additive_mask, init_bert_weights)
from models.vilbert import EncoderOutput


class TextEncoder(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(TransformerLayer.text(config) for _ in range(config.num_hidden_layers))

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            hidden = layer(hidden, mask)
        return hidden


class DialogBertModel(nn.Module):
    """Dialog embeddings, BERT layers and pooler (`bert_pretrained.bert`)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.embeddings = DialogTextEmbeddings(config)
        self.encoder = TextEncoder(config)
        self.pooler = FirstTokenPooler(config.hidden_size, config.hidden_size, torch.tanh)

    def forward(self, tokens: torch.Tensor, segments: torch.Tensor,
                attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (embeddings [N, L, H], last layer [N, L, H], pooled first token [N, H])."""
        dtype = self.embeddings.word_embeddings.weight.dtype
        embedding_output = self.embeddings(tokens, segments)
        sequence = self.encoder(embedding_output, additive_mask(attention_mask, dtype))
        return embedding_output, sequence, self.pooler(sequence)


class DialogPreTrainingHeads(nn.Module):
    """Masked-LM and NSP heads of BERT (`bert_pretrained.cls`)."""

    def __init__(self, config: BertConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.predictions = LMPredictionHead(config, word_embeddings)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)

    def forward(self, sequence: torch.Tensor, pooled: torch.Tensor, output_lm_scores: bool = True) -> EncoderOutput:
        """NSP logits [N, 2] from the pooled text, and on request vocabulary scores [N, L, vocab]."""
        out = EncoderOutput(nsp_scores=self.seq_relationship(pooled))
        if output_lm_scores:
            out.lm_scores = self.predictions(sequence)
        return out


class LanguageOnlyDialogEncoder(nn.Module):
    """Scores dialog sequences from text alone: tokens, segments, attention_mask [N, L]; lm_labels [N, L]
    (-1 ignored); nsp_labels [N] -> an EncoderOutput without image fields."""

    # parameter-name prefixes by learning rate (models/optimizer.py), as ViLBERT's text stream
    LANGUAGE_PARAMETERS = TEXT_STREAM_PARAMETERS
    IMAGE_LR_PARAMETERS = ("bert_pretrained.bert.pooler.", "bert_pretrained.cls.seq_relationship.")

    @staticmethod
    def check_fits_data(config: BertConfig, vocabulary_size: int, vocab: str, max_seq_len: int, features=None,
                        num_classes: Optional[int] = None) -> None:
        """UserError when `config` does not fit the vocabulary or -max_seq_len (features are not read)."""
        config.check_fits_data(vocabulary_size, vocab, max_seq_len)

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.bert_pretrained = PreTraining(config, DialogBertModel, DialogPreTrainingHeads)
        self.apply(lambda module: init_bert_weights(module, config.initializer_range))

    def forward(self, tokens: torch.Tensor, segments: torch.Tensor, attention_mask: torch.Tensor,
                lm_labels: Optional[torch.Tensor] = None,
                nsp_labels: Optional[torch.Tensor] = None,
                output_lm_scores: bool = True, output_hidden_states: bool = False,
                **image_inputs) -> EncoderOutput:
        """`image_inputs` are accepted and ignored, so that callers treat both models alike."""
        bert, heads = self.bert_pretrained.bert, self.bert_pretrained.cls
        embedding_output, sequence, pooled = bert(tokens, segments, attention_mask)
        out = heads(sequence, pooled, output_lm_scores)
        if output_hidden_states:
            out.sequence_output_t, out.pooled_output_t = sequence, pooled
            out.embedding_output = embedding_output
        if lm_labels is not None:
            out.lm_loss = losses.masked_lm_loss(heads.predictions, sequence, lm_labels)
        if nsp_labels is not None:
            out.nsp_loss = losses.next_sentence_loss(out.nsp_scores, nsp_labels)
        return out
