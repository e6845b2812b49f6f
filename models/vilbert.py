"""The two-stream ViLBERT dialog encoder of the paper, top to bottom in data-flow order (docs/code.md).
Module names follow the reference (`bert_pretrained.bert.encoder.c_layer.0.biattention.query1` ...), so
its released checkpoints load with strict key checking."""
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from models import losses
from models.config import BertConfig
from models.layers import (LAYER_NORM_EPS, TEXT_STREAM_PARAMETERS, DialogTextEmbeddings, FirstTokenPooler,
                           Intermediate, LMPredictionHead, PredictionHeadTransform, PreTraining, ResidualOutput,
                           TransformerLayer, additive_mask, attend, attention_probs, init_bert_weights)

POOLER_BIAS_INIT = 1.0  # the reference: 0 (see VisualDialogEncoder.__init__)


@dataclass
class EncoderOutput:
    """What one forward pass returns; fields that were not asked for are None, losses are 0-d."""

    nsp_scores: torch.Tensor                           # [N, 2] class 0: the answer belongs (ranked by softmax[:, 0])
    lm_scores: Optional[torch.Tensor] = None           # [N, L, vocab]
    img_scores: Optional[torch.Tensor] = None          # [N, R, v_target_size]
    sequence_output_t: Optional[torch.Tensor] = None   # [N, L, H]   (output_hidden_states)
    sequence_output_v: Optional[torch.Tensor] = None   # [N, R, Hv]
    pooled_output_t: Optional[torch.Tensor] = None     # [N, Hbi]
    pooled_output_v: Optional[torch.Tensor] = None     # [N, Hbi]
    embedding_output: Optional[torch.Tensor] = None    # [N, L, H]
    v_embedding_output: Optional[torch.Tensor] = None  # [N, R, Hv]
    lm_loss: Optional[torch.Tensor] = None
    nsp_loss: Optional[torch.Tensor] = None
    img_loss: Optional[torch.Tensor] = None
    coattention_t2v: Optional[torch.Tensor] = None     # [N, C, heads, L, R] text over regions, per co-attention layer


@dataclass
class StreamStates:
    embedding_t: torch.Tensor                       # [N, L, H]
    embedding_v: torch.Tensor                       # [N, R, Hv]
    sequence_t: torch.Tensor                        # [N, L, H]  last layer
    sequence_v: torch.Tensor                        # [N, R, Hv]
    pooled_t: torch.Tensor                          # [N, Hbi]
    pooled_v: torch.Tensor                          # [N, Hbi]
    coattention_t2v: Optional[torch.Tensor] = None  # [N, C, heads, L, R]


class ImageEmbeddings(nn.Module):
    """LayerNorm(Linear(region feature) + Linear(5-d box)) of every region (`v_embeddings`)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.image_embeddings = nn.Linear(config.v_feature_size, config.v_hidden_size)
        self.image_location_embeddings = nn.Linear(5, config.v_hidden_size)
        self.LayerNorm = nn.LayerNorm(config.v_hidden_size, eps=LAYER_NORM_EPS)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, image_feat: torch.Tensor, image_loc: torch.Tensor,
                image_index: Optional[torch.Tensor]) -> torch.Tensor:
        """image_feat [K, R, F], image_loc [K, R, 5], image_index [N] or None -> [N, R, Hv].
        Projected once per image, gathered per sequence before the dropout: each sequence draws its
        own mask, as when the reference copied the features."""
        embeddings = self.LayerNorm(self.image_embeddings(image_feat) + self.image_location_embeddings(image_loc))
        if image_index is not None:
            embeddings = embeddings[image_index]
        return self.dropout(embeddings)


class BiAttention(nn.Module):
    """Co-attention: text queries attend to image regions, image queries to text tokens (stream 1:
    the image, stream 2: the text, as the reference names them)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.num_heads = config.bi_num_attention_heads
        self.query1 = nn.Linear(config.v_hidden_size, config.bi_hidden_size)
        self.key1 = nn.Linear(config.v_hidden_size, config.bi_hidden_size)
        self.value1 = nn.Linear(config.v_hidden_size, config.bi_hidden_size)
        self.dropout1 = nn.Dropout(config.v_attention_probs_dropout_prob)
        self.query2 = nn.Linear(config.hidden_size, config.bi_hidden_size)
        self.key2 = nn.Linear(config.hidden_size, config.bi_hidden_size)
        self.value2 = nn.Linear(config.hidden_size, config.bi_hidden_size)
        self.dropout2 = nn.Dropout(config.attention_probs_dropout_prob)

    def forward(self, image: torch.Tensor, image_mask: torch.Tensor, text: torch.Tensor,
                text_mask: torch.Tensor, output_probs: bool = False):
        """image [N, R, Hv], text [N, L, H], additive masks -> (text context [N, L, Hbi], image context
        [N, R, Hbi], text-to-image probabilities [N, heads, L, R] from the same queries and keys, or None)."""
        dropout1 = self.dropout1.p if self.training else 0.0
        dropout2 = self.dropout2.p if self.training else 0.0
        text_query, image_key = self.query2(text), self.key1(image)
        text_context = attend(text_query, image_key, self.value1(image), image_mask, self.num_heads, dropout1)
        image_context = attend(self.query1(image), self.key2(text), self.value2(text),
                               text_mask, self.num_heads, dropout2)
        probs = attention_probs(text_query, image_key, image_mask, self.num_heads) if output_probs else None
        return text_context, image_context, probs


