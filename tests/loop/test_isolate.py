import os

import pytest

from loop import isolate


def test_call_returns_value_from_a_child_process():
    pid = isolate.call("os:getpid")
    assert isinstance(pid, int) and pid != os.getpid()


def test_call_reports_the_child_exception():
    with pytest.raises(isolate.StageFailed, match="ZeroDivisionError|No such file"):
        isolate.call("os:listdir", "/definitely/not/here")
