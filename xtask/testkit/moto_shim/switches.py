"""The test switches: `/_shim/...` routes on the emulator's port, never part
of AWS (the package docstring lists them). Each route is one entry of
`ROUTES`; a handler takes the request's JSON and returns the JSON answer,
or that and an HTTP status."""

import json

from .state import SHARED


def add_faults(payload):
    with SHARED.lock:
        for rule in payload if isinstance(payload, list) else [payload]:
            SHARED.faults.append(dict(rule, seen=0, fired=0))
        return json.dumps(SHARED.faults)


def list_faults(_):
    with SHARED.lock:
        return json.dumps(SHARED.faults)


def clear_faults(_):
    with SHARED.lock:
        SHARED.faults.clear()
        return json.dumps(SHARED.faults)


def start_call_log(payload):
    """`{"on": true}` clears and starts the log; anything else stops it."""
    with SHARED.lock:
        SHARED.calls = [] if payload and payload.get("on") else None
        return json.dumps(SHARED.calls or [])


def call_log(_):
    with SHARED.lock:
        return json.dumps(SHARED.calls or [])


def update_settings(payload):
    with SHARED.lock:
        SHARED.settings.update(payload)
        return json.dumps(SHARED.settings)


def set_image_state(payload):
    from moto.ec2.models import ec2_backends

    for account in ec2_backends.values():
        for backend in account.values():
            image = backend.amis.get(payload["image_id"])
            if image is not None:
                image.state = payload["state"]
                return json.dumps({"ok": True})
    return json.dumps({"error": "no such image"}), "404 Not Found"


def by_instance(table, value):
    """A switch that sets `value(payload)` for the instance `payload["name"]` in `table`."""

    def handler(payload):
        with SHARED.lock:
            entries = getattr(SHARED, table)
            entries[payload["name"]] = value(payload)
            return json.dumps(entries)

    return handler


ROUTES = {
    ("POST", "/_shim/faults"): add_faults,
    ("GET", "/_shim/faults"): list_faults,
    ("DELETE", "/_shim/faults"): clear_faults,
    ("POST", "/_shim/calls"): start_call_log,
    ("GET", "/_shim/calls"): call_log,
    ("POST", "/_shim/settings"): update_settings,
    ("POST", "/_shim/image-state"): set_image_state,
    ("POST", "/_shim/instance-health"): by_instance("health", lambda p: p["status"]),
    ("POST", "/_shim/ssm-agent"): by_instance("agents", lambda p: bool(p["online"])),
    ("POST", "/_shim/ssm-invocation"): by_instance("invocations", lambda p: p),
}


def control(environ, start_response):
    """Answer a `/_shim/...` request from `ROUTES`."""
    method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
    length = int(environ.get("CONTENT_LENGTH") or 0)
    payload = json.loads(environ["wsgi.input"].read(length) or b"null") if length else None
    handler = ROUTES.get((method, path))
    if handler is None:
        answer = json.dumps({"error": f"unknown switch {method} {path}"}), "404 Not Found"
    else:
        answer = handler(payload)
    body, status = answer if isinstance(answer, tuple) else (answer, "200 OK")
    body = body.encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
