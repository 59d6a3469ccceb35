"""Benchmarks: figures printed side by side with their anchors, measured in the same run.

Run `python -m bench` (all) or `python -m bench startup ssh logs run memory`. These print numbers;
they are not tests and assert nothing.
"""
