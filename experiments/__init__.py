"""Research runs: configs, the entry point ``python -m experiments.run``, reports."""
