"""Bug injection by small AST mutations of a project's functions, each a plausible slip a person could make.

A candidate is found in the AST and written back as a minimal text edit (an operator token swapped, a
constant changed, a condition negated), so the rest of the file, comments and layout included, stays
byte-identical and the diff is a line or two. Every candidate is checked: the edited file must parse, and
the edited function's AST must equal the original one with exactly that mutation applied, so an edit that
lands anywhere else is dropped. Order is deterministic; `sample` draws from it with a seed.
"""

from __future__ import annotations

import ast
import copy
import hashlib
import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from agentgym.errors import AgentGymError

# Directories and files that are not the package's own source: tests, docs, build scripts.
SKIP_DIRS = frozenset({"test", "tests", "testing", "docs", "doc", "examples", "benchmarks", "build", "dist"})
SKIP_FILES = frozenset({"setup.py", "conftest.py", "versioneer.py", "_version.py", "noxfile.py", "fabfile.py"})
_OPERATOR_TOKEN = re.compile(
    r"\bnot\s+in\b|\bis\s+not\b|\bin\b|\bis\b|\band\b|\bor\b|\bnot\b|\*\*=?|//=?|<<=?|>>=?|[<>=!]=|[-+*/%@&|^]=?|[<>]"
)
_COMPARE_FLIPS: dict[type, type] = {
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq,
    ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is,
}
_ARITH_SWAPS: dict[type, type] = {
    ast.Add: ast.Sub, ast.Sub: ast.Add, ast.FloorDiv: ast.Div, ast.Div: ast.FloorDiv, ast.Mult: ast.FloorDiv,
}
_TOKENS: dict[type, str] = {
    ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=", ast.In: "in",
    ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not", ast.Add: "+", ast.Sub: "-", ast.Mult: "*",
    ast.FloorDiv: "//", ast.Div: "/", ast.And: "and", ast.Or: "or",
}


class MutationError(AgentGymError):
    """A mutation that no longer fits the file it was made for."""


@dataclass(frozen=True)
class Mutation:
    """One injected bug: where it is, what kind it is, and the function's lines before and after."""

    file: str  # posix path relative to the project root
    function: str  # qualified name, e.g. "Cache.get" or "outer.<locals>.inner"
    line: int  # line of the mutated node (1-based)
    operator: str  # e.g. "flip_comparison"
    start: int  # first line of the function's `def` (1-based, decorators excluded)
    end: int  # last line of the function, inclusive
    original: str  # the function's lines as they are
    replacement: str  # the same lines with the bug
    detail: str  # what changed, e.g. "`<` -> `<=`" (for logs; never shown to an agent)

    def key(self) -> str:
        """A short stable hash naming this mutation (the instance id's suffix)."""
        text = "\x1f".join([self.file, self.function, str(self.line), self.operator, self.replacement])
        return hashlib.sha256(text.encode()).hexdigest()[:10]

    def apply(self, source: str) -> str:
        """`source` with the function's lines replaced; MutationError if the file no longer holds them."""
        lines = source.splitlines(keepends=True)
        if "".join(lines[self.start - 1:self.end]) != self.original:
            raise MutationError(f"{self.file} lines {self.start}-{self.end} are not {self.function} as it was mutated")
        return "".join(lines[:self.start - 1]) + self.replacement + "".join(lines[self.end:])


@dataclass(frozen=True)
class _Edit:
    """Replace file bytes [start, end) with `text` (offsets into the UTF-8 encoded source)."""

    start: int
    end: int
    text: str


@dataclass(frozen=True)
class _Candidate:
    """A mutation as found in the AST: the node, the text edits, and the same change made on a copy of the AST."""

    node: ast.AST
    operator: str
    edits: tuple[_Edit, ...]
    transform: Callable[[ast.AST], ast.AST]  # takes a shallow copy of `node`, returns its replacement; shares children
    detail: str


def source_files(root: Path) -> list[str]:
    """The package's own .py files under `root` (tests, docs, setup and build scripts left out), sorted."""
    root = Path(root)
    found = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        dirs = rel.parts[:-1]
        if any(d in SKIP_DIRS or d.startswith(".") or d.endswith(".egg-info") for d in dirs):
            continue
        name = rel.name
        if name in SKIP_FILES or name.startswith("test_") or name.endswith("_test.py") or not path.is_file():
            continue
        found.append(rel.as_posix())
    return sorted(found)


