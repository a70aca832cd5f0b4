"""VM Import's snapshot tasks (ImportSnapshot, DescribeImportSnapshotTasks,
CancelImportTask), which moto lacks. A task is "active" on its first poll
and ends on the next: "completed" with a snapshot, or "deleted" with a
StatusMessage when the disk is unusable, as VM Import reports it (VM
Import/Export User Guide, "Import a disk as a snapshot"). The functions
taking `self` become EC2Response methods."""

import math
import threading
import uuid

from moto.core.exceptions import ServiceException
from moto.core.responses import ActionResult
from moto.ec2.exceptions import EC2ClientError
from moto.ec2.responses import EC2Response
from moto.iam.models import iam_backends
from moto.s3.models import s3_backends

from .. import state

GIB = 1024 ** 3
# The tasks by id, and their ids by (account, region, ClientToken).
TASKS = {}
BY_TOKEN = {}
# Requests come on threads of their own: one task, one outcome.
LOCK = threading.Lock()


def failure(account, container, role):
    # A missing role or object is moto's ServiceException (NoSuchEntity,
    # NoSuchBucket); VM Import reports either as a ClientError.
    bucket = container.get("UserBucket", {}).get("S3Bucket")
    key = container.get("UserBucket", {}).get("S3Key")
    try:
        iam_backends[account]["global"].get_role(role)
    except ServiceException:
        return f"ClientError: The service role {role} provided does not exist or does not have sufficient permissions"
    try:
        obj = s3_backends[account]["aws"].get_object(bucket, key)
    except ServiceException:
        obj = None
    if obj is None:
        return f"ClientError: Unable to access the S3 object s3://{bucket}/{key}"
    head = obj.value[:512]
    fmt = (container.get("Format") or "").upper()
    if fmt == "RAW" and head[510:512] != b"\x55\xaa":
        return "ClientError: Disk validation failed [Unsupported specified file format]"
    return None, obj.size


def import_snapshot(self):
    container = self._get_param("DiskContainer", {})
    role = self._get_param("RoleName") or "vmimport"
    token = self._get_param("ClientToken")
    key = (self.current_account, self.region, token)
    if token and key in BY_TOKEN:
        task = TASKS[BY_TOKEN[key]]
    else:
        if not container.get("UserBucket"):
            raise EC2ClientError("InvalidParameter", "DiskContainer.UserBucket is required")
        task = new_task(self, container, role)
        task_id = task["ImportTaskId"]
        TASKS[task_id] = task
        if token:
            BY_TOKEN[key] = task_id
    return ActionResult({k: v for k, v in task.items() if not k.startswith("_")})


def new_task(self, container, role):
    """An ImportSnapshot task as VM Import starts it: active, pending."""
    task_id = "import-snap-" + uuid.uuid4().hex[:17]
    tags = self._parse_tag_specification().get("import-snapshot-task", {})
    return {
        "ImportTaskId": task_id,
        "Description": self._get_param("Description"),
        "SnapshotTaskDetail": {
            "Status": "active",
            "StatusMessage": "pending",
            "Progress": "0",
            "Format": (container.get("Format") or "").upper(),
            "UserBucket": container["UserBucket"],
        },
        "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
        "_account": self.current_account,
        "_region": self.region,
        "_container": container,
        "_role": role,
        "_polls": 0,
    }


def advance(task, backend):
    detail = task["SnapshotTaskDetail"]
    if detail["Status"] != "active":
        return
    task["_polls"] += 1
    if task["_polls"] == 1:
        detail.update({"StatusMessage": "converting", "Progress": "50"})
        return
    outcome = failure(task["_account"], task["_container"], task["_role"])
    if state.take_import_failure():
        # Test-only: VM Import fails some conversions for reasons of its
        # own ("ClientError: ..." in StatusMessage); a retry may succeed.
        outcome = "ClientError: injected VM Import failure (test shim)"
    if isinstance(outcome, str):
        detail.update({"Status": "deleted", "StatusMessage": outcome})
        detail.pop("Progress", None)
        return
    _, size = outcome
    volume = backend.create_volume(size=max(1, math.ceil(size / GIB)), zone_name=f"{task['_region']}a")
    snap = backend.create_snapshot(volume.id, f"Created by AWS-VMImport service for {task['ImportTaskId']}")
    backend.delete_volume(volume.id)
    detail.update({"Status": "completed", "SnapshotId": snap.id, "DiskImageSize": float(size)})
    detail.pop("StatusMessage", None)
    detail.pop("Progress", None)


def describe_import_snapshot_tasks(self):
    ids = self._get_param("ImportTaskIds", [])
    found = []
    for task_id in ids or list(TASKS):
        task = TASKS.get(task_id)
        if task is None:
            raise EC2ClientError("InvalidConversionTaskId.Malformed", f"The import task id {task_id} does not exist")
        advance(task, self.ec2_backend)
        found.append({k: v for k, v in task.items() if not k.startswith("_")})
    return ActionResult({"ImportSnapshotTasks": found})


def cancel_import_task(self):
    # CancelImportTask: an active task becomes "deleted".
    task = TASKS.get(self._get_param("ImportTaskId"))
    if task is None:
        raise EC2ClientError("InvalidConversionTaskId", "The import task does not exist")
    previous = task["SnapshotTaskDetail"]["Status"]
    if previous == "active":
        task["SnapshotTaskDetail"].update({"Status": "deleted", "StatusMessage": "canceled"})
    return ActionResult({"ImportTaskId": task["ImportTaskId"], "PreviousState": previous, "State": "deleted"})


def serialized(handler):
    def run(self):
        with LOCK:
            return handler(self)

    return run


def patch_import_snapshot():
    """ec2 ImportSnapshot / DescribeImportSnapshotTasks / CancelImportTask (module docstring)."""
    EC2Response.import_snapshot = serialized(import_snapshot)
    EC2Response.describe_import_snapshot_tasks = serialized(describe_import_snapshot_tasks)
    EC2Response.cancel_import_task = serialized(cancel_import_task)
