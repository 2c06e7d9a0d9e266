"""The pytest-xdist scheduler of tests/conftest.py rests on a private xdist hook: this fails first if xdist changes
it."""

import pytest
from helpers import unit_of_work


def test_the_costly_modules_are_one_unit_of_work_and_other_tests_one_each():
    scheduler = pytest.importorskip("xdist.scheduler")
    split_scope = vars(scheduler.LoadScopeScheduling)["_split_scope"]  # overridden by conftest's Scheduling
    assert split_scope(None, "tests/test_x.py::test_a[1]") == "tests/test_x.py"  # xdist's own: by module
    assert unit_of_work("tests/test_ddp.py::test_fit[2]") == "tests/test_ddp.py"
    assert unit_of_work("tests/test_benchmark.py::test_b") == "tests/test_benchmark.py"
    assert unit_of_work("tests/test_runs.py::test_c") == "tests/test_runs.py::test_c"