def find_mutations(root: Path) -> list[Mutation]:
    """Every candidate mutation of the package under `root`, in a deterministic order (file, line, operator)."""
    mutations: list[Mutation] = []
    for rel in source_files(root):
        try:
            source = (Path(root) / rel).read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue  # not text this module can edit safely
        mutations += mutations_in_source(source, rel)
    return mutations


def sample(mutations: Sequence[Mutation], seed: int) -> list[Mutation]:
    """All of `mutations` in an order drawn with `random.Random(seed)`, the operators taking turns.

    Some operators propose many more candidates than others (every `return` can lose its value); taking
    them in turns keeps a prefix of the order, which is what a caller uses, a mix of kinds of bug.
    """
    rng = random.Random(seed)
    by_operator: dict[str, list[Mutation]] = {}
    for mutation in mutations:
        by_operator.setdefault(mutation.operator, []).append(mutation)
    queues = [by_operator[name] for name in sorted(by_operator)]
    for queue in queues:
        rng.shuffle(queue)
    order: list[Mutation] = []
    while queues:
        rng.shuffle(queues)
        for queue in queues:
            order.append(queue.pop())
        queues = [q for q in queues if q]
    return order


def mutations_in_source(source: str, file: str) -> list[Mutation]:
    """Candidate mutations of one file's functions; a file that does not parse has none."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return []
    data = source.encode("utf-8")
    line_starts = _line_starts(data)
    found: list[Mutation] = []
    for func, qualname in _functions(tree):
        if _is_trivial(func):
            continue
        parents = _parent_map(func)
        for cand in _candidates(func, data, line_starts):
            mutation = _realise(cand, func, qualname, file, data, line_starts, parents)
            if mutation is not None:
                found.append(mutation)
    found.sort(key=lambda m: (m.start, m.line, m.operator, m.replacement))
    return found


# --- finding functions and the nodes inside them ---

def _functions(tree: ast.Module) -> Iterator[tuple[ast.FunctionDef | ast.AsyncFunctionDef, str]]:
    """Every function and method with its qualified name, outer ones first."""
    def visit(node: ast.AST, prefix: str) -> Iterator[tuple[ast.FunctionDef | ast.AsyncFunctionDef, str]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                yield child, name
                yield from visit(child, f"{name}.<locals>.")
            elif isinstance(child, ast.ClassDef):
                yield from visit(child, f"{prefix}{child.name}.")
            elif not isinstance(child, ast.expr):
                yield from visit(child, prefix)
    yield from visit(tree, "")


def _is_trivial(func: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """A body of only a docstring, `pass`, `...` or `raise NotImplementedError` has nothing to break."""
    body = list(func.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    for stmt in body:
        if isinstance(stmt, ast.Pass) or (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)):
            continue
        if isinstance(stmt, ast.Raise) and "NotImplementedError" in ast.unparse(stmt):
            continue
        return False
    return True


def _body_nodes(func: ast.FunctionDef | ast.AsyncFunctionDef) -> Iterator[ast.AST]:
    """Nodes of the function's own body: not nested defs or classes (their own entries), f-strings or annotations."""
    stack: list[ast.AST] = list(reversed(func.body))
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.JoinedStr)):
            continue
        yield node
        children = [c for c in ast.iter_child_nodes(node)
                    if not (isinstance(node, ast.AnnAssign) and c is node.annotation)]
        stack.extend(reversed(children))


# --- the operators ---

def _candidates(func: ast.AST, data: bytes, starts: list[int]) -> Iterator[_Candidate]:
    """Every mutation each operator proposes for the nodes of `func`."""
    for node in _body_nodes(func):
        for operator in _OPERATORS:
            yield from operator(node, data, starts)


def _flip_comparison(node: ast.AST, data: bytes, starts: list[int]) -> Iterator[_Candidate]:
    if not isinstance(node, ast.Compare):
        return
    operands = [node.left, *node.comparators]
    for i, op in enumerate(node.ops):
        new = _COMPARE_FLIPS.get(type(op))
        edit = new and _token_edit(operands[i], operands[i + 1], _TOKENS[type(op)], _TOKENS[new], data, starts)
        if edit:
            def transform(n: ast.AST, i: int = i, new: type = new) -> ast.AST:
                n.ops = [*n.ops[:i], new(), *n.ops[i + 1:]]
                return n
            yield _Candidate(node, "flip_comparison", (edit,), transform, f"`{_TOKENS[type(op)]}` -> `{_TOKENS[new]}`")


