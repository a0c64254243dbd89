"""Captured log text in the report of a failed test only: passing tests don't pay for formatting it.

pytest's logging plugin feeds every record to two handlers: `caplog`'s (the tests read its records and
text: `_no_api_key_in_logs` checks every one) and the report's, which formats each record once more into the
"Captured log" section of the test's report. Every test sets the root logger to DEBUG, so that section holds
everything aiosqlite, httpcore and discord.py say: ~300 KB of text per behaviour test, formatted and (under
xdist) sent to the controller, where a passing test's is never shown. That was ~12% of the suite's CPU.

`install()` swaps the report's handler for one that only keeps the records; when a phase fails, the report
gets the same "Captured log <phase>" sections, formatted by the plugin's formatter, as pytest would have
written. `caplog` is untouched. (Only `-rP`/`-rA`, which show passing tests' logs, show none.)
"""

from __future__ import annotations

import logging
from collections.abc import Generator

import pytest
from _pytest.logging import LogCaptureHandler

_PHASES = pytest.StashKey[dict[str, list[logging.LogRecord]]]()
_FAILED = pytest.StashKey[bool]()


class _RecordsOnly(LogCaptureHandler):
    """The report's handler: keeps each phase's records (the plugin resets it per phase), formats none."""

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def install(config: pytest.Config) -> None:
    logging_plugin = config.pluginmanager.get_plugin("logging-plugin")
    if logging_plugin is None:  # -p no:logging
        return
    handler = _RecordsOnly()
    handler.setFormatter(logging_plugin.formatter)
    handler.setLevel(logging_plugin.report_handler.level)
    logging_plugin.report_handler = handler
    config.pluginmanager.register(_FailureLogs(handler), "hordebot-failure-logs")


class _FailureLogs:
    def __init__(self, handler: _RecordsOnly) -> None:
        self.handler = handler

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(
        self, item: pytest.Item, call: pytest.CallInfo[None]
    ) -> Generator[None, pytest.TestReport, pytest.TestReport]:
        report = yield
        # Called after each phase, before the next one resets the handler: its records are this phase's.
        phases = item.stash.setdefault(_PHASES, {})
        phases[call.when] = self.handler.records
        failed = item.stash.get(_FAILED, False) or report.failed
        item.stash[_FAILED] = failed
        if call.when == "teardown":
            # Items live until the session ends: keep no test's records that long.
            del item.stash[_PHASES], item.stash[_FAILED]
        if failed:  # like pytest's, every later report of the test has the phases so far (its teardown's)
            for when, records in phases.items():
                text = "\n".join(self.handler.format(record) for record in records).strip()
                if text:
                    report.sections.append((f"Captured log {when}", text))
        return report
