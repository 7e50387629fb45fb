"""An ASGI app served by uvicorn on a free local port, in a thread of the test session (the fake providers)."""

import threading
import time
from contextlib import contextmanager


@contextmanager
def served_in_thread(app):
    import uvicorn

    from search_r1_plugin.sandbox.server_process import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
