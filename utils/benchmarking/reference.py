"""The reference's way of scoring, the benchmarks' baseline, and weights that spread scores."""
import torch

from utils.evaluation.scoring import ranking_scores


@torch.inference_mode()
def score_padded_reference_style(model: torch.nn.Module, batch: dict, max_seq_len: int,
                                 sequences_per_call: int, all_heads: bool = True) -> torch.Tensor:
    """`score_sequences` as the reference scored: padded to `max_seq_len`, the image copied per sequence,
    fixed chunks of `sequences_per_call`, every head computed unless not `all_heads`."""
    device = next(model.parameters()).device
    num_sequences, length = batch["tokens"].shape

    def padded(tensor: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pad(tensor, (0, max_seq_len - length))

    tokens, segments = padded(batch["tokens"]), padded(batch["segments"])
    attention_mask = padded(batch["attention_mask"].long()).bool()
    image_index = batch["image_index"]
    scores = []
    for start in range(0, num_sequences, sequences_per_call):
        rows = slice(start, start + sequences_per_call)
        images = image_index[rows]
        output = model(tokens[rows].to(device), segments[rows].to(device), attention_mask[rows].to(device),
                       batch["image_feat"][images].to(device), batch["image_loc"][images].to(device),
                       batch["image_mask"][images].to(device), output_lm_scores=all_heads, output_img_scores=all_heads)
        scores.append(ranking_scores(output.nsp_scores).cpu())
    return torch.cat(scores)


def spread_weights(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Redraw the weights at O(1) scales (Linear N(0, 1/fan_in), embeddings N(0, 1)) so that the
    scores of a random model differ clearly between options, as a trained model's do."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.normal_(0, module.in_features ** -0.5, generator=generator)
            elif isinstance(module, torch.nn.Embedding):
                module.weight.normal_(0, 1, generator=generator)
