"""No output may destroy an input or another output: a command's paths, declared once, checked first.

Every command line declares what it reads (flag -> path) and what it writes (`Output`: the flag
that names it, the path, file or folder) and calls `check_outputs` before any work. It refuses,
one line per problem naming both flags, when

* an output is one of the inputs, after resolving symbolic and hard links;
* an output folder holds an input, or an output lies inside an input folder (an LMDB store);
* two outputs are the same path;
* an output is an existing folder where a file is written, or a file where a folder is;

and then, when none of that holds, that every output can be written (utils/files.check_writable).
Nothing is created or changed before every output has passed.
"""
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence, Union

from utils.errors import report_problems
from utils.files import check_writable, resolved

PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class Output:
    """One output of a command: `flag` names it as the user gave it (`-save_path_val`,
    `-save_path/-save_name`), `path` is where it goes, `is_folder` whether it is a folder, `what`
    names it in the writability message (`cannot write the output`)."""
    flag: str
    path: Path
    is_folder: bool = False
    what: str = "the output"


def _same(first: Path, second: Path) -> bool:
    """Whether two resolved paths are one file (equal, or hard links to the same inode)."""
    if first == second:
        return True
    try:
        return os.path.samefile(first, second)
    except OSError:  # one of them does not exist (yet)
        return False


def _kind_problem(output: Output) -> str:
    if output.is_folder and output.path.exists() and not output.path.is_dir():
        return f"{output.path}: the output {output.flag} is a file, expected a folder"
    if not output.is_folder and output.path.is_dir():
        return f"{output.path}: the output {output.flag} is a folder, expected a file"
    return ""


def _input_problem(output: Output, resolved_output: Path, flag: str, path: PathLike) -> str:
    """How `output` would destroy the input `flag` (at `path`), or ''."""
    resolved_input = resolved(path, flag)
    if _same(resolved_output, resolved_input):
        return (f"{output.path}: the output {output.flag} is the input {flag}; writing it would destroy "
                "the input (give the output another path)")
    if output.is_folder and resolved_output in resolved_input.parents:
        return (f"{output.path}: the output folder {output.flag} holds the input {flag} ({path}); "
                "choose a folder outside the inputs")
    if resolved_input in resolved_output.parents:
        return (f"{output.path}: the output {output.flag} is inside the input {flag} ({path}); "
                "choose a path outside the inputs")
    return ""


def check_outputs(outputs: Union[Sequence[Output], Mapping[str, PathLike]], inputs: Mapping[str, PathLike]) -> None:
    """Refuse, before any work, outputs that would destroy an input or another output (module
    docstring), then outputs that cannot be written.

    outputs: Outputs, or flag -> path of output files (`{"--out": args.out}`); inputs: flag
    (`-visdial_train`) -> path of everything the command reads. Empty paths are skipped. Raises
    UserError: one line per problem.
    """
    if isinstance(outputs, Mapping):
        outputs = [Output(flag, Path(path)) for flag, path in outputs.items() if str(path)]
    inputs = {flag: path for flag, path in inputs.items() if str(path)}
    resolved_outputs = [resolved(output.path, output.flag) for output in outputs]
    problems = []
    for index, output in enumerate(outputs):
        earlier = next((other for other, path in zip(outputs[:index], resolved_outputs)
                        if _same(path, resolved_outputs[index])), None)
        if earlier is not None:
            problems.append(f"{output.path}: the outputs {earlier.flag} and {output.flag} are the same path; "
                            "give each output its own")
            continue
        overlaps = [problem for flag, path in inputs.items()
                    if (problem := _input_problem(output, resolved_outputs[index], flag, path))]
        problems += overlaps[:1] or [problem for problem in [_kind_problem(output)] if problem]
    report_problems(problems)
    for output in outputs:
        check_writable(output.path, output.what, is_folder=output.is_folder)
