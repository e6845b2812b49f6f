"""Chat with a trained checkpoint about an image: ask questions, see the model's top answers
(commands, candidate pool and the -json events: docs/evaluation.md, "Chat with a checkpoint").

    python scripts/chat.py -start_path checkpoints-release/basemodel \\
        -visdial_image_feats data/visdial/visdial_img_feat.lmdb \\
        -dialogs data/visdial/visdial_1.0_val_processed.json [-image_id 185565]
"""
import dataclasses
import json
import random
import sys
from collections import Counter
from typing import Callable, Optional, TextIO

from dataloader.tokenizer import encode_texts
from dataloader.visdial_json import load_visdial_json
from options import EvalOptions, FlagOptions, SharedOptions, flag, parse_options, same_flag
from utils.errors import UserError, report_problems, run_cli
from utils.evaluation import DialogRanker
from utils.inputs import read_text

TOP_ANSWERS = 5
TOP_REGIONS = 5
CANDIDATES_FILE_BYTES = 64 << 20  # VisDial's 337,527 distinct answers take 7 MB
COMMANDS = ":why, :reset, :image ID, :quit"


@dataclasses.dataclass(frozen=True)
class ChatOptions(FlagOptions):
    """The options of scripts/chat.py; the model and data flags are evaluate.py's."""

    DESCRIPTION = "Ask a trained checkpoint questions about an image; it ranks a pool of candidate answers"

    config: str = same_flag(SharedOptions, "config")
    start_path: str = flag("", "the trained checkpoint to chat with (a released one or one train.py wrote)", "model",
                           is_input=True)
    model_config: str = same_flag(SharedOptions, "model_config")
    model_type: str = same_flag(SharedOptions, "model_type")
    vocab: str = same_flag(SharedOptions, "vocab")
    visdial_image_feats: str = flag(SharedOptions.visdial_image_feats, "image features: an LMDB or HDF5 store, or "
                                    "a file or folder that preprocessing/convert_features.py reads (a bottom-up-"
                                    "attention TSV, a challenge-starter HDF5, a folder of <image_id>.npz)", "data",
                                    is_input=True)
    max_seq_len: int = same_flag(SharedOptions, "max_seq_len")
    visdial_tot_rounds: int = same_flag(SharedOptions, "visdial_tot_rounds")
    precision: str = same_flag(SharedOptions, "precision")
    eval_tokens_per_batch: int = same_flag(EvalOptions, "eval_tokens_per_batch")
    device: str = flag("auto", "cpu, cuda, cuda:N, or auto (a GPU when there is one)", "runtime")
    image_id: int = flag(-1, "the image to talk about (default: one drawn with -seed)", "chat", at_least=-1,
                         wanted="an image id (>= 0), or -1 for a drawn one")
    seed: int = flag(0, "seed of the image drawn when -image_id is not given", "chat")
    dialogs: str = flag("", "a VisDial json file (processed or raw): the captions of its images and, "
                            "without -candidates, the candidate pool", "chat", is_input=True)
    candidates: str = flag("", "candidate answers, one a line (default: the -dialogs file's most frequent "
                               "answers)", "chat", is_input=True)
    pool_size: int = flag(100, "how many of the -dialogs file's most frequent answers form the pool", "chat",
                          at_least=1)
    json: bool = flag(False, "write one JSON object per line (image, turn, reset) instead of text", "chat")

    def problems(self) -> list[str]:
        problems = super().problems()
        if not self.start_path:
            problems.append("-start_path is needed: the checkpoint to chat with")
        if not (self.candidates or self.dialogs):
            problems.append("-candidates FILE (answers, one a line) or -dialogs FILE (its most frequent answers) "
                            "is needed for the candidate pool")
        return problems


def read_candidates(path: str) -> list[str]:
    """The answers of a candidates file, one a line; UserError for a repeated answer or none at all."""
    first_line = {}
    for number, line in enumerate(read_text(path, "candidates file", CANDIDATES_FILE_BYTES).split("\n"), start=1):
        answer = line.strip()
        if answer and answer in first_line:
            raise UserError(f"{path}: line {number} repeats the answer {answer!r} of line {first_line[answer]}")
        if answer:
            first_line[answer] = number
    if not first_line:
        raise UserError(f"{path}: holds no answers (one a line)")
    return list(first_line)


