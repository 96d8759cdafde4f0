"""The crash test hook: what it accepts, and that it exits only at the n-th time its point is reached."""

from __future__ import annotations

import subprocess
import sys

import pytest

from modelmonitor.actions.testhooks import CRASH_EXIT_CODE, CrashHook


@pytest.mark.parametrize("setting", ["later", "before-act@0", "after-act:scale@x", "after-promote@-1"])
def test_a_bad_setting_is_refused_naming_the_variable(setting: str) -> None:
    with pytest.raises(ValueError, match="MODELMONITOR_TEST_CRASH_AT") as caught:
        CrashHook(setting)
    assert "[:<type>][@<n>]" in str(caught.value)


def test_unset_or_another_point_or_type_does_nothing() -> None:
    CrashHook()("before-act", "scale")
    hook = CrashHook("after-act:rollback")
    hook("before-act", "rollback")
    hook("after-act", "scale")


@pytest.mark.parametrize(
    ("setting", "exits_at"), [("after-act:scale", 1), ("after-act:scale@3", 3), ("after-act@2", 2)]
)
def test_the_process_exits_the_nth_time_the_point_is_reached(setting: str, exits_at: int) -> None:
    script = (
        "from modelmonitor.actions.testhooks import CrashHook\n"
        f"hook = CrashHook({setting!r})\n"
        "for n in range(1, 6):\n"
        "    hook('before-act', 'scale')\n"
        "    print(n, flush=True)\n"
        "    hook('after-act', 'scale')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == CRASH_EXIT_CODE, done.stderr
    assert done.stdout.split() == [str(n) for n in range(1, exits_at + 1)]
