"""The server's network side: the websocket server, one connection per client, the hello, and
the one place server errors become `error` messages (errors.py)."""
