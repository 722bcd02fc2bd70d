"""Fault injection with real processes (fast variants: short leases, short outages).

Each scenario kills or stops something for real and counts what the promises forbid:
an accepted stage that never ends, a callback never delivered, a run made twice. For the
full variants and their figures: ``.venv/bin/python -m tests.faults.report``.
"""

from __future__ import annotations

import pytest

from tests.faults import scenarios

#: Scenarios that fail because of a bug found by this suite (see docs/GUARANTEES.md).
KNOWN_BUGS: dict[str, str] = {}  # scenario name -> reason, while a bug it found is open


def _cases():
    for scenario in scenarios.SCENARIOS:
        name = scenario.__name__
        marks = [pytest.mark.xfail(reason=KNOWN_BUGS[name], strict=False)] if name in KNOWN_BUGS else []
        yield pytest.param(scenario, id=name, marks=marks)


@pytest.mark.parametrize("scenario", list(_cases()))
def test_fault(scenario):
    row = scenario(fast=True)
    assert row["problems"] == [], row
    for count in ("stages_lost", "callbacks_lost", "duplicate_runs"):
        if row[count] is not None:  # None: the scenario has nothing of that kind
            assert row[count] == 0, (count, row)
