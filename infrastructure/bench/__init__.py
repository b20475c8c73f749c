"""The benchmark behind `make bench`: what each operation costs, how fast it answers, what that means on AWS.

`python -m infrastructure.bench [--small] [--output docs/benchmarks.md]`; see `run.py`.
"""
