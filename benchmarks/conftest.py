"""pytest options and the summary table for the benchmarks (not part of the default test run)."""

from __future__ import annotations


def pytest_addoption(parser):
    parser.addoption(
        "--bench-quick", action="store_true", default=False, help="benchmarks: n = 1024 only"
    )


def pytest_configure(config):
    config._spectral_bench = {}


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    results = getattr(config, "_spectral_bench", None)
    if not results:
        return
    from bench_spectral_norms import format_table

    terminalreporter.write_sep("=", "spectral norms: time, relative error, ratios")
    terminalreporter.write_line(format_table(results))
