"""Transformer blocks shared by the ViLBERT encoder and the language-only baseline; names mirror the
reference's (and BERT's: `attention.self.query`, `intermediate.dense` ...) so checkpoints load as they are."""
import torch
import torch.nn.functional as F
from torch import nn

from models.config import BertConfig

# The reference's masks are additive: 0 for positions to attend to, -10000 for the others.
MASK_VALUE = -10000.0
# LayerNorm in the TensorFlow style of the original BERT: epsilon inside the square root.
LAYER_NORM_EPS = 1e-12
# what the reference trains at -lr (its language_weights.json): a model's LANGUAGE_PARAMETERS
TEXT_STREAM_PARAMETERS = ("bert_pretrained.bert.embeddings.", "bert_pretrained.bert.encoder.layer.",
                          "bert_pretrained.cls.predictions.")


def activation(name: str):
    """The activation function of a config's `hidden_act` / `v_hidden_act` (GELU is the erf form)."""
    return {"gelu": F.gelu, "relu": F.relu, "swish": F.silu}[name]


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[N, T] 0/1 mask -> [N, 1, 1, T] additive mask: 0 where mask is 1, -10000 elsewhere."""
    return (1.0 - mask[:, None, None, :].to(dtype)) * MASK_VALUE


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:  # [N, T, H] -> [N, heads, T, H / heads]
    batch, length, hidden = x.shape
    return x.view(batch, length, num_heads, hidden // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:  # [N, heads, T, d] -> [N, T, heads * d]
    batch, heads, length, head_size = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * head_size)


def attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor,
           num_heads: int, dropout: float) -> torch.Tensor:
    """Multi-head attention: query [N, Tq, H], key / value [N, Tk, H], additive mask [N, 1, 1, Tk] -> [N, Tq, H]."""
    context = F.scaled_dot_product_attention(
        split_heads(query, num_heads), split_heads(key, num_heads), split_heads(value, num_heads),
        attn_mask=mask.to(query.dtype), dropout_p=dropout)
    return merge_heads(context)


def attention_probs(query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor, num_heads: int) -> torch.Tensor:
    """The probabilities `attend` weighs the values with (no dropout): query [N, Tq, H], key
    [N, Tk, H], mask [N, 1, 1, Tk] additive -> [N, heads, Tq, Tk] float32, each row summing to 1."""
    query, key = split_heads(query, num_heads).float(), split_heads(key, num_heads).float()
    logits = query @ key.transpose(-1, -2) / query.shape[-1] ** 0.5 + mask.float()
    return torch.softmax(logits, dim=-1)


class SelfAttention(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        dropout = self.dropout.p if self.training else 0.0
        return attend(self.query(hidden), self.key(hidden), self.value(hidden), mask, self.num_heads, dropout)


class ResidualOutput(nn.Module):
    """dense -> dropout -> LayerNorm(x + residual): `attention.output` and `output` of BERT."""

    def __init__(self, in_size: int, hidden_size: int, dropout: float):
        super().__init__()
        self.dense = nn.Linear(in_size, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=LAYER_NORM_EPS)
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)


class Attention(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, attention_dropout: float, hidden_dropout: float):
        super().__init__()
        self.self = SelfAttention(hidden_size, num_heads, attention_dropout)
        self.output = ResidualOutput(hidden_size, hidden_size, hidden_dropout)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(hidden, mask), hidden)


class Intermediate(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int, act: str):
        super().__init__()
        self.dense = nn.Linear(hidden_size, intermediate_size)
        self.act = activation(act)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(hidden))


class TransformerLayer(nn.Module):
    """One BERT layer: attention then feed-forward, each with residual and LayerNorm (the reference's
    `BertLayer` with `text`, `BertImageLayer` with `image`)."""

    def __init__(self, hidden_size: int, num_heads: int, intermediate_size: int, act: str,
                 attention_dropout: float, hidden_dropout: float):
        super().__init__()
        self.attention = Attention(hidden_size, num_heads, attention_dropout, hidden_dropout)
        self.intermediate = Intermediate(hidden_size, intermediate_size, act)
        self.output = ResidualOutput(intermediate_size, hidden_size, hidden_dropout)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """hidden [N, T, H], mask [N, 1, 1, T] additive -> [N, T, H]."""
        attended = self.attention(hidden, mask)
        return self.output(self.intermediate(attended), attended)

    @classmethod
    def text(cls, config: BertConfig) -> "TransformerLayer":
        return cls(config.hidden_size, config.num_attention_heads, config.intermediate_size,
                   config.hidden_act, config.attention_probs_dropout_prob,
                   config.hidden_dropout_prob)

    @classmethod
    def image(cls, config: BertConfig) -> "TransformerLayer":
        return cls(config.v_hidden_size, config.v_num_attention_heads, config.v_intermediate_size,
                   config.v_hidden_act, config.v_attention_probs_dropout_prob,
                   config.v_hidden_dropout_prob)


class DialogTextEmbeddings(nn.Module):
    """LayerNorm(word + position + segment) embeddings of the dialog text, then dropout.
    `token_type_embeddings_extension` (segment ids 2..11, which no loader produces) and `sep_embeddings`
    (never used) exist so that the reference's checkpoints load strictly."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.type_vocab_size = config.type_vocab_size
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.token_type_embeddings_extension = nn.Embedding(10, config.hidden_size)
        self.sep_embeddings = nn.Embedding(50, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=LAYER_NORM_EPS)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, tokens: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
        """tokens, segments [N, L] -> embeddings [N, L, H]."""
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        segment_embeddings = torch.where(
            (segments >= self.type_vocab_size)[..., None],
            self.token_type_embeddings_extension((segments - self.type_vocab_size).clamp(min=0)),
            self.token_type_embeddings(segments.clamp(max=self.type_vocab_size - 1)))
        embeddings = self.word_embeddings(tokens) + self.position_embeddings(positions)[None] + segment_embeddings
        return self.dropout(self.LayerNorm(embeddings))