def check_pool(tokenizer, pool: list[str], source: str) -> None:
    """UserError naming `source` for an answer of the pool without tokens, before the chat starts."""
    for answer, tokens in zip(pool, encode_texts(tokenizer, pool)):
        if not len(tokens):
            raise UserError(f"{source}: the candidate answer {answer!r} is empty (it has no tokens); remove it")


def frequent_answers(data: dict, pool_size: int, path: str) -> list[str]:
    """The `pool_size` most frequent answers of a split's rounds (equal counts in order of first use)."""
    counts = Counter(data["answers"][turn["answer"]].strip() for dialog in data["dialogs"]
                     for turn in dialog["dialog"] if "answer" in turn)
    counts.pop("", None)
    if not counts:
        raise UserError(f"{path}: has no answered rounds to take candidates from; give -candidates FILE")
    return [answer for answer, _ in counts.most_common(pool_size)]


class Chat:
    """One chat session: the image, its caption, the history, and what each input line does
    (`echo`: repeat each question in the text output, for input that no terminal shows)."""

    def __init__(self, ranker: DialogRanker, pool: list[str], captions: dict[int, str],
                 read_line: Callable[[str], Optional[str]], out: TextIO, as_json: bool, echo: bool):
        self.ranker, self.pool, self.captions = ranker, pool, captions
        self.read_line, self.out, self.as_json, self.echo = read_line, out, as_json, echo
        self.image_id, self.caption, self.history = -1, "", []
        self.lines_read = 0

    def read(self, prompt: str) -> Optional[str]:
        """The next input line (None at the end); UserError naming a line that is not UTF-8 (undecodable
        bytes, or the lone surrogates a lenient decoding makes of them)."""
        try:
            line = self.read_line(prompt)
            if line is not None:
                line.encode("utf-8")
        except (UnicodeDecodeError, UnicodeEncodeError):
            raise UserError(f"standard input line {self.lines_read + 1}: not UTF-8 text") from None
        self.lines_read += line is not None
        return line

    def show(self, text: str = "", **event) -> None:
        """Write `event` as a JSON line with -json, else `text`."""
        print(json.dumps(event) if self.as_json else text, file=self.out, flush=True)

    def open_image(self, image_id: int) -> bool:
        """Switch to `image_id` with an empty history; False when the input ended before a caption."""
        self.ranker.image_record(image_id)  # UserError when the store lacks it
        caption = self.captions.get(image_id)
        if caption is None:
            caption = self.read(f"image {image_id} has no caption in -dialogs; type one: ")
            if caption is None:
                return False
        self.image_id, self.caption, self.history = image_id, caption.strip(), []
        self.show(f"image {image_id}: {self.caption}", event="image", image_id=image_id, caption=self.caption)
        return True

    def handle(self, line: str) -> bool:
        """Act on one input line; False to end the chat."""
        line = line.strip()
        if not line:
            return True
        if line.startswith(":"):
            command, _, argument = line.partition(" ")
            if command == ":why":
                self.why()
            elif command == ":reset":
                self.history = []
                self.show("(history cleared)", event="reset", image_id=self.image_id)
            elif command == ":image":
                try:
                    image_id = int(argument)
                except ValueError:
                    raise UserError(f":image needs an image id (an integer), got {argument.strip()!r}") from None
                return self.open_image(image_id)
            elif command != ":quit":
                raise UserError(f"unknown command {command!r} (the commands: {COMMANDS})")
            return command != ":quit"
        question, given, answer = (part.strip() for part in line.partition("="))
        if not question:
            raise UserError(f"the question is empty in {line!r}")
        if given and not answer:
            raise UserError(f"no answer after '=' in {line!r}")
        self.ask(question, answer or None)
        return True

    def ask(self, question: str, answer: Optional[str]) -> None:
        """Rank the pool for `question`, show the best answers, put an answer into the history."""
        ranking = self.ranker.rank(self.image_id, self.caption, self.history, question, self.pool)[:TOP_ANSWERS]
        chosen = answer if answer is not None else ranking[0][0]
        self.history.append((question, chosen))
        lines = [f"Q: {question}"] * self.echo + [f"  {rank}. {probability:.4f}  {text}"
                                                  for rank, (text, probability) in enumerate(ranking, start=1)]
        lines.append(f"A: {chosen}" + ("  (yours)" if answer is not None else ""))
        self.show("\n".join(lines), event="turn", image_id=self.image_id, round=len(self.history),
                  question=question, answers=[{"answer": text, "probability": probability}
                                              for text, probability in ranking],
                  answer=chosen, answered_by="user" if answer is not None else "model")

    def why(self) -> None:
        """Show the regions the last answer's sequence attended to most (its round as it was asked)."""
        if not self.history:
            raise UserError(":why explains the last answer: ask a question first")
        question, answer = self.history[-1]
        explained = self.ranker.rank(self.image_id, self.caption, self.history[:-1], question, [answer],
                                     explain=True)[0]
        regions = explained.top_regions(TOP_REGIONS)
        lines = [f"why {answer!r} (to {question!r}): the regions its sequence attended to most "
                 "(region 0: the whole image; box x1, y1, x2, y2 in pixels)"]
        lines += [f"  region {region.region:>2}  weight {region.weight:.3f}  box "
                  f"({', '.join(f'{value:.0f}' for value in region.box)})" for region in regions]
        self.show("\n".join(lines), event="why", image_id=self.image_id, round=len(self.history), question=question,
                  answer=answer, explain={"regions": [region._asdict() for region in regions]})


