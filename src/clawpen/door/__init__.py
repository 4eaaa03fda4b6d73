"""An agent's only way out: its socket server (`server.py`), the caps on what it may send
(`caps.py`), the model proxy and its budget.
"""