class FirstTokenPooler(nn.Module):
    """activation(Linear(first token or region)): [N, T, H] -> [N, out_size] (ViLBERT: ReLU, BERT: tanh)."""

    def __init__(self, hidden_size: int, out_size: int, act):
        super().__init__()
        self.dense = nn.Linear(hidden_size, out_size)
        self.act = act

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(hidden[:, 0]))


class PredictionHeadTransform(nn.Module):
    def __init__(self, hidden_size: int, act: str):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.act = activation(act)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=LAYER_NORM_EPS)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.act(self.dense(hidden)))


class LMPredictionHead(nn.Module):
    """Masked-LM head: transform, then a decoder tied to the word embeddings, plus a bias."""

    def __init__(self, config: BertConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.transform = PredictionHeadTransform(config.hidden_size, config.hidden_act)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.decoder.weight = word_embeddings.weight
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [..., H] -> vocabulary scores [..., vocab]."""
        return self.decoder(self.transform(hidden)) + self.bias


class PreTraining(nn.Module):
    """`bert_pretrained`: a model's body `bert` and its heads `cls`, tied by the word embeddings (the
    key paths of the reference's checkpoints)."""

    def __init__(self, config: BertConfig, body: type, heads: type):
        super().__init__()
        self.bert = body(config)
        self.cls = heads(config, self.bert.embeddings.word_embeddings)


def init_bert_weights(module: nn.Module, std: float) -> None:
    """The reference's initialisation: normal(0, std) weights, zero biases, unit LayerNorm."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        module.weight.data.normal_(mean=0.0, std=std)
    elif isinstance(module, nn.LayerNorm):
        module.bias.data.zero_()
        module.weight.data.fill_(1.0)
    if isinstance(module, nn.Linear) and module.bias is not None:
        module.bias.data.zero_()
