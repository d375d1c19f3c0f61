"""Part of the sandbox child program: the tests, parsed early, and the exact comparison.

Standard library only, no import of ``ift``: :mod:`ift.rewards.sandbox` joins this file
with the other parts into one program for an isolated interpreter. Tests are parsed and
compiled before untrusted code runs (it could tamper with ``ast`` afterwards); the
comparison runs while it runs, so it uses only locals captured in closures.
"""

import ast


def _prepare_tests(tests, strict, describe):
    """Compile every test: ``[(kind, code, expected)]`` with kind ``strict`` (an
    ``assert EXPR == LITERAL`` checked by :func:`_exact_comparison`), ``exec`` (run as
    written) or ``broken`` (does not parse; ``expected`` holds why)."""
    nothing = object()
    prepared = []
    for index, source in enumerate(tests):
        try:
            tree = ast.parse(source, mode="exec")
        except Exception as exc:
            prepared.append(("broken", None, describe(exc)))
            continue
        entry = None
        if strict and len(tree.body) == 1 and isinstance(tree.body[0], ast.Assert):
            test = tree.body[0].test
            if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq):
                try:
                    expected = ast.literal_eval(test.comparators[0])
                except Exception:
                    expected = nothing
                if expected is not nothing:
                    expression = ast.Expression(body=test.left)
                    ast.fix_missing_locations(expression)
                    entry = ("strict", compile(expression, f"<test {index}>", "eval"), expected)
        if entry is None:
            entry = ("exec", compile(tree, f"<test {index}>", "exec"), None)
        prepared.append(entry)
    return prepared


def _exact_comparison():
    """Closure ``same(got, expected)`` for strict tests (see its docstring)."""
    # Builtins the closures use, bound now: untrusted code may rebind the names later.
    _type, _len, _range = type, len, range
    _tuple, _list, _dict, _set, _frozenset = tuple, list, dict, set, frozenset
    scalar_types = (int, float, complex, str, bytes, bool, type(None))

    def exact_key(value):
        kind = _type(value)
        if kind in scalar_types:
            return True
        if kind is _tuple:
            for item in value:
                if not exact_key(item):
                    return False
            return True
        return False

    def same(got, expected):
        """``got == expected`` where ``got`` must have exactly the literal's types, all the
        way down: an object whose ``__eq__`` always says yes cannot pass a test."""
        kind = _type(expected)
        if _type(got) is not kind:
            return False
        if kind in scalar_types:
            return got == expected
        if kind is _list or kind is _tuple:
            if _len(got) != _len(expected):
                return False
            for i in _range(_len(expected)):
                if not same(got[i], expected[i]):
                    return False
            return True
        if kind is _dict:
            if _len(got) != _len(expected):
                return False
            for key in got:
                if not exact_key(key):
                    return False
            for key in expected:
                if key not in got or not same(got[key], expected[key]):
                    return False
            return True
        if kind is _set or kind is _frozenset:
            for item in got:
                if not exact_key(item):
                    return False
            return got == expected
        return got is expected  # Ellipsis

    return same