class BiOutput(nn.Module):
    """Residual outputs of the co-attention for both streams (`biOutput`). `q_dense1` / `q_dense2`
    are never called: they exist so that the reference's checkpoints load strictly."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense1 = nn.Linear(config.bi_hidden_size, config.v_hidden_size)
        self.LayerNorm1 = nn.LayerNorm(config.v_hidden_size, eps=LAYER_NORM_EPS)
        self.dropout1 = nn.Dropout(config.v_hidden_dropout_prob)
        self.q_dense1 = nn.Linear(config.bi_hidden_size, config.v_hidden_size)
        self.dense2 = nn.Linear(config.bi_hidden_size, config.hidden_size)
        self.LayerNorm2 = nn.LayerNorm(config.hidden_size, eps=LAYER_NORM_EPS)
        self.dropout2 = nn.Dropout(config.hidden_dropout_prob)
        self.q_dense2 = nn.Linear(config.bi_hidden_size, config.hidden_size)

    def forward(self, image_context, image, text_context, text):
        image = self.LayerNorm1(self.dropout1(self.dense1(image_context)) + image)
        text = self.LayerNorm2(self.dropout2(self.dense2(text_context)) + text)
        return image, text


class ConnectionLayer(nn.Module):
    """One co-attention layer followed by each stream's feed-forward block (`c_layer`)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.biattention = BiAttention(config)
        self.biOutput = BiOutput(config)
        self.v_intermediate = Intermediate(config.v_hidden_size, config.v_intermediate_size, config.v_hidden_act)
        self.v_output = ResidualOutput(config.v_intermediate_size, config.v_hidden_size, config.v_hidden_dropout_prob)
        self.t_intermediate = Intermediate(config.hidden_size, config.intermediate_size, config.hidden_act)
        self.t_output = ResidualOutput(config.intermediate_size, config.hidden_size, config.hidden_dropout_prob)

    def forward(self, image, image_mask, text, text_mask, output_probs: bool = False):
        text_context, image_context, probs = self.biattention(image, image_mask, text, text_mask, output_probs)
        image, text = self.biOutput(image_context, image, text_context, text)
        image = self.v_output(self.v_intermediate(image), image)
        text = self.t_output(self.t_intermediate(text), text)
        return image, text, probs