def line_reader(interactive: bool, stdin: TextIO) -> Callable[[str], Optional[str]]:
    """prompt -> the next input line (None at the end): input() on a terminal, else lines of `stdin`
    decoded one by one as UTF-8 (a byte-order mark and CRLF dropped)."""
    def from_terminal(prompt: str) -> Optional[str]:
        try:
            return input(prompt)
        except EOFError:
            return None

    source = getattr(stdin, "buffer", stdin)  # bytes when it has them: each line decoded on its own

    def from_stream(prompt: str) -> Optional[str]:
        line = source.readline()
        line = line.decode("utf-8-sig") if isinstance(line, bytes) else line.removeprefix("\ufeff")
        return line.rstrip("\r\n") if line else None

    return from_terminal if interactive else from_stream


def pick_image(options: ChatOptions, ranker: DialogRanker, captions: dict[int, str]) -> int:
    """-image_id, or an image drawn with -seed among those of -dialogs (else of the store)."""
    if options.image_id >= 0:
        return options.image_id
    images = sorted(image_id for image_id in captions if image_id in ranker.features) if captions \
        else sorted(ranker.features.image_ids())
    if not images:
        raise UserError(f"{options.dialogs}: none of its images is in {options.visdial_image_feats}")
    return random.Random(options.seed).choice(images)


def chat(options: ChatOptions, stdin: TextIO, stdout: TextIO, interactive: bool) -> None:
    pool = read_candidates(options.candidates) if options.candidates else None
    captions = {}
    if options.dialogs:
        data = load_visdial_json(options.dialogs, None)["data"]
        captions = {dialog["image_id"]: dialog["caption"] for dialog in data["dialogs"]}
        pool = pool or frequent_answers(data, options.pool_size, options.dialogs)
    ranker = DialogRanker.from_checkpoint(
        options.start_path, model_config=options.model_config, vocab=options.vocab,
        features=options.visdial_image_feats, device=options.device, precision=options.precision,
        model_type=options.model_type, max_seq_len=options.max_seq_len, max_rounds=options.visdial_tot_rounds,
        tokens_per_batch=options.eval_tokens_per_batch)
    check_pool(ranker.encoder.tokenizer, pool, options.candidates or options.dialogs)
    session = Chat(ranker, pool, captions, line_reader(interactive, stdin), stdout, options.json, echo=not interactive)
    if not session.open_image(pick_image(options, ranker, captions)):
        return
    if interactive and not options.json:
        print(f"{len(pool)} candidate answers. Ask a question; 'question = answer' puts your answer into the "
              f"history; {COMMANDS}.", file=stdout)
    while (line := session.read("Q: ")) is not None:
        try:
            if not session.handle(line):
                return
        except UserError as error:
            if not interactive:
                raise UserError(f"standard input line {session.lines_read}: {error}") from None
            print(f"error: {error}", file=sys.stderr)


def main(argv=None) -> None:
    options = parse_options(argv, ChatOptions)
    report_problems(options.problems())
    chat(options, sys.stdin, sys.stdout, interactive=sys.stdin.isatty())


if __name__ == "__main__":
    run_cli(main)
