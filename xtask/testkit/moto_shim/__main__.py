"""The WSGI entry: moto's app, patched (`fidelity`), behind the test switches
(`switches`) and the call log with fault injection (`calls`)."""

import logging
import os
import sys

from . import calls, fidelity, switches


class Shim:
    """WSGI middleware: `/_shim/...` goes to the switches, every other
    request to moto, through the call log and the fault rules."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        if environ.get("PATH_INFO", "").startswith("/_shim/"):
            return switches.control(environ, start_response)
        return calls.observe(self.app, environ, start_response)


def main():
    # Request logging costs time on every call and nobody reads it.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    fidelity.apply()

    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    app = Shim(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    # Some services build URLs from MOTO_PORT.
    os.environ["MOTO_PORT"] = str(server.server_port)
    print(f"PORT {server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
