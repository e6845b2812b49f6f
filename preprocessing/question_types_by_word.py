"""Write a question-type file for real VisDial dialogs by grouping questions on their first words (`RULES`).

    python preprocessing/question_types_by_word.py -split val \\
        -visdial_json data/visdial/visdial_1.0_val_processed.json -out data/visdial/visdial_1.0_val_question_types.json
    python evaluate.py -split val ... -question_types data/visdial/visdial_1.0_val_question_types.json
"""
from pathlib import Path

from dataloader.question_types import write_question_types
from dataloader.visdial_json import SPLITS, load_visdial_json
from utils.errors import ArgumentParser, run_cli
from utils.outputs import Output, check_outputs

YES_NO_WORDS = ("is", "are", "was", "were", "do", "does", "did", "can", "could", "has", "have", "any",
                "will", "would", "should", "there")
RULES = (  # (type, description, first words that select it), the first match wins
    ("color", "what color / colour", (("what", "color"), ("what", "colour"), ("what", "colors"))),
    ("counting", "how many", (("how", "many"),)),
    ("yes_no", "yes / no questions (is, are, does, can, ...)", tuple((word,) for word in YES_NO_WORDS)),
    ("what", "other what / which questions", (("what",), ("which",))),
    ("where", "where", (("where",),)),
    ("who", "who", (("who",),)),
    ("how", "other how questions", (("how",),)),
    ("why", "why", (("why",),)),
)
OTHER = ("other", "every other question")


def question_type(question: str) -> str:
    """The type of `question` by its first words (`RULES`), "other" when no rule matches."""
    words = tuple(question.lower().replace("?", " ").split())
    for name, _, starts in RULES:
        if any(words[:len(start)] == start for start in starts):
            return name
    return OTHER[0]


def round_types(content: dict) -> list[dict]:
    """[{image_id, round_id, question_type}] for every round of a VisDial json (raw or processed)."""
    questions = content["data"]["questions"]
    return [{"image_id": dialog["image_id"], "round_id": number,
             "question_type": question_type(questions[turn["question"]])}
            for dialog in content["data"]["dialogs"] for number, turn in enumerate(dialog["dialog"], start=1)]


def main(argv=None) -> None:
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-visdial_json", "--visdial_json", required=True,
                        help="a VisDial v1.0 split file (raw or preprocessed)")
    parser.add_argument("-split", "--split", choices=SPLITS, default="val", help="the split of -visdial_json")
    parser.add_argument("-out", "--out", required=True, help="the question-type file to write")
    args = parser.parse_args(argv)
    source, out = Path(args.visdial_json), Path(args.out)
    check_outputs([Output("-out", out, what="the question-type file")], {"-visdial_json": source})
    content = load_visdial_json(source, args.split)
    rounds = round_types(content)
    descriptions = dict([(name, description) for name, description, _ in RULES] + [OTHER])
    write_question_types(out, descriptions, rounds)
    counts = {name: sum(entry["question_type"] == name for entry in rounds) for name in descriptions}
    print(f"wrote the types of {len(rounds)} rounds to {out}: "
          + ", ".join(f"{name} {count}" for name, count in counts.items() if count))


if __name__ == "__main__":
    run_cli(main)
