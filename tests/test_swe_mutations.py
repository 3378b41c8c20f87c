"""AST bug injection: every operator gives code that compiles, differs, and changes only its function's lines."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

from agentgym.envs.swe import mutations as mut

SOURCE = textwrap.dedent('''\
    """A module with one function per operator, and code around them that must stay byte-identical."""
    import math

    LIMIT = 10  # module level: never mutated


    def compare(a, b):
        # keep this comment
        return a < b


    def arith(a, b):
        return a + b * (a // b)


    def augment(xs):
        total = 0
        for x in xs:
            total += x
        return total


    def logic(a, b):
        return a and (b or a)


    def constant(xs):
        return xs[1]


    def bounds(xs, n):
        return xs[:n]


    def cond(flag):
        if flag:
            return "yes"
        while not flag:
            flag = True
        return "no"


    def args(a, b):
        return math.pow(a, b)


    def loop(xs):
        out = []
        for x in xs:
            if x is None:
                break
            out.append(x)
        return out


    def extreme(xs):
        return min(xs)


    class Box:
        def get(self, key, default=None):
            if key in self.data:
                return self.data[key]
            return default

        def outer(self):
            def inner(v):
                return v != 0
            return inner


    def stub():
        """Nothing to break here."""
        raise NotImplementedError
''')


def by_operator(operator: str, source: str = SOURCE) -> list[mut.Mutation]:
    return [m for m in mut.mutations_in_source(source, "pkg/mod.py") if m.operator == operator]


def check_local(m: mut.Mutation, source: str = SOURCE) -> str:
    """Apply `m` and assert it compiles, differs, and leaves every line outside its function alone."""
    new = m.apply(source)
    compile(new, "pkg/mod.py", "exec")
    assert new != source
    old_lines, new_lines = source.splitlines(keepends=True), new.splitlines(keepends=True)
    delta = len(new_lines) - len(old_lines)
    assert old_lines[:m.start - 1] == new_lines[:m.start - 1]
    assert old_lines[m.end:] == new_lines[m.end + delta:]
    assert m.start <= m.line <= m.end
    return "".join(new_lines[m.start - 1:m.end + delta])


CASES = [
    ("flip_comparison", "compare", "return a < b", "return a <= b"),
    ("flip_comparison", "Box.get", "if key in self.data:", "if key not in self.data:"),
    ("flip_comparison", "loop", "if x is None:", "if x is not None:"),
    ("flip_comparison", "Box.outer.<locals>.inner", "return v != 0", "return v == 0"),
    ("swap_arithmetic", "arith", "return a + b * (a // b)", "return a - b * (a // b)"),
    ("swap_arithmetic", "arith", "return a + b * (a // b)", "return a + b * (a / b)"),
    ("swap_augmented", "augment", "total += x", "total -= x"),
    ("swap_bool_op", "logic", "return a and (b or a)", "return a or (b or a)"),
    ("swap_bool_op", "logic", "return a and (b or a)", "return a and (b and a)"),
    ("off_by_one", "constant", "return xs[1]", "return xs[2]"),
    ("off_by_one", "constant", "return xs[1]", "return xs[0]"),
    ("slice_bound", "bounds", "return xs[:n]", "return xs[:n + 1]"),
    ("slice_bound", "bounds", "return xs[:n]", "return xs[:n - 1]"),
    ("negate_condition", "cond", "if flag:", "if not flag:"),
    ("negate_condition", "cond", "while not flag:", "while flag:"),
    ("drop_return_value", "extreme", "return min(xs)", "return"),
    ("swap_arguments", "args", "return math.pow(a, b)", "return math.pow(b, a)"),
    ("swap_break_continue", "loop", "break", "continue"),
    ("swap_min_max", "extreme", "return min(xs)", "return max(xs)"),
]


def test_every_operator_has_a_case():
    assert {case[0] for case in CASES} == set(mut.OPERATOR_NAMES)


@pytest.mark.parametrize(("operator", "function", "before", "after"), CASES)
def test_each_operator_makes_its_bug_and_nothing_else(operator, function, before, after):
    found = [m for m in by_operator(operator) if m.function == function]
    assert found, f"{operator} proposed nothing in {function}"
    for m in found:
        check_local(m)
        assert m.operator == operator and m.file == "pkg/mod.py"
    exact = [m for m in found if m.original.replace(before, after, 1) == m.replacement]
    assert exact, f"no {operator} mutation of {function} turns {before!r} into {after!r}: {[m.replacement for m in found]}"


def test_comments_and_layout_survive():
    (m,) = [m for m in by_operator("flip_comparison") if m.function == "compare"]
    new = m.apply(SOURCE)
    assert "    # keep this comment\n    return a <= b\n" in new
    # Exactly one line differs.
    changed = [(a, b) for a, b in zip(SOURCE.splitlines(), new.splitlines()) if a != b]
    assert changed == [("    return a < b", "    return a <= b")]


def test_module_level_code_docstrings_and_stubs_are_left_alone():
    everything = mut.mutations_in_source(SOURCE, "pkg/mod.py")
    assert everything
    assert not [m for m in everything if m.function == "stub"]
    assert all(m.start > 4 for m in everything)  # LIMIT = 10 sits on line 4
    assert {m.function for m in everything} >= {"Box.get", "Box.outer.<locals>.inner", "compare"}
    # A nested function's bugs belong to it, not to its parent.
    assert not [m for m in everything if m.function == "Box.outer" and "v != 0" in m.replacement
                and "v == 0" in m.replacement]


def test_strings_and_fstrings_are_not_mutated():
    source = 'def f(name, n):\n    return "a" + name + f"{n + 1}"\n'
    found = mut.mutations_in_source(source, "m.py")
    assert not [m for m in found if m.operator == "swap_arithmetic"]
    assert not [m for m in found if m.operator == "off_by_one"]


def test_operator_found_across_lines_comments_and_unicode():
    source = textwrap.dedent('''\
        def f(a, b):
            s = "héllo wörld"; return (a  # the left side
                    <
                    b)
    ''')
    (m,) = [m for m in mut.mutations_in_source(source, "m.py") if m.operator == "flip_comparison"]
    new = m.apply(source)
    assert new == source.replace("        <\n", "        <=\n")
    assert ast.dump(ast.parse(new)) != ast.dump(ast.parse(source))


def test_order_is_deterministic_and_sample_is_seeded(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "mod.py").write_text(SOURCE)
    (pkg / "other.py").write_text("def g(x):\n    return x - 1 if x > 0 else x\n")
    first, again = mut.find_mutations(tmp_path), mut.find_mutations(tmp_path)
    assert first == again and len(first) > 20
    assert [m.file for m in first] == sorted(m.file for m in first)
    keys = [m.key() for m in first]
    assert len(set(keys)) == len(keys)
    a, b, c = mut.sample(first, 0), mut.sample(first, 0), mut.sample(first, 1)
    assert a == b and a != c and sorted(a, key=lambda m: m.key()) == sorted(first, key=lambda m: m.key())
    # The operators take turns: the first few candidates are of different kinds.
    kinds = len({m.operator for m in first})
    assert len({m.operator for m in a[:kinds]}) == kinds


def test_source_files_skip_tests_docs_and_build_scripts(tmp_path):
    for rel in ("pkg/__init__.py", "pkg/core.py", "pkg/tests/test_core.py", "tests/test_x.py", "pkg/test_y.py",
                "pkg/y_test.py", "conftest.py", "setup.py", "docs/conf.py", "pkg/_version.py", "single.py",
                "build/lib/pkg/core.py", ".tox/x.py", "pkg.egg-info/x.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("def f(a):\n    return a + 1\n")
    assert mut.source_files(tmp_path) == ["pkg/__init__.py", "pkg/core.py", "single.py"]


def test_apply_refuses_a_file_that_changed():
    (m,) = [m for m in by_operator("flip_comparison") if m.function == "compare"]
    with pytest.raises(mut.MutationError, match="not compare as it was mutated"):
        m.apply(SOURCE.replace("return a < b", "return b > a"))


def test_a_file_that_does_not_parse_has_no_mutations():
    assert mut.mutations_in_source("def f(:\n    return 1\n", "bad.py") == []


def test_real_package_mutations_all_check_out():
    """Every candidate in a real module compiles and stays inside its function (toolz-like code, written here)."""
    source = Path(mut.__file__).read_text()
    found = mut.mutations_in_source(source, "mutations.py")
    assert len(found) > 50
    for m in found[::4]:  # every fourth: each check compiles the whole file
        check_local(m, source)
