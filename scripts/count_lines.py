"""Count code lines the way issue 57's size goal does: every .py file under the given folders
(default infer, serve, export and ptx), leaving out blank lines, comment lines and docstrings.

    python scripts/count_lines.py            # total, then one line per folder
    python scripts/count_lines.py --files    # and each file, largest first

A line counts when a token other than a comment or a line break starts or continues on it and it is
not inside a docstring (the first string statement of a module, class or function), so a statement
split over three lines is three lines, as a reader sees it."""
from __future__ import annotations

import argparse
import ast
import io
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("infer", "serve", "export", "ptx")
# Tokens that make no line code on their own.
NOT_CODE = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
            tokenize.ENCODING, tokenize.ENDMARKER}


def docstring_lines(tree: ast.AST) -> set[int]:
    """Line numbers held by docstrings anywhere in ``tree``."""
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                lines |= set(range(first.lineno, first.end_lineno + 1))
    return lines


def code_lines(source: str) -> int:
    """How many lines of ``source`` hold code (not blank, not only a comment, not a docstring)."""
    lines = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in NOT_CODE:
            lines |= set(range(token.start[0], token.end[0] + 1))
    return len(lines - docstring_lines(ast.parse(source)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", default=list(FOLDERS), help="folders under the repository root")
    parser.add_argument("--files", action="store_true", help="list each file's count, largest first")
    args = parser.parse_args()
    per_file = {path: code_lines(path.read_text()) for folder in args.folders
                for path in sorted((ROOT / folder).rglob("*.py"))}
    print(f"{sum(per_file.values())} code lines in {' + '.join(args.folders)}")
    for folder in args.folders:
        print(f"  {folder}: {sum(n for p, n in per_file.items() if p.is_relative_to(ROOT / folder))}")
    if args.files:
        for path, n in sorted(per_file.items(), key=lambda item: -item[1]):
            print(f"  {n:6d}  {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
