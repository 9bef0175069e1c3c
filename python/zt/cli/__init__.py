"""Command-line tools: ``python -m zt <command>`` (also installed as ``zt``)."""
