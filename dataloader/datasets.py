"""VisDial datasets: one item per dialog (image), sequences not padded to max_seq_len.

An item holds its n sequences padded to their own longest length L_item, and its image once, as
numpy arrays (`dataloader.collate.collate_dialog_batch` makes the batch's tensors):

    tokens, segments      [n, L_item] int64 (0-padded)  `[CLS] caption [SEP] q1 [SEP] a1 [SEP] ... [SEP]`
    lm_labels             [n, L_item] int64: original id at masked positions, -1 elsewhere
    sep_indices           [n, S_item] int64: positions of the [SEP]s (0-padded)
    hist_len              [n] int64: number of utterances - 1
    next_sentence_labels  [n] int64 (train, dense): 0 = the answer belongs, 1 = a random answer
    image_feat [37, 2048], image_loc [37, 5], image_mask [37], image_target [37, 1601] float32;
    image_label [37] int64; image_id 0-d int64
    num_rounds, num_options (int): eval items hold num_rounds x num_options sequences, round-major

Split-specific fields: val `gt_option_inds` [num_rounds] (all 0: the ground truth is moved to
option 0) and, given the dense annotations, `gt_relevance` [num_options] (permuted like the
options) and `round_id` 0-d; test `round_id` 0-d; dense `gt_relevance` [100],
`gt_relevance_round_id` 0-d, `gt_option` 0-d. Random draws come from Python's `random`: seed it
(as DataLoader does per worker) for reproducible items.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from dataloader.encoding import (REGION_MASK_PROB, EncodedPrefix, TokenTable, encode_image, encode_prefix, mask_tokens,
                                 pack_sequences)
from dataloader.visdial_json import (NUM_ANSWER_OPTIONS, SPLITS, check_annotations_follow_dialogs,
                                     load_dense_annotations, load_visdial_json, relevance_of)
from utils.errors import UserError
from dataloader.feature_store import open_feature_store
from dataloader.tokenizer import encode_texts, load_tokenizer, special_token_ids

OVERFIT_DIALOGS = 5


def val_option_order(gt_index: int, num_options: int) -> list[int]:
    """Json positions of a val round's answer options in the order val items hold them: the ground
    truth first, then the first num_options - 1 others in json order. Everything that maps val
    scores back to options (EvalAI's val file, the report) uses this one definition."""
    others = [position for position in range(NUM_ANSWER_OPTIONS) if position != gt_index]
    return [gt_index] + others[:num_options - 1]


def dataset_length(available: int, overfit: bool, num_samples: int, flag: str, path) -> int:
    """How many dialogs a dataset serves: -num_*_samples if set, 5 with -overfit, else all."""
    if num_samples < 0:
        raise UserError(f"-{flag} must be >= 0, got {num_samples}")
    if num_samples > available:
        raise UserError(f"-{flag} {num_samples} is more than the {available} dialogs of {path}")
    if num_samples:
        return num_samples
    return min(OVERFIT_DIALOGS, available) if overfit else available


class _DialogDataset(Dataset):
    """Shared part: the validated json, token tables, image store, sequence building."""

    def __init__(self, split: str, dialogs_json, features, tokenizer, max_seq_len: int,
                 visdial_tot_rounds: int, overfit: bool, num_samples: int, samples_flag: str):
        if not 2 <= visdial_tot_rounds <= 11:
            raise UserError(f"-visdial_tot_rounds must be in 2..11, got {visdial_tot_rounds}")
        self.dialogs_path = Path(dialogs_json)
        data = load_visdial_json(self.dialogs_path, split, processed=True)["data"]
        self.dialogs = data["dialogs"]
        self.features = features if hasattr(features, "image_ids") else open_feature_store(features)
        absent = [dialog["image_id"] for dialog in self.dialogs if dialog["image_id"] not in self.features]
        if absent:
            raise UserError(f"{self.features.path}: no features for image(s) {', '.join(map(str, absent[:10]))} "
                            f"of {self.dialogs_path}")
        if isinstance(tokenizer, (str, os.PathLike)):
            tokenizer = load_tokenizer(str(tokenizer))
        self.special = special_token_ids(tokenizer)
        self.vocabulary_size = len(tokenizer)  # the token ids of the items are below it
        self.questions = TokenTable(encode_texts(tokenizer, data["questions"]))
        self.answers = TokenTable(encode_texts(tokenizer, data["answers"]))
        self.captions = TokenTable(encode_texts(tokenizer, [dialog["caption"] for dialog in self.dialogs]))
        self.max_seq_len = max_seq_len
        self.max_rounds = visdial_tot_rounds
        self.length = dataset_length(len(self.dialogs), overfit, num_samples, samples_flag, self.dialogs_path)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self._item(index)

    def _prefix(self, index: int, round_index: int) -> EncodedPrefix:
        """Caption, then q/a of the rounds before `round_index` (from its `history_start`, when
        preprocessing cut its history: -keep_all_val), then its question."""
        rounds = self.dialogs[index]["dialog"]
        utterances = [self.captions[index]]
        for turn in rounds[rounds[round_index].get("history_start", 0):round_index]:
            utterances += [self.questions[turn["question"]], self.answers[turn["answer"]]]
        utterances.append(self.questions[rounds[round_index]["question"]])
        return encode_prefix(utterances, self.max_rounds, self.special["CLS"], self.special["SEP"])

    def _pack(self, index: int, prefixes: list[EncodedPrefix], finals: list[tuple[int, np.ndarray]]) -> dict:
        packed = pack_sequences(prefixes, finals, self.special["SEP"])
        longest = int(packed.pop("lengths").max())
        if longest > self.max_seq_len:
            raise UserError(f"{self.dialogs_path}: dialog of image {self.dialogs[index]['image_id']} needs "
                            f"{longest} tokens, more than -max_seq_len {self.max_seq_len} "
                            "(preprocess it with the same -max_seq_len)")
        return packed

    def _unmasked(self, index: int, prefixes: list[EncodedPrefix], finals: list[tuple[int, np.ndarray]]) -> dict:
        item = self._pack(index, prefixes, finals)
        item["lm_labels"] = np.full_like(item["tokens"], -1)
        return item

    def _every_option(self, index: int, round_index: int) -> dict:
        """The round's sequences with each of its answer options, in json order, unmasked."""
        options = self.dialogs[index]["dialog"][round_index]["answer_options"]
        return self._unmasked(index, [self._prefix(index, round_index)],
                              [(0, self.answers[option]) for option in options])

    def _image(self, index: int, mask_prob: float = 0.0, rng: np.random.Generator | None = None) -> dict:
        rng = np.random.default_rng(random.getrandbits(64)) if rng is None else rng
        image = encode_image(self.features[self.dialogs[index]["image_id"]], mask_prob, rng)
        image["image_id"] = np.int64(self.dialogs[index]["image_id"])
        return image


class VisdialDataset(_DialogDataset):
    """VisDial items for the `train`, `val` or `test` split (items described in the module docstring).

    Parameters
    ----------
    split : "train" | "val" | "test"
    dialogs_json : a processed split file (preprocessing/pre_process_visdial.py)
    features : a feature store path (LMDB or HDF5) or an open reader (dataloader.feature_store)
    tokenizer : a BertTokenizer, or a vocab path / hub name for `load_tokenizer`
    dense_annotations_json : val only, the processed val dense annotations (one per dialog, same
        order); without them val items have no gt_relevance / round_id (no NDCG)
    max_seq_len, num_options, visdial_tot_rounds, mask_prob, sequences_per_image,
    num_negative_samples, overfit, num_samples : the reference's flags of the same names
        (num_samples is -num_train_samples or -num_val_samples; test ignores it and -overfit)

    Train: `sequences_per_image` of the rounds x (1 + num_negative_samples) sequences, drawn
    without replacement; a negative's answer is one of the first num_options - 1 wrong options that
    fits max_seq_len (else a random one cut to the true answer's length). Val: every round x
    num_options options, ground truth first. Test: the last round's 100 options in json order.
    """

    def __init__(self, split: str, dialogs_json, features, tokenizer, dense_annotations_json=None, *,
                 max_seq_len: int = 256, num_options: int = 100, visdial_tot_rounds: int = 11,
                 mask_prob: float = 0.15, sequences_per_image: int = 8, num_negative_samples: int = 1,
                 overfit: bool = False, num_samples: int = 0):
        if split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        if not 2 <= num_options <= NUM_ANSWER_OPTIONS:
            raise UserError(f"-num_options must be in 2..{NUM_ANSWER_OPTIONS}, got {num_options}")
        if split == "train" and (sequences_per_image < 1 or num_negative_samples < 0 or not 0 <= mask_prob <= 1):
            raise UserError("need -sequences_per_image >= 1, -num_negative_samples >= 0 and 0 <= -mask_prob <= 1")
        samples_flag = SPLITS[split].samples_flag
        if not samples_flag:  # as the reference: the test split is always served whole
            overfit, num_samples = False, 0
        super().__init__(split, dialogs_json, features, tokenizer, max_seq_len, visdial_tot_rounds, overfit,
                         num_samples, samples_flag)
        self.split = split
        self.num_options = num_options
        self.mask_prob = mask_prob
        self.sequences_per_image = sequences_per_image
        self.num_negative_samples = num_negative_samples
        self.dense_annotations = None
        if SPLITS[split].dense_annotations_flag and dense_annotations_json is not None:
            self.dense_annotations = load_dense_annotations(dense_annotations_json)
            check_annotations_follow_dialogs(self.dense_annotations, self.dialogs, dense_annotations_json)

    def _item(self, index: int) -> dict:
        return {"train": self._train_item, "val": self._val_item, "test": self._test_item}[self.split](index)

    def _option_order(self, turn: dict) -> list[int]:
        return val_option_order(turn["gt_index"], self.num_options)

    def _train_item(self, index: int) -> dict:
        rng = np.random.default_rng(random.getrandbits(64))
        rounds = self.dialogs[index]["dialog"]
        per_round = 1 + self.num_negative_samples
        total = len(rounds) * per_round
        chosen = np.sort(rng.choice(total, size=min(self.sequences_per_image, total), replace=False))
        prefixes, finals, labels, prefix_of_round = [], [], [], {}
        for sequence in chosen:
            round_index, slot = divmod(int(sequence), per_round)
            is_negative = slot > 0
            if round_index not in prefix_of_round:
                prefix_of_round[round_index] = len(prefixes)
                prefixes.append(self._prefix(index, round_index))
            turn = rounds[round_index]
            answer = self._negative_answer(index, round_index, rng) if is_negative else self.answers[turn["answer"]]
            finals.append((prefix_of_round[round_index], answer))
            labels.append(int(is_negative))
        packed = self._pack(index, prefixes, finals)
        packed["tokens"], packed["lm_labels"] = mask_tokens(
            packed["tokens"], packed["sep_indices"], packed["hist_len"], self.mask_prob, self.special["MASK"], rng)
        packed["next_sentence_labels"] = np.array(labels, dtype=np.int64)
        return {**packed, **self._image(index, REGION_MASK_PROB, rng)}

    def _negative_answer(self, index: int, round_index: int, rng: np.random.Generator) -> np.ndarray:
        """A wrong answer for round `round_index` that fits the reference's length check: the
        dialog up to and including the true answer, plus the wrong answer and its [SEP]."""
        rounds = self.dialogs[index]["dialog"]
        turn = rounds[round_index]
        used = 2 + len(self.captions[index]) + sum(
            len(self.questions[earlier["question"]]) + 1 + len(self.answers[earlier["answer"]]) + 1
            for earlier in rounds[:round_index + 1])
        candidates = np.array([turn["answer_options"][position] for position in self._option_order(turn)[1:]])
        fitting = candidates[used + self.answers.length(candidates) + 1 <= self.max_seq_len]
        if len(fitting):
            return self.answers[int(rng.choice(fitting))]
        return self.answers[int(rng.choice(candidates))][:len(self.answers[turn["answer"]])]

    def _val_item(self, index: int) -> dict:
        rounds = self.dialogs[index]["dialog"]
        prefixes, finals = [], []
        for round_index, turn in enumerate(rounds):
            prefixes.append(self._prefix(index, round_index))
            finals += [(round_index, self.answers[turn["answer_options"][position]])
                       for position in self._option_order(turn)]
        item = self._unmasked(index, prefixes, finals)
        item.update(gt_option_inds=np.zeros(len(rounds), dtype=np.int64), num_rounds=len(rounds),
                    num_options=self.num_options)
        if self.dense_annotations is not None:
            annotation = self.dense_annotations[index]
            order = self._option_order(rounds[annotation["round_id"] - 1])
            item.update(gt_relevance=np.asarray(relevance_of(annotation), dtype=np.float32)[order],
                        round_id=np.int64(annotation["round_id"]))
        return {**item, **self._image(index)}

    def _test_item(self, index: int) -> dict:
        dialog = self.dialogs[index]
        item = self._every_option(index, len(dialog["dialog"]) - 1)
        item.update(round_id=np.int64(dialog["round_id"]), num_rounds=1, num_options=len(item["tokens"]))
        return {**item, **self._image(index)}


class VisdialDenseDataset(_DialogDataset):
    """Dense-annotation items (the reference's VisdialDatasetDense): for annotation i, the dialog i
    up to the annotated round's question followed by each of its 100 options in json order.
    dialogs_json / dense_annotations_json: the processed dense dialogs and their annotations, in the
    same order; split: which kind of dialog file; the rest as VisdialDataset."""

    def __init__(self, dialogs_json, dense_annotations_json, features, tokenizer, split: str = "train", *,
                 max_seq_len: int = 256, visdial_tot_rounds: int = 11, overfit: bool = False,
                 num_samples: int = 0):
        super().__init__(split, dialogs_json, features, tokenizer, max_seq_len, visdial_tot_rounds, overfit,
                         num_samples, "num_train_samples")
        self.dense_annotations = load_dense_annotations(dense_annotations_json)
        check_annotations_follow_dialogs(self.dense_annotations, self.dialogs, dense_annotations_json)

    def _item(self, index: int) -> dict:
        annotation = self.dense_annotations[index]
        gt_index = self.dialogs[index]["dialog"][annotation["round_id"] - 1]["gt_index"]
        item = self._every_option(index, annotation["round_id"] - 1)
        labels = np.ones(len(item["tokens"]), dtype=np.int64)
        labels[gt_index] = 0
        item.update(next_sentence_labels=labels, gt_relevance=np.asarray(relevance_of(annotation), dtype=np.float32),
                    gt_relevance_round_id=np.int64(annotation["round_id"]), gt_option=np.int64(gt_index),
                    num_rounds=1, num_options=len(labels))
        return {**item, **self._image(index)}
