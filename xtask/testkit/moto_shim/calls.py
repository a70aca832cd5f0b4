"""The call log and fault injection: which AWS operation a request is (as
IAM names it), a log entry of what IAM authorises it by, and an injected
failure shaped as the service's protocol shapes its errors."""

import io
import json
import re
import time
import uuid
from urllib.parse import parse_qs

from . import state

EBS_ROUTES = [
    ("POST", re.compile(r"^/snapshots$"), "StartSnapshot"),
    ("PUT", re.compile(r"^/snapshots/[^/]+/blocks/\d+$"), "PutSnapshotBlock"),
    ("GET", re.compile(r"^/snapshots/[^/]+/blocks/\d+$"), "GetSnapshotBlock"),
    ("GET", re.compile(r"^/snapshots/[^/]+/blocks$"), "ListSnapshotBlocks"),
    ("POST", re.compile(r"^/snapshots/completion/[^/]+$"), "CompleteSnapshot"),
]


def service_of(environ):
    """The signing service from the SigV4 credential scope. An unsigned
    request is S3's: of the services in use only S3 takes anonymous
    requests to a bucket ("Making requests anonymously", Amazon S3 User
    Guide), as nix's http binary cache store sends them; moto's own API is
    not AWS."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    m = re.search(r"Credential=[^/]+/[^/]+/[^/]+/([^/]+)/aws4_request", auth)
    if m:
        return m.group(1)
    # Path-style S3 names a bucket; STS's unsigned AssumeRoleWithWebIdentity posts to "/".
    path = environ.get("PATH_INFO", "")
    unsigned_s3 = not auth and path.strip("/") and not path.startswith("/moto-api") and not environ.get("HTTP_X_AMZ_TARGET")
    return "s3" if unsigned_s3 else ""


def s3_operation(method, path, query, environ):
    has_key = len([p for p in path.split("/") if p]) >= 2
    if method == "HEAD":
        return "HeadObject" if has_key else "HeadBucket"
    if method == "GET":
        if "uploads" in query:
            return "ListMultipartUploads"
        if "uploadId" in query:
            return "ListParts"
        return "GetObject" if has_key else "ListObjects"
    if method == "PUT":
        if "partNumber" in query:
            return "UploadPart"
        if environ.get("HTTP_X_AMZ_COPY_SOURCE"):
            return "CopyObject"
        return "PutObject" if has_key else "CreateBucket"
    if method == "POST":
        if "delete" in query:
            return "DeleteObjects"
        return "CreateMultipartUpload" if "uploads" in query else "CompleteMultipartUpload"
    if method == "DELETE":
        return "AbortMultipartUpload" if "uploadId" in query else "DeleteObject"
    return ""


def operation_of(environ, service, body):
    method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target:
        return target.split(".")[-1]
    if service == "ebs":
        return next((op for m, rx, op in EBS_ROUTES if m == method and rx.match(path)), "")
    if service == "s3":
        return s3_operation(method, path, query, environ)
    form = parse_qs(body.decode("utf-8", "replace")) if body else {}
    return (form.get("Action") or query.get("Action") or [""])[0]


def small_body(environ, service):
    """The request body of a non-S3, non-EBS call (forms and JSON, never
    data), read and put back for the app."""
    delete_objects = service == "s3" and environ["REQUEST_METHOD"] == "POST" and "delete" in parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    if service == "ebs" or (service == "s3" and not delete_objects):
        return b""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if not length or length > (1 << 20):
        return b""
    body = environ["wsgi.input"].read(length)
    environ["wsgi.input"] = io.BytesIO(body)
    return body


ACCESS_KEY = re.compile(r"Credential=([^/]+)/")
CALL_HEADERS = ("HTTP_IF_NONE_MATCH", "HTTP_IF_MATCH", "HTTP_X_AMZ_COPY_SOURCE", "HTTP_X_AMZ_TAGGING")


def call_entry(environ, service, operation, body):
    """What IAM authorises a request by; never a body of data."""
    key = ACCESS_KEY.search(environ.get("HTTP_AUTHORIZATION", ""))
    entry = {
        "service": service,
        "operation": operation,
        "method": environ["REQUEST_METHOD"],
        "host": environ.get("HTTP_HOST", ""),
        "path": environ.get("PATH_INFO", ""),
        "query": environ.get("QUERY_STRING", ""),
        "accessKey": key.group(1) if key else None,
        "headers": {h[5:].lower().replace("_", "-"): environ[h] for h in CALL_HEADERS if h in environ},
    }
    if body:
        text = body.decode("utf-8", "replace")
        if service == "s3":
            entry["keys"] = re.findall(r"<Key>([^<]*)</Key>", text)
        elif "json" in environ.get("CONTENT_TYPE", ""):
            try:
                entry["json"] = json.loads(text)
            except ValueError:
                pass
        else:
            entry["form"] = {k: v[0] for k, v in parse_qs(text, keep_blank_values=True).items()}
    return entry


def error_response(service, rule, start_response):
    """The error as the service's protocol shapes it."""
    code, message = rule.get("code", "InternalError"), rule.get("message", "injected by the test shim")
    status = int(rule.get("status", 500))
    headers = [("x-amzn-RequestId", str(uuid.uuid4()))]
    # DynamoDB speaks JSON 1.0 as well: an error is {"__type", "message"}
    # ("Error handling with DynamoDB", Amazon DynamoDB Developer Guide).
    if service in ("ebs", "ssm", "secretsmanager", "dynamodb"):
        body = json.dumps({"__type": code, "message": message}).encode()
        headers += [("Content-Type", "application/json"), ("x-amzn-ErrorType", code)]
    elif service == "ec2":
        body = f"<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>r</RequestID></Response>".encode()
        headers.append(("Content-Type", "text/xml"))
    elif service == "s3":
        body = f"<Error><Code>{code}</Code><Message>{message}</Message><RequestId>r</RequestId></Error>".encode()
        headers.append(("Content-Type", "application/xml"))
    else:
        body = f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>r</RequestId></ErrorResponse>".encode()
        headers.append(("Content-Type", "text/xml"))
    headers.append(("Content-Length", str(len(body))))
    start_response(f"{status} Injected", headers)
    return [body]

def observe(app, environ, start_response):
    """Log the request when the call log is on, and fail it when a fault
    rule says so; otherwise (and always when neither is set) hand it to moto."""
    if not state.observed():
        return app(environ, start_response)
    service = service_of(environ)
    body = small_body(environ, service)
    operation = operation_of(environ, service, body)
    state.log_call(call_entry(environ, service, operation, body))
    fire = state.fault_for(operation, environ.get("PATH_INFO", ""), body)
    if fire is None:
        return app(environ, start_response)
    if fire.get("stall"):
        time.sleep(float(fire["stall"]))
    return error_response(service, fire, start_response)
