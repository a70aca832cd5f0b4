"""State the test switches set and the patches and the middleware read.

werkzeug's threaded server answers every request on a thread of its own, so
a switch can land while a patch is reading the same table: every read and
write goes through `SHARED.lock`, by the functions below.
"""

import threading


class Shared:
    def __init__(self):
        self.lock = threading.Lock()
        # POST /_shim/settings: snapshot_pending_polls, import_failures.
        self.settings = {}
        # By instance Name tag: the status checks' outcome ("impaired",
        # "initializing", "ok"), the SSM agent's connection, the outcome of
        # the next commands run there.
        self.health = {}
        self.agents = {}
        self.invocations = {}
        # Injected failures, each with how often it matched (seen) and failed (fired).
        self.faults = []
        # The call log while it is on; None while it is off.
        self.calls = None


SHARED = Shared()


def setting(name, default=None):
    with SHARED.lock:
        return SHARED.settings.get(name, default)


def take_import_failure():
    """Whether the next VM Import task fails (and count it off)."""
    with SHARED.lock:
        left = SHARED.settings.get("import_failures", 0)
        if left > 0:
            SHARED.settings["import_failures"] = left - 1
        return left > 0


def for_instance(table, name, default=None):
    """What the switch `table` (health, agents, invocations) says about the instance named `name`."""
    with SHARED.lock:
        return getattr(SHARED, table).get(name, default)


def observed():
    """Whether requests must be looked at: a fault is set or the call log is on."""
    with SHARED.lock:
        return bool(SHARED.faults) or SHARED.calls is not None


def log_call(entry):
    with SHARED.lock:
        if SHARED.calls is not None:
            SHARED.calls.append(entry)


def fault_for(operation, path, body):
    """The first rule that fails this request now (counted), or None."""
    with SHARED.lock:
        for rule in SHARED.faults:
            if rule["operation"] != operation:
                continue
            needle = rule.get("match")
            if needle and needle not in path and needle.encode() not in body:
                continue
            rule["seen"] += 1
            times = rule.get("times", 1)
            if rule["seen"] > rule.get("after", 0) and (times < 0 or rule["fired"] < times):
                rule["fired"] += 1
                return dict(rule)
    return None