def _swap_arithmetic(node: ast.AST, data: bytes, starts: list[int]) -> Iterator[_Candidate]:
    if not isinstance(node, ast.BinOp) or type(node.op) not in _ARITH_SWAPS:
        return
    if any(_is_text(side) or isinstance(side, (ast.List, ast.Tuple, ast.ListComp)) for side in (node.left, node.right)):
        return  # `"a" + b` -> `"a" - b` or `[0] * n` -> `[0] // n` is a TypeError no one writes
    old, new = type(node.op), _ARITH_SWAPS[type(node.op)]
    edit = _token_edit(node.left, node.right, _TOKENS[old], _TOKENS[new], data, starts)
    if edit:
        def transform(n: ast.AST) -> ast.AST:
            n.op = new()
            return n
        yield _Candidate(node, "swap_arithmetic", (edit,), transform, f"`{_TOKENS[old]}` -> `{_TOKENS[new]}`")


def _swap_augmented(node: ast.AST, data: bytes, starts: list[int]) -> Iterator[_Candidate]:
    if not isinstance(node, ast.AugAssign) or type(node.op) not in (ast.Add, ast.Sub) or _is_text(node.value):
        return
    old, new = type(node.op), _ARITH_SWAPS[type(node.op)]
    edit = _token_edit(node.target, node.value, _TOKENS[old] + "=", _TOKENS[new] + "=", data, starts)
    if edit:
        def transform(n: ast.AST) -> ast.AST:
            n.op = new()
            return n
        yield _Candidate(node, "swap_augmented", (edit,), transform, f"`{_TOKENS[old]}=` -> `{_TOKENS[new]}=`")


def _swap_bool_op(node: ast.AST, data: bytes, starts: list[int]) -> Iterator[_Candidate]:
    if not isinstance(node, ast.BoolOp):
        return
    old = _TOKENS[type(node.op)]
    new_type = ast.Or if isinstance(node.op, ast.And) else ast.And
    edits = [_token_edit(a, b, old, _TOKENS[new_type], data, starts) for a, b in zip(node.values, node.values[1:])]
    if all(edits):
        def transform(n: ast.AST) -> ast.AST:
            n.op = new_type()
            return n
        yield _Candidate(node, "swap_bool_op", tuple(edits), transform, f"`{old}` -> `{_TOKENS[new_type]}`")


def _off_by_one(node: ast.AST, data: bytes, starts: list[int]) -> Iterator[_Candidate]:
    if not (isinstance(node, ast.Constant) and type(node.value) is int):
        return
    start, end = _span(node, data, starts)
    for new in (node.value + 1, node.value - 1):
        if new < 0:
            continue  # a negative literal would need a unary minus of its own
        def transform(n: ast.AST, new: int = new) -> ast.AST:
            n.value = new
            return n
        yield _Candidate(node, "off_by_one", (_Edit(start, end, str(new)),), transform, f"`{node.value}` -> `{new}`")


def _slice_bound(node: ast.AST, data: bytes, starts: list[int]) -> Iterator[_Candidate]:
    if not isinstance(node, ast.Slice):
        return
    for field in ("lower", "upper"):
        bound = getattr(node, field)
        # Simple bounds only: a constant is off_by_one's, and `+ 1` after a looser expression would bind wrongly.
        if not isinstance(bound, (ast.Name, ast.Attribute, ast.Call, ast.Subscript)):
            continue
        _, end = _span(bound, data, starts)
        for sign, op in (("+", ast.Add), ("-", ast.Sub)):
            def transform(n: ast.AST, field: str = field, op: type = op) -> ast.AST:
                setattr(n, field, ast.BinOp(getattr(n, field), op(), ast.Constant(1)))
                return n
            yield _Candidate(node, "slice_bound", (_Edit(end, end, f" {sign} 1"),), transform, f"{field} bound {sign} 1")


