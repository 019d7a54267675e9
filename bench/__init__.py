"""Benchmarks: decision latency, the audit hash chain, and /wa-role over HTTP.

Run `python -m bench` from the repository root. Every figure is printed beside
what it should be compared with (a dict-lookup or bare-Flask baseline measured in
the same run, or the bar it has to clear), so one run on one machine is enough to
judge it.
"""
