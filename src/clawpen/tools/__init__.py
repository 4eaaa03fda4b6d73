"""The host side of the tools an agent calls through its socket: send_message, jobs, web_fetch.

They reach the core only through ``api.py``'s protocols, handed in by ``app.py``; importing
``clawpen.core`` from here fails the import check (``lint-imports``)."""