def _negate_condition(node: ast.AST, data: bytes, starts: list[int]) -> Iterator[_Candidate]:
    if not isinstance(node, (ast.If, ast.While, ast.IfExp)) or isinstance(node.test, (ast.Constant, ast.Compare)):
        return  # a comparison is flip_comparison's: `not (a != b)` is no slip anyone makes
    test = node.test
    start, end = _span(test, data, starts)
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        text = data[start:end].decode("utf-8")
        edit = _Edit(start, end, text[len("not"):].lstrip(" \t"))
        def transform(n: ast.AST) -> ast.AST:
            n.test = n.test.operand
            return n
        detail = "`not` removed"
    else:
        loose = isinstance(test, (ast.BoolOp, ast.IfExp, ast.NamedExpr, ast.Lambda, ast.UnaryOp))
        text = data[start:end].decode("utf-8")
        edit = _Edit(start, end, f"not ({text})" if loose else f"not {text}")
        def transform(n: ast.AST) -> ast.AST:
            n.test = ast.UnaryOp(ast.Not(), n.test)
            return n
        detail = "condition negated"
    yield _Candidate(node, "negate_condition", (edit,), transform, detail)


def _drop_return_value(node: ast.AST, data: bytes, starts: list[int]) -> Iterator[_Candidate]:
    if not isinstance(node, ast.Return) or node.value is None:
        return
    if isinstance(node.value, ast.Constant) and node.value.value is None:
        return
    start, end = _span(node, data, starts)
    def transform(n: ast.AST) -> ast.AST:
        n.value = None
        return n
    yield _Candidate(node, "drop_return_value", (_Edit(start, end, "return"),), transform, "return value dropped")


def _swap_arguments(node: ast.AST, data: bytes, starts: list[int]) -> Iterator[_Candidate]:
    if not isinstance(node, ast.Call):
        return
    for i in range(len(node.args) - 1):
        # Two variables passed in the wrong order is the slip people make; a literal swapped with a name is not.
        if not all(isinstance(a, (ast.Name, ast.Attribute, ast.Subscript)) for a in node.args[i:i + 2]):
            continue
        (s1, e1), (s2, e2) = _span(node.args[i], data, starts), _span(node.args[i + 1], data, starts)
        first, second = data[s1:e1].decode("utf-8"), data[s2:e2].decode("utf-8")
        if first == second:
            continue
        def transform(n: ast.AST, i: int = i) -> ast.AST:
            n.args = [*n.args[:i], n.args[i + 1], n.args[i], *n.args[i + 2:]]
            return n
        yield _Candidate(node, "swap_arguments", (_Edit(s1, e1, second), _Edit(s2, e2, first)), transform,
                         f"arguments {i + 1} and {i + 2} swapped")


def _swap_break_continue(node: ast.AST, data: bytes, starts: list[int]) -> Iterator[_Candidate]:
    if not isinstance(node, (ast.Break, ast.Continue)):
        return
    new, word = (ast.Continue, "continue") if isinstance(node, ast.Break) else (ast.Break, "break")
    start, end = _span(node, data, starts)
    def transform(n: ast.AST) -> ast.AST:
        return ast.copy_location(new(), n)
    yield _Candidate(node, "swap_break_continue", (_Edit(start, end, word),), transform, f"-> `{word}`")


def _swap_min_max(node: ast.AST, data: bytes, starts: list[int]) -> Iterator[_Candidate]:
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("min", "max")):
        return
    new = "max" if node.func.id == "min" else "min"
    start, end = _span(node.func, data, starts)
    def transform(n: ast.AST) -> ast.AST:
        n.func = ast.Name(id=new, ctx=ast.Load())
        return n
    yield _Candidate(node, "swap_min_max", (_Edit(start, end, new),), transform, f"`{node.func.id}` -> `{new}`")


_OPERATORS = (_flip_comparison, _swap_arithmetic, _swap_augmented, _swap_bool_op, _off_by_one, _slice_bound,
              _negate_condition, _drop_return_value, _swap_arguments, _swap_break_continue, _swap_min_max)
OPERATOR_NAMES = tuple(op.__name__.lstrip("_") for op in _OPERATORS)


# --- text edits and their check ---

def _line_starts(data: bytes) -> list[int]:
    """Byte offset of the start of each line (index 0 is line 1)."""
    starts = [0]
    for i, byte in enumerate(data):
        if byte == 0x0A:
            starts.append(i + 1)
    return starts


def _span(node: ast.AST, data: bytes, starts: list[int]) -> tuple[int, int]:
    """Byte offsets of `node` in the file (ast's col_offset counts UTF-8 bytes)."""
    return starts[node.lineno - 1] + node.col_offset, starts[node.end_lineno - 1] + node.end_col_offset


