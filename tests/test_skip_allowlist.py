"""The --allowed-skips plugin (tests/skip_allowlist.py) that CI runs with: a skip not on the list fails the run."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TESTS = '''
import pytest

def test_runs():
    assert True

def test_allowed():
    pytest.skip("running as root: permissions do not stop writes")

@pytest.mark.skipif(True, reason="no frobnicator here")
def test_not_allowed():
    pass

@pytest.mark.parametrize("case", ["a: one", "b"])
def test_cases(case):
    if case == "a: one":
        pytest.skip("running as root: here too")
'''


def _run(pytester, allowed_text: str):
    """The test file above under ``--allowed-skips`` with a list of ``allowed_text``."""
    pytester.makepyfile(test_x=TESTS)
    allowed = pytester.path / "allowed.txt"
    allowed.write_text(allowed_text)
    return pytester.runpytest("-p", "tests.skip_allowlist", "--allowed-skips", str(allowed))


def test_a_skip_off_the_list_fails_the_run_and_is_named(pytester):
    res = _run(pytester, "# comment\ntest_x.py::test_allowed | running as root | as in CI\n")
    res.assert_outcomes(passed=2, skipped=3)
    assert res.ret == 1
    res.stdout.fnmatch_lines(["*skips not on the allow-list*", "test_x.py::test_not_allowed: no frobnicator here",
                              "test_x.py::test_cases?a: one?: running as root: here too"])
    assert "test_x.py::test_allowed:" not in res.stdout.str()


def test_skips_on_the_list_pass_and_without_the_option_nothing_changes(pytester):
    assert _run(pytester, "test_x.py::test_allowed | running as root | as in CI\n"
                          "test_x.py::test_not_* | no frobnicator | fine here\n"
                          "test_x.py::test_cases[*] | running as root | parametrised: brackets are literal\n").ret == 0
    assert pytester.runpytest("-p", "tests.skip_allowlist").ret == 0


def test_the_reason_must_match_not_only_the_test(pytester):
    res = _run(pytester, "test_x.py::* | this machine has CUDA | elsewhere\n")
    assert res.ret == 1 and "test_x.py::test_allowed: running as root" in res.stdout.str()


def test_a_malformed_list_is_a_usage_error(pytester):
    res = _run(pytester, "test_x.py::test_allowed running as root\n")
    assert res.ret == 4 and "expected 'NODE_ID_PATTERN | REASON_START | WHY'" in res.stderr.str()


def test_ci_and_the_readme_run_with_the_list():
    assert "--allowed-skips tests/allowed_skips.txt" in (ROOT / ".ci" / "run").read_text()
    assert "python -m pytest -q tests --allowed-skips tests/allowed_skips.txt" in (ROOT / "README.md").read_text()
