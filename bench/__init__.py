"""The benchmark: every speed figure of the ledger measured beside its baseline in one run.

Run with `make bench` (`python -m bench`) or `make bench-quick` (`--quick`); not
collected by pytest. See bench/__main__.py for the rows and their goals.
"""