def _token_edit(left: ast.AST, right: ast.AST, old: str, new: str, data: bytes, starts: list[int]) -> _Edit | None:
    """Swap the operator token between two operands; None unless exactly one token sits in the gap and it is `old`."""
    gap_start, gap_end = _span(left, data, starts)[1], _span(right, data, starts)[0]
    gap = data[gap_start:gap_end].decode("utf-8")
    # The gap holds only brackets, whitespace, line continuations, comments and the operator: blank the comments.
    cleaned = re.sub(r"#[^\n]*", lambda m: " " * len(m.group()), gap)
    tokens = list(_OPERATOR_TOKEN.finditer(cleaned))
    if len(tokens) != 1 or re.sub(r"\s+", " ", tokens[0].group()) != old:
        return None
    prefix = len(gap[:tokens[0].start()].encode("utf-8"))
    size = len(tokens[0].group().encode("utf-8"))
    return _Edit(gap_start + prefix, gap_start + prefix + size, new)


def _is_text(node: ast.AST) -> bool:
    return isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)))


def _realise(
    cand: _Candidate, func: ast.AST, qualname: str, file: str, data: bytes, starts: list[int],
    parents: dict[int, tuple[ast.AST, str, int | None]],
) -> Mutation | None:
    """The Mutation of a candidate, or None when its edited text is not exactly the intended AST change."""
    start, end = func.lineno, func.end_lineno
    lo, hi = starts[start - 1], starts[end] if end < len(starts) else len(data)
    if any(edit.start < lo or edit.end > hi for edit in cand.edits):
        return None
    text = data[lo:hi]
    for edit in sorted(cand.edits, key=lambda e: e.start, reverse=True):
        text = text[:edit.start - lo] + edit.text.encode("utf-8") + text[edit.end - lo:]
    try:
        original, replacement = data[lo:hi].decode("utf-8"), text.decode("utf-8")
        got = _parse_function(replacement, indented=func.col_offset > 0)
    except (SyntaxError, ValueError, UnicodeDecodeError):
        return None
    expected = _fingerprint_with(func, cand, parents)
    if got is None or expected is None or _fingerprint(got) != expected or expected == _fingerprint(func):
        return None
    return Mutation(
        file=file, function=qualname, line=cand.node.lineno, operator=cand.operator, start=start, end=end,
        original=original, replacement=replacement, detail=cand.detail,
    )


def _parse_function(text: str, indented: bool) -> ast.AST | None:
    """The function a snippet of its own lines defines (an indented one parsed inside `if 1:`)."""
    tree = ast.parse("if 1:\n" + text if indented else text)
    body = tree.body[0].body if indented else tree.body
    return body[0] if len(body) == 1 and isinstance(body[0], (ast.FunctionDef, ast.AsyncFunctionDef)) else None


def _fingerprint(func: ast.AST) -> str:
    """What a function does, as a string: its arguments, body and return annotation (not its decorators or position)."""
    returns = ast.dump(func.returns) if func.returns else ""
    return "\x1f".join([ast.dump(func.args), *(ast.dump(stmt) for stmt in func.body), returns])


def _parent_map(func: ast.AST) -> dict[int, tuple[ast.AST, str, int | None]]:
    """For each node under `func` (by id): its parent, the field holding it and its index in a list field."""
    parents: dict[int, tuple[ast.AST, str, int | None]] = {}
    for parent in ast.walk(func):
        for field, value in ast.iter_fields(parent):
            if isinstance(value, ast.AST):
                parents[id(value)] = (parent, field, None)
            elif isinstance(value, list):
                for i, item in enumerate(value):
                    if isinstance(item, ast.AST):
                        parents[id(item)] = (parent, field, i)
    return parents


def _fingerprint_with(func: ast.AST, cand: _Candidate, parents: dict[int, tuple[ast.AST, str, int | None]]) -> str | None:
    """The fingerprint `func` has with the candidate's node replaced by its transform (the tree is put back after)."""
    if id(cand.node) not in parents:
        return None
    parent, field, index = parents[id(cand.node)]
    new = cand.transform(copy.copy(cand.node))
    holder = getattr(parent, field)
    if index is None:
        setattr(parent, field, new)
    else:
        holder[index] = new
    try:
        return _fingerprint(func)
    finally:
        if index is None:
            setattr(parent, field, cand.node)
        else:
            holder[index] = cand.node
