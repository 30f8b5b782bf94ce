"""
Tests for L{tests.mutants}, the list behind C{make mutants}: that it still fits the code.

C{make mutants} itself runs each mutant's tests (minutes); these checks take a moment, so
a refactor that moves a mutant's text, or renames a test a mutant names, fails
C{make test} at once with the mutant's name, instead of only under C{make mutants}.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.mutants import MUTANTS, REPO, Mutant


def _defined(test_file: Path, names: list[str]) -> bool:
    """Whether C{test_file} defines the class, and the method (maybe inherited from a
    class of the same file), that C{names} name."""
    tree = ast.parse(test_file.read_text())
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    if not names:
        return True
    if len(names) == 1:
        return names[0] in classes or names[0] in functions
    pending = [classes.get(names[0])]
    while pending:
        cls = pending.pop()
        if cls is None:
            continue
        if any(
            isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == names[1]
            for n in cls.body
        ):
            return True
        pending += [classes.get(base.id) for base in cls.bases if isinstance(base, ast.Name)]
    return False


class MutantListTests:
    @pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
    def test_text_is_found_once_and_changes_the_code(self, mutant: Mutant) -> None:
        """Each mutant's text occurs exactly once in its file, and its replacement differs."""
        text = (REPO / mutant.path).read_text()
        assert text.count(mutant.old) == 1, f"{mutant.name}: update tests/mutants.py"
        assert mutant.new != mutant.old

    @pytest.mark.parametrize("mutant", MUTANTS, ids=[m.name for m in MUTANTS])
    def test_named_tests_exist(self, mutant: Mutant) -> None:
        """Each test a mutant names is defined where it says (parametrized ids aside)."""
        assert mutant.tests
        for node in mutant.tests:
            path, *names = node.split("[", 1)[0].split("::")
            assert (REPO / path).is_file(), node
            assert _defined(REPO / path, names), f"{mutant.name}: no {node}"

    def test_names_are_unique(self) -> None:
        """Mutants are run by name (python -m tests.mutants NAME): no two share one."""
        names = [m.name for m in MUTANTS]
        assert len(names) == len(set(names))