class Encoder(nn.Module):
    """For each co-attention position c: image layers up to `v_biattention_id[c]`, text layers up to
    `t_biattention_id[c]`, co-attention layer c; then the rest of each stream. Layers below
    `fixed_v_layer` / `fixed_t_layer` run without gradients (frozen)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.layer = nn.ModuleList(TransformerLayer.text(config) for _ in range(config.num_hidden_layers))
        self.v_layer = nn.ModuleList(TransformerLayer.image(config) for _ in range(config.v_num_hidden_layers))
        self.c_layer = nn.ModuleList(ConnectionLayer(config) for _ in range(len(config.v_biattention_id)))

    @staticmethod
    def _run(layers, start: int, end: int, frozen_below: int, hidden, mask):
        for index in range(start, end):
            with torch.set_grad_enabled(torch.is_grad_enabled() and index >= frozen_below):
                hidden = layers[index](hidden, mask)
        return hidden

    def forward(self, text, text_mask, image, image_mask, output_coattention: bool = False):
        """text [N, L, H], image [N, R, Hv], additive masks -> (text, image, text-to-image
        probabilities [N, C, heads, L, R] with `output_coattention`, else None)."""
        config = self.config
        t_start = v_start = 0
        coattention = []
        for c, (v_end, t_end) in enumerate(zip(config.v_biattention_id, config.t_biattention_id)):
            image = self._run(self.v_layer, v_start, v_end, config.fixed_v_layer, image, image_mask)
            text = self._run(self.layer, t_start, t_end, config.fixed_t_layer, text, text_mask)
            if config.with_coattention:
                image, text, probs = self.c_layer[c](image, image_mask, text, text_mask, output_coattention)
                coattention.append(probs)
            v_start, t_start = v_end, t_end
        image = self._run(self.v_layer, v_start, len(self.v_layer), config.fixed_v_layer, image, image_mask)
        text = self._run(self.layer, t_start, len(self.layer), config.fixed_t_layer, text, text_mask)
        return text, image, torch.stack(coattention, dim=1) if output_coattention and coattention else None


class ViLBertModel(nn.Module):
    """Embeddings, the two-stream encoder and the two poolers (`bert_pretrained.bert`)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.embeddings = DialogTextEmbeddings(config)
        self.v_embeddings = ImageEmbeddings(config)
        self.encoder = Encoder(config)
        self.t_pooler = FirstTokenPooler(config.hidden_size, config.bi_hidden_size, F.relu)
        self.v_pooler = FirstTokenPooler(config.v_hidden_size, config.bi_hidden_size, F.relu)

    def forward(self, tokens: torch.Tensor, segments: torch.Tensor, attention_mask: torch.Tensor,
                image_feat: torch.Tensor, image_loc: torch.Tensor, image_mask: torch.Tensor,
                image_index: Optional[torch.Tensor], output_coattention: bool = False) -> StreamStates:
        """Embeddings -> encoder -> poolers (inputs: `VisualDialogEncoder.forward`)."""
        dtype = self.embeddings.word_embeddings.weight.dtype
        if image_index is not None:
            image_mask = image_mask[image_index]
        text_mask = additive_mask(attention_mask, dtype)        # [N, 1, 1, L]
        region_mask = additive_mask(image_mask, dtype)          # [N, 1, 1, R]
        embedding_t = self.embeddings(tokens, segments)                            # [N, L, H]
        embedding_v = self.v_embeddings(image_feat, image_loc, image_index)        # [N, R, Hv]
        sequence_t, sequence_v, coattention = self.encoder(embedding_t, text_mask, embedding_v, region_mask,
                                                           output_coattention)
        return StreamStates(embedding_t, embedding_v, sequence_t, sequence_v,
                            self.t_pooler(sequence_t), self.v_pooler(sequence_v), coattention)


