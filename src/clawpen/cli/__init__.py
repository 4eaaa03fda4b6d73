"""The `clawpen` command (`main.py`) and what it shows: the chat terminal, status views, the log
viewer, `init`, the service unit.
"""
