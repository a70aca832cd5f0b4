"""Test-only launcher for moto server, the project's local AWS emulator.

`python -m moto_shim` (with this folder's parent on PYTHONPATH) starts moto
on 127.0.0.1 with an OS-chosen port, prints `PORT <n>` on stdout once it is
listening, and serves until killed. Before serving it patches the few places
where moto differs from AWS's documented behaviour or lacks an API this
project calls (`fidelity/`, each patch naming the AWS behaviour it follows);
nothing here is used against real AWS.

The parts: `fidelity/` (the patches), `switches.py` (the routes below),
`state.py` (what the switches set, behind one lock), `calls.py` (the call
log and fault injection), `__main__.py` (the WSGI entry wiring them).

Test-only switches (never part of AWS; for producing failures the emulator
cannot produce by itself). All are JSON over HTTP on the emulator's port:

- `POST /_shim/faults` with a list of rules; each makes matching requests
  fail the way AWS fails them (the protocol's own error shape):
  `{"operation": "PutSnapshotBlock", "after": 3, "times": 1, "status": 500,
  "code": "InternalError", "message": "...", "match": "substring",
  "stall": seconds}`. `after` requests pass first, then `times` fail
  (-1: all). `match` narrows to requests whose path or body contains it.
  `stall` sleeps before answering (a slow or stalled service).
  `GET` lists the rules with their counts; `DELETE` clears them.
- `POST /_shim/settings` `{"snapshot_pending_polls": N}`: a completed EBS
  direct snapshot stays `pending` for the next N DescribeSnapshots calls
  (EBS completes snapshots asynchronously; this makes the wait observable).
- `POST /_shim/settings` `{"import_failures": N}`: the next N VM Import
  tasks end `deleted` with a ClientError StatusMessage, as a failed
  conversion does.
- `POST /_shim/image-state` `{"image_id": "ami-…", "state": "pending"}`:
  puts an AMI into a state AWS can report (pending, failed, …).
- `POST /_shim/instance-health` `{"name": "clawdinator-2", "status":
  "impaired"}`: the running instance(s) tagged Name=clawdinator-2 fail
  their EC2 status checks (`"initializing"` for not passed yet; `"ok"`
  resets).
- `POST /_shim/ssm-agent` `{"name": "clawdinator-2", "online": false}`:
  that instance's SSM agent is not connected (PingStatus ConnectionLost;
  SendCommand refuses it).
- `POST /_shim/ssm-invocation` `{"name": "clawdinator-2", "status":
  "Failed", "code": 1, "stdout": "...", "stderr": "...", "pending_polls":
  2}`: the outcome of the next commands run on that instance; the
  invocation is InProgress for `pending_polls` GetCommandInvocation calls
  first. Without one, an invocation succeeds (moto's behaviour).
- `POST /_shim/calls` `{"on": true}` clears and starts the call log;
  `GET /_shim/calls` returns it: one entry per AWS request, in order, with
  what IAM authorises it by (service, operation, path, query, the caller's
  access key id, the conditional and tagging headers, and the parsed form
  or JSON body of non-S3 calls). Unlike moto's recorder it never holds
  object or block bodies, so the whole pipeline can run with it on.
"""