class ImagePredictionHead(nn.Module):
    """Region-class head: transform (with the *text* activation, as the reference), decoder."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.transform = PredictionHeadTransform(config.v_hidden_size, config.hidden_act)
        self.decoder = nn.Linear(config.v_hidden_size, config.v_target_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(hidden))


class PreTrainingHeads(nn.Module):
    """Masked-LM, answer-belongs (NSP) and masked-region heads (`bert_pretrained.cls`)."""

    def __init__(self, config: BertConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.predictions = LMPredictionHead(config, word_embeddings)
        self.bi_seq_relationship = nn.Linear(config.bi_hidden_size, 2)
        self.imagePredictions = ImagePredictionHead(config)
        self.fusion_method = config.fusion_method
        self.dropout = nn.Dropout(0.1)

    def forward(self, states: StreamStates, output_lm_scores: bool = True,
                output_img_scores: bool = True) -> EncoderOutput:
        """NSP logits [N, 2] from the fused pooled streams (product or sum), and on request the
        vocabulary scores [N, L, vocab] and region-class scores [N, R, v_target_size]."""
        pooled_t, pooled_v = states.pooled_t, states.pooled_v
        fused = pooled_t * pooled_v if self.fusion_method == "mul" else pooled_t + pooled_v
        out = EncoderOutput(nsp_scores=self.bi_seq_relationship(self.dropout(fused)))
        if output_lm_scores:
            out.lm_scores = self.predictions(states.sequence_t)
        if output_img_scores:
            out.img_scores = self.imagePredictions(states.sequence_v)
        return out


class VisualDialogEncoder(nn.Module):
    """The paper's model: scores dialog sequences with their images, and computes the losses.

    Example
    -------
    >>> model = VisualDialogEncoder(BertConfig.from_json_file("config/bert_base_6layer_6conect.json"))
    >>> out = model(tokens, segments, attention_mask, image_feat, image_loc, image_mask,
    ...             output_lm_scores=False, output_img_scores=False)
    >>> ranking_scores = out.nsp_scores.softmax(-1)[:, 0]
    """

    # parameter-name prefixes by learning rate (models/optimizer.py); t_pooler is not in the reference's list
    LANGUAGE_PARAMETERS = TEXT_STREAM_PARAMETERS
    IMAGE_LR_PARAMETERS = ("bert_pretrained.bert.v_embeddings.", "bert_pretrained.bert.encoder.v_layer.",
                           "bert_pretrained.bert.encoder.c_layer.", "bert_pretrained.bert.t_pooler.",
                           "bert_pretrained.bert.v_pooler.", "bert_pretrained.cls.bi_seq_relationship.",
                           "bert_pretrained.cls.imagePredictions.")

    @staticmethod
    def check_fits_data(config: BertConfig, vocabulary_size: int, vocab: str, max_seq_len: int, features=None,
                        num_classes: Optional[int] = None) -> None:
        """UserError when `config` does not fit the vocabulary `vocab` of `vocabulary_size` ids,
        -max_seq_len, or the feature store `features` (None: not checked) and its `num_classes`."""
        image = {} if features is None else dict(feature_size=features.feature_size, features=str(features.path),
                                                 num_classes=num_classes)
        config.check_fits_data(vocabulary_size, vocab, max_seq_len, **image)

    def __init__(self, config: BertConfig):
        super().__init__()
        config.validate_two_stream()
        self.config = config
        self.bert_pretrained = PreTraining(config, ViLBertModel, PreTrainingHeads)
        self.apply(lambda module: init_bert_weights(module, config.initializer_range))
        # Not the reference's zero: with zero biases half of each ReLU pooler starts dead and a model
        # trained from scratch scores every answer alike (docs/reference.md). Checkpoints overwrite them.
        for pooler in (self.bert_pretrained.bert.t_pooler, self.bert_pretrained.bert.v_pooler):
            nn.init.constant_(pooler.dense.bias, POOLER_BIAS_INIT)

    def forward(self, tokens: torch.Tensor, segments: torch.Tensor, attention_mask: torch.Tensor,
                image_feat: torch.Tensor, image_loc: torch.Tensor, image_mask: torch.Tensor,
                image_index: Optional[torch.Tensor] = None,
                lm_labels: Optional[torch.Tensor] = None,
                nsp_labels: Optional[torch.Tensor] = None,
                image_label: Optional[torch.Tensor] = None,
                image_target: Optional[torch.Tensor] = None,
                output_lm_scores: bool = True, output_img_scores: bool = True,
                output_hidden_states: bool = False, output_coattention: bool = False) -> EncoderOutput:
        """Score N sequences; images are given once each and gathered by `image_index`.

        tokens, segments [N, L] int; attention_mask [N, L] (1 real token); image_feat [K, R, F];
        image_loc [K, R, 5]; image_mask [K, R] (1 real region); image_index [N] (None: K == N).
        Labels: lm_labels [N, L] (token id where masked, -1 elsewhere); nsp_labels [N] (0: the answer
        belongs, 1: it does not); image_label [K, R] (1: predict this region); image_target
        [K, R, v_target_size]. A loss is returned for each label given.
        """
        bert, heads = self.bert_pretrained.bert, self.bert_pretrained.cls
        states = bert(tokens, segments, attention_mask, image_feat, image_loc, image_mask, image_index,
                      output_coattention)
        out = heads(states, output_lm_scores, output_img_scores)
        out.coattention_t2v = states.coattention_t2v
        if output_hidden_states:
            out.sequence_output_t, out.sequence_output_v = states.sequence_t, states.sequence_v
            out.pooled_output_t, out.pooled_output_v = states.pooled_t, states.pooled_v
            out.embedding_output, out.v_embedding_output = states.embedding_t, states.embedding_v

        if lm_labels is not None:
            out.lm_loss = losses.masked_lm_loss(heads.predictions, states.sequence_t, lm_labels)
        if nsp_labels is not None:
            out.nsp_loss = losses.next_sentence_loss(out.nsp_scores, nsp_labels)
        if image_label is not None and image_target is not None:
            if image_index is not None:
                image_label, image_target = image_label[image_index], image_target[image_index]
            out.img_loss = losses.masked_region_loss(heads.imagePredictions, states.sequence_v, image_label,
                                                     image_target, self.config.predict_feature)
        return out
