"""Test-only launcher for moto server, the project's local AWS emulator.

Starts moto on 127.0.0.1 with an OS-chosen port, prints `PORT <n>` on stdout
once it is listening, and serves until killed. Before serving it patches the
few places where moto differs from AWS's documented behaviour or lacks an API
this project calls. Each patch names the AWS behaviour it follows; nothing
here is used against real AWS.

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

import logging
import os
import sys


import base64
import hashlib
import io
import json
import math
import re
import threading
import time
import uuid
from urllib.parse import parse_qs

GIB = 1024 ** 3
EBS_BLOCK = 524288


def patch_ebs_direct():
    """EBS direct APIs as the EBS API reference documents them."""
    from moto.core.exceptions import JsonRESTError
    from moto.core.responses import ActionResult
    from moto.ebs import models, responses

    original_init = models.EBSSnapshot.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        # StartSnapshot: "BlockSize: The size of the blocks in the snapshot,
        # in bytes" - always 524288. moto answers 512.
        self.block_size = EBS_BLOCK

    models.EBSSnapshot.__init__ = init
    tokens = {}
    lock = threading.Lock()

    def start_snapshot(self):
        backend = self.ebs_backend
        token = self._get_param("ClientToken")
        params = json.dumps(
            [self._get_param(k) for k in ("VolumeSize", "Tags", "Description", "Encrypted", "KmsKeyArn")],
            sort_keys=True,
            default=str,
        )
        with lock:
            # ClientToken: "if the original request completes successfully,
            # the subsequent retries with the same client token return the
            # result from the original successful request" - whatever has
            # happened to that snapshot since. A token reused with other
            # parameters is a ConflictException ("The request uses the same
            # client token as a previous, but non-identical request").
            key = (self.current_account, self.region, token)
            if token and key in tokens:
                original_params, response = tokens[key]
                if original_params != params:
                    raise JsonRESTError(
                        "ConflictException",
                        "The request uses the same client token as a previous, but non-identical request.",
                    )
                return ActionResult(response)
            snap = backend.start_snapshot(
                volume_size=self._get_param("VolumeSize"),
                tags=self._get_param("Tags"),
                description=self._get_param("Description"),
            )
            ec2_snap = backend.ec2_backend.get_snapshot(snap.snapshot_id)
            # A snapshot being written is "pending" in EC2 until completed.
            ec2_snap.status = "pending"
            # Encrypted, KmsKeyArn: with EBS encryption by default on, the
            # snapshot is encrypted (with the default KMS key) whatever the
            # request says; the answer carries the key and SseType.
            kms = self._get_param("KmsKeyArn")
            encrypted = bool(self._get_param("Encrypted") or kms or backend.ec2_backend.ebs_encryption_by_default)
            if encrypted:
                kms = kms or f"arn:aws:kms:{self.region}:{self.current_account}:key/00000000-0000-4000-8000-0000000aws00"
                ec2_snap.encrypted = True
                ec2_snap.kms_key_id = kms
            response = {
                "SnapshotId": snap.snapshot_id,
                "OwnerId": snap.account_id,
                "Status": snap.status,
                "StartTime": snap.start_time,
                "VolumeSize": snap.volume_size,
                "BlockSize": snap.block_size,
                "Tags": snap.tags,
                "Description": snap.description,
                "SseType": "sse-kms" if encrypted else "none",
            }
            if encrypted:
                response["KmsKeyArn"] = kms
            if token:
                tokens[key] = (params, response)
        return ActionResult(response)

    def writable(self, snapshot_id):
        # A snapshot deleted in EC2 is gone for the EBS direct APIs too
        # (ResourceNotFoundException: "The specified resource does not exist").
        snap = self.ebs_backend.snapshots.get(snapshot_id)
        if snap is None or snapshot_id not in self.ebs_backend.ec2_backend.snapshots:
            raise JsonRESTError("ResourceNotFoundException", "The snapshot does not exist")
        return snap

    def put_snapshot_block(self):
        data = self._get_param("BlockData")
        if isinstance(data, str):
            data = data.encode("latin-1")
        data = bytes(data or b"")
        checksum = self._get_param("Checksum")
        length = int(self._get_param("DataLength"))
        snap = self.writable(self._get_param("SnapshotId"))
        if snap.status != "pending":
            raise JsonRESTError("ValidationException", "The snapshot is not pending")
        # PutSnapshotBlock: DataLength must be 524288 and the data must match
        # its SHA256 checksum, or the block is rejected.
        if length != EBS_BLOCK or len(data) != EBS_BLOCK:
            raise JsonRESTError("ValidationException", f"DataLength must be {EBS_BLOCK} (got {length}, body {len(data)})")
        if base64.b64encode(hashlib.sha256(data).digest()).decode() != checksum:
            raise JsonRESTError("ValidationException", "The checksum of the block data is invalid")
        snap.put_block(str(self._get_param("BlockIndex")), data, checksum, "SHA256", str(length))
        return ActionResult({"Checksum": checksum, "ChecksumAlgorithm": "SHA256"})

    def complete_snapshot(self):
        snap = self.writable(self._get_param("SnapshotId"))
        count = int(self._get_param("ChangedBlocksCount"))
        checksum = self._get_param("Checksum")
        ok = count == len(snap.blocks)
        if checksum:
            # LINEAR aggregation: SHA256 over the blocks' checksums (raw
            # digests) in ascending block index order.
            digests = b"".join(
                base64.b64decode(snap.blocks[i].checksum)
                for i in sorted(snap.blocks, key=int)
            )
            ok = ok and base64.b64encode(hashlib.sha256(digests).digest()).decode() == checksum
        status = "completed" if ok else "error"
        snap.status = status
        ec2_snap = self.ebs_backend.ec2_backend.get_snapshot(snap.snapshot_id)
        ec2_snap.status = status
        if ok and SETTINGS.get("snapshot_pending_polls"):
            ec2_snap.status = "pending"
            ec2_snap.pending_polls = SETTINGS["snapshot_pending_polls"]
        return ActionResult({"Status": "pending" if ok else "error"})

    def get_snapshot_block(self):
        snap = self.ebs_backend.snapshots.get(self._get_param("SnapshotId"))
        block = snap.blocks.get(str(self._get_param("BlockIndex"))) if snap else None
        if block is None:
            raise JsonRESTError("ResourceNotFoundException", "The block does not exist")
        return ActionResult(
            {
                "DataLength": int(block.data_length),
                "BlockData": block.block_data,
                "Checksum": block.checksum,
                "ChecksumAlgorithm": block.checksum_algorithm,
            }
        )

    from moto.ec2.models.elastic_block_store import EBSBackend as EC2EBSBackend

    original_describe = EC2EBSBackend.describe_snapshots

    def describe_snapshots(self, *args, **kwargs):
        found = original_describe(self, *args, **kwargs)
        for snap in found:
            polls = getattr(snap, "pending_polls", 0)
            if polls:
                snap.pending_polls = polls - 1
                if polls == 1:
                    snap.status = "completed"
        return found

    EC2EBSBackend.describe_snapshots = describe_snapshots
    responses.EBSResponse.writable = writable
    responses.EBSResponse.start_snapshot = start_snapshot
    responses.EBSResponse.put_snapshot_block = put_snapshot_block
    responses.EBSResponse.complete_snapshot = complete_snapshot
    responses.EBSResponse.get_snapshot_block = get_snapshot_block


def patch_register_image():
    """RegisterImage keeps what the caller registered (EC2 API reference,
    RegisterImage): moto drops everything but the name."""
    from moto.core.responses import ActionResult
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.models.amis import Ami
    from moto.ec2.responses import EC2Response

    original_bdm = Ami.block_device_mappings

    def block_device_mappings(self):
        return getattr(self, "registered_bdm", None) or original_bdm.fget(self)

    Ami.block_device_mappings = property(block_device_mappings)

    def register_image(self):
        backend = self.ec2_backend
        name = self._get_param("Name")
        for ami in backend.amis.values():
            if ami.name == name and ami.owner_id == backend.account_id:
                # "InvalidAMIName.Duplicate: AMI name ... is already in use"
                raise EC2ClientError("InvalidAMIName.Duplicate", f"AMI name {name} is already in use by AMI {ami.id}")
        image = backend.register_image(name, self._get_param("Description", ""))
        image.architecture = self._get_param("Architecture", "i386")
        image.virtualization_type = self._get_param("VirtualizationType", "paravirtual")
        image.boot_mode = self._get_param("BootMode")
        image.ena_support = self._get_param("EnaSupport")
        image.imds_support = self._get_param("ImdsSupport")
        image.sriov = self._get_param("SriovNetSupport", "simple")
        image.root_device_name = self._get_param("RootDeviceName")
        image.root_device_type = "ebs"
        mappings = []
        for bdm in self._get_param("BlockDeviceMappings", []):
            ebs = bdm.get("Ebs", {})
            snap_id = ebs.get("SnapshotId")
            size = ebs.get("VolumeSize")
            if snap_id:
                snap = backend.get_snapshot(snap_id)
                snap.from_ami = image.id
                size = size or snap.volume.size
                if bdm.get("DeviceName") == image.root_device_name:
                    # The AMI's own snapshot replaces moto's placeholder.
                    backend.snapshots.pop(image.ebs_snapshot.id, None)
                    image.ebs_snapshot = snap
            mappings.append(
                {
                    "DeviceName": bdm.get("DeviceName"),
                    "Ebs": {
                        "SnapshotId": snap_id,
                        "VolumeSize": size,
                        "VolumeType": ebs.get("VolumeType", "gp2"),
                        "DeleteOnTermination": ebs.get("DeleteOnTermination", False),
                        "Encrypted": False,
                    },
                }
            )
        image.registered_bdm = mappings
        tags = self._parse_tag_specification().get("image", {})
        if tags:
            backend.create_tags([image.id], tags)
        return ActionResult({"ImageId": image.id})

    copy_tokens = {}

    def copy_image(self):
        # CopyImage: a repeated ClientToken returns the original copy.
        # EC2 idempotency (Ensuring idempotency in Amazon EC2 API requests):
        # a repeated ClientToken returns the original result, even when that
        # AMI has since been deregistered; other parameters with the same
        # token are IdempotentParameterMismatch.
        token = self._get_param("ClientToken")
        key = (self.current_account, self.region, token)
        params = (self._get_param("SourceImageId"), self._get_param("SourceRegion"), self._get_param("Name"))
        if token and key in copy_tokens:
            original, image_id = copy_tokens[key]
            if original != params:
                raise EC2ClientError("IdempotentParameterMismatch", "The client token was used with other parameters")
            return ActionResult({"ImageId": image_id})
        image = self.ec2_backend.copy_image(
            self._get_param("SourceImageId"),
            self._get_param("SourceRegion"),
            self._get_param("Name"),
            self._get_param("Description"),
        )
        if token:
            copy_tokens[key] = (params, image.id)
        return ActionResult({"ImageId": image.id})

    def enable_image_deprecation(self):
        # EnableImageDeprecation sets the image's DeprecationTime.
        image = self.ec2_backend.describe_images(ami_ids=[self._get_param("ImageId")])[0]
        at = self._get_param("DeprecateAt")
        image.deprecation_time = at if isinstance(at, str) else at.strftime("%Y-%m-%dT%H:%M:%S.000Z")
        return ActionResult({"Return": True})

    EC2Response.register_image = register_image
    EC2Response.copy_image = copy_image
    EC2Response.enable_image_deprecation = enable_image_deprecation


def patch_import_snapshot():
    """ec2 ImportSnapshot / DescribeImportSnapshotTasks (VM Import), which
    moto lacks. A task is "active" on its first poll and ends on the next:
    "completed" with a snapshot, or "deleted" with a StatusMessage when the
    disk is unusable, as VM Import reports it."""
    from moto.core.responses import ActionResult
    from moto.ec2.exceptions import EC2ClientError
    from moto.ec2.responses import EC2Response
    from moto.iam.models import iam_backends
    from moto.s3.models import s3_backends

    tasks = {}
    by_token = {}

    def failure(account, container, role):
        bucket = container.get("UserBucket", {}).get("S3Bucket")
        key = container.get("UserBucket", {}).get("S3Key")
        try:
            iam_backends[account]["global"].get_role(role)
        except Exception:
            return f"ClientError: The service role {role} provided does not exist or does not have sufficient permissions"
        try:
            obj = s3_backends[account]["aws"].get_object(bucket, key)
        except Exception:
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
        if token and key in by_token:
            task = tasks[by_token[key]]
        else:
            if not container.get("UserBucket"):
                raise EC2ClientError("InvalidParameter", "DiskContainer.UserBucket is required")
            task_id = "import-snap-" + uuid.uuid4().hex[:17]
            tags = self._parse_tag_specification().get("import-snapshot-task", {})
            task = {
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
            tasks[task_id] = task
            if token:
                by_token[key] = task_id
        return ActionResult({k: v for k, v in task.items() if not k.startswith("_")})

    def advance(task, backend):
        detail = task["SnapshotTaskDetail"]
        if detail["Status"] != "active":
            return
        task["_polls"] += 1
        if task["_polls"] == 1:
            detail.update({"StatusMessage": "converting", "Progress": "50"})
            return
        outcome = failure(task["_account"], task["_container"], task["_role"])
        if SETTINGS.get("import_failures", 0) > 0:
            # Test-only: VM Import fails some conversions for reasons of its
            # own ("ClientError: ..." in StatusMessage); a retry may succeed.
            SETTINGS["import_failures"] -= 1
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
        for task_id in ids or list(tasks):
            task = tasks.get(task_id)
            if task is None:
                raise EC2ClientError("InvalidConversionTaskId.Malformed", f"The import task id {task_id} does not exist")
            advance(task, self.ec2_backend)
            found.append({k: v for k, v in task.items() if not k.startswith("_")})
        return ActionResult({"ImportSnapshotTasks": found})

    def cancel_import_task(self):
        # CancelImportTask: an active task becomes "deleted".
        task = tasks.get(self._get_param("ImportTaskId"))
        if task is None:
            raise EC2ClientError("InvalidConversionTaskId", "The import task does not exist")
        previous = task["SnapshotTaskDetail"]["Status"]
        if previous == "active":
            task["SnapshotTaskDetail"].update({"Status": "deleted", "StatusMessage": "canceled"})
        return ActionResult({"ImportTaskId": task["ImportTaskId"], "PreviousState": previous, "State": "deleted"})

    EC2Response.import_snapshot = import_snapshot
    EC2Response.describe_import_snapshot_tasks = describe_import_snapshot_tasks
    EC2Response.cancel_import_task = cancel_import_task


def patch_shared_images():
    """A public AMI, or one whose launch permissions name an account, is
    visible to that account by id (DescribeImages; "Share an AMI with
    specific AWS accounts", https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/sharingamis-explicit.html).
    moto keeps each account's images apart; this shows the shared ones by
    id, never under an Owners filter that does not name their owner."""
    from moto.ec2.models import amis, ec2_backends

    original = amis.AmiBackend.describe_images

    def visible_to(ami, account):
        return ami.is_public or any(lp.get("UserId") == account for lp in ami.launch_permissions)

    def describe_images(self, ami_ids=None, filters=None, exec_users=None, owners=None):
        shared = []
        for account, regions in list(ec2_backends.items()) if ami_ids else []:
            if account == self.account_id or self.region_name not in regions:
                continue
            shared += [a for a in regions[self.region_name].amis.values() if a.id in ami_ids and visible_to(a, self.account_id)]
        if owners:
            shared = [a for a in shared if a.owner_id in owners]
        own = [i for i in ami_ids or [] if i not in {a.id for a in shared}]
        if ami_ids and not own:
            return shared
        return original(self, own or ami_ids, filters, exec_users, owners) + shared

    amis.AmiBackend.describe_images = describe_images


def patch_recorder_lock():
    # moto's request recorder appends JSON lines from every server thread at
    # once; without a lock, concurrent requests interleave in the file.
    from moto.moto_api._internal.recorder import models

    original = models.Recorder._record_request
    lock = threading.Lock()

    def record(self, *args, **kwargs):
        with lock:
            return original(self, *args, **kwargs)

    models.Recorder._record_request = record


def patch_s3_list_parts():
    # S3 ListParts answers with the root element <ListPartsResult> (S3 API
    # reference, ListParts response syntax); moto names it
    # <ListPartsResponse>, which strict clients reject.
    from moto.s3.responses import S3Response

    original = S3Response.list_parts

    def list_parts(self):
        status, headers, body = original(self)
        if isinstance(body, bytes):
            body = body.replace(b"<ListPartsResponse", b"<ListPartsResult").replace(b"</ListPartsResponse>", b"</ListPartsResult>")
        else:
            body = body.replace("<ListPartsResponse", "<ListPartsResult").replace("</ListPartsResponse>", "</ListPartsResult>")
        return status, headers, body

    S3Response.list_parts = list_parts


def patch_ssm_list_command_invocations():
    """ssm ListCommandInvocations, which moto lacks: one invocation per
    targeted instance of each command, filtered by CommandId and InstanceId;
    with Details=true each lists its plugins (SSM API reference,
    ListCommandInvocations). The fleet deploy polls it after SendCommand."""
    from moto.core.responses import ActionResult
    from moto.ssm.responses import SimpleSystemManagerResponse

    def list_command_invocations(self):
        command_id = self._get_param("CommandId")
        instance_id = self._get_param("InstanceId")
        details = self._get_param("Details", False)
        found = []
        for command in self.ssm_backend.list_commands(command_id, instance_id):
            for inv in command.invocations:
                if instance_id and inv["InstanceId"] != instance_id:
                    continue
                item = {
                    "CommandId": command.command_id,
                    "InstanceId": inv["InstanceId"],
                    "Comment": command.comment,
                    "DocumentName": command.document_name,
                    "RequestedDateTime": command.requested_date_time,
                    "Status": inv["Status"],
                    "StatusDetails": inv["StatusDetails"],
                }
                if details:
                    item["CommandPlugins"] = [
                        {
                            "Name": inv["PluginName"],
                            "Status": inv["Status"],
                            "StatusDetails": inv["StatusDetails"],
                            "ResponseCode": inv["ResponseCode"],
                            "Output": inv["StandardOutputContent"],
                        }
                    ]
                found.append(item)
        return ActionResult({"CommandInvocations": found})

    SimpleSystemManagerResponse.list_command_invocations = list_command_invocations


HEALTH = {}
AGENTS = {}
INVOCATIONS = {}


def ec2_instances():
    from moto.ec2.models import ec2_backends

    for account in ec2_backends.values():
        for backend in account.values():
            for reservation in backend.reservations.values():
                yield from reservation.instances


def instance_name(instance_id):
    """The Name tag of an EC2 instance (the fleet names instances by it)."""
    for instance in ec2_instances():
        if instance.id == instance_id:
            return next((t["value"] for t in instance.get_tags() if t["key"] == "Name"), None)
    return None


def patch_instance_health():
    """EC2 status checks: an instance a test marks fails them the way AWS
    reports it (DescribeInstanceStatus: InstanceStatus `impaired` with the
    `reachability` check `failed`, or `initializing` while checks run;
    EC2 User Guide, "Status checks for Amazon EC2 instances")."""
    from moto.ec2.models.instances import Instance

    original = Instance.instance_status.fget

    def instance_status(self):
        rule = HEALTH.get(instance_name(self.id))
        if rule is None or rule == "ok" or self.state_code != 16:
            return original(self)
        detail = "failed" if rule == "impaired" else "initializing"
        return {"Details": [{"Name": "reachability", "Status": detail}], "Status": rule}

    Instance.instance_status = property(instance_status)


def patch_ssm_instances():
    """ssm DescribeInstanceInformation, which moto lacks: the running EC2
    instances whose agent is registered, each with PingStatus Online, or
    ConnectionLost when a test says so (SSM API reference,
    DescribeInstanceInformation; filter key InstanceIds). SendCommand
    refuses an instance whose agent is not online with InvalidInstanceId
    (SSM API reference, SendCommand errors). GetCommandInvocation reports
    the outcome a test chose (see the module docstring)."""
    from moto.core.exceptions import JsonRESTError
    from moto.core.responses import ActionResult
    from moto.ssm import models
    from moto.ssm.responses import SimpleSystemManagerResponse

    def online(instance):
        return instance.state_code == 16 and AGENTS.get(instance_name(instance.id), True)

    def describe_instance_information(self):
        wanted = set()
        for f in self._get_param("Filters", []) or []:
            if f.get("Key") == "InstanceIds":
                wanted.update(f.get("Values", []))
        for f in self._get_param("InstanceInformationFilterList", []) or []:
            if f.get("key") == "InstanceIds":
                wanted.update(f.get("valueSet", []))
        found = []
        for instance in ec2_instances():
            if instance.state_code != 16 or (wanted and instance.id not in wanted):
                continue
            found.append({
                "InstanceId": instance.id,
                "PingStatus": "Online" if online(instance) else "ConnectionLost",
                "LastPingDateTime": time.time(),
                "AgentVersion": "3.3.0.0",
                "PlatformType": "Linux",
                "PlatformName": "NixOS",
                "ResourceType": "EC2Instance",
                "IPAddress": instance.private_ip,
                "ComputerName": instance_name(instance.id) or instance.id,
            })
        return ActionResult({"InstanceInformationList": found})

    SimpleSystemManagerResponse.describe_instance_information = describe_instance_information

    original_send = SimpleSystemManagerResponse.send_command

    def check_document(backend, name, parameters):
        """SendCommand refuses a document the account lacks (InvalidDocument)
        and a parameter value outside the document's allowedPattern
        (InvalidParameters), as SSM does
        (https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_SendCommand.html)."""
        if name.startswith("AWS-"):
            return
        document = backend._documents.get(name)
        if document is None:
            raise JsonRESTError("InvalidDocument", f"Document {name} does not exist")
        content = document.get_default_version().content_json
        for key, spec in (content.get("parameters") or {}).items():
            pattern = spec.get("allowedPattern")
            for value in (parameters or {}).get(key, []):
                if pattern and not re.fullmatch(pattern, value):
                    raise JsonRESTError("InvalidParameters", f"Parameter \"{key}\" value does not match the allowed pattern {pattern}")

    def send_command(self):
        ids = self._get_param("InstanceIds", []) or []
        check_document(self.ssm_backend, self._get_param("DocumentName"), self._get_param("Parameters"))
        by_id = {i.id: i for i in ec2_instances()}
        bad = [i for i in ids if i not in by_id or not online(by_id[i])]
        if bad:
            raise JsonRESTError("InvalidInstanceId", f"Instances {bad} not in a valid state for account {self.current_account}")
        return original_send(self)

    SimpleSystemManagerResponse.send_command = send_command

    original_response = models.Command.invocation_response

    def invocation_response(self, instance_id, plugin_name):
        invocation = original_response(self, instance_id, plugin_name)
        rule = INVOCATIONS.get(instance_name(instance_id))
        if rule:
            invocation.update({
                "Status": rule.get("status", "Success"),
                "StatusDetails": rule.get("status", "Success"),
                "ResponseCode": rule.get("code", 0),
                "StandardOutputContent": rule.get("stdout", ""),
                "StandardErrorContent": rule.get("stderr", ""),
                "_pending": int(rule.get("pending_polls", 0)),
            })
        return invocation

    models.Command.invocation_response = invocation_response

    def get_command_invocation(self):
        command = self.ssm_backend.get_command_by_id(self._get_param("CommandId"))
        invocation = command.get_invocation(self._get_param("InstanceId"), self._get_param("PluginName"))
        shown = {k: v for k, v in invocation.items() if not k.startswith("_")}
        if invocation.get("_pending", 0) > 0:
            invocation["_pending"] -= 1
            shown.update({"Status": "InProgress", "StatusDetails": "InProgress", "ResponseCode": -1, "StandardOutputContent": ""})
        return ActionResult(shown)

    SimpleSystemManagerResponse.get_command_invocation = get_command_invocation


SETTINGS = {}
CALLS = None
CALLS_LOCK = threading.Lock()
FAULTS = []
FAULTS_LOCK = threading.Lock()

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


def log_call(environ, service, operation, body):
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
    with CALLS_LOCK:
        if CALLS is not None:
            CALLS.append(entry)


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


def json_reply(start_response, value, status="200 OK"):
    body = json.dumps(value).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


class Switches:
    """WSGI middleware: the test-only switches of the module docstring."""

    def __init__(self, app):
        self.app = app

    def control(self, environ, start_response, path):
        method = environ["REQUEST_METHOD"]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        payload = json.loads(environ["wsgi.input"].read(length) or b"null") if length else None
        if path == "/_shim/faults":
            with FAULTS_LOCK:
                if method == "POST":
                    for rule in payload if isinstance(payload, list) else [payload]:
                        FAULTS.append(dict(rule, seen=0, fired=0))
                elif method == "DELETE":
                    FAULTS.clear()
                return json_reply(start_response, FAULTS)
        if path == "/_shim/calls":
            global CALLS
            with CALLS_LOCK:
                if method == "POST":
                    CALLS = [] if payload and payload.get("on") else None
                return json_reply(start_response, CALLS or [])
        if path == "/_shim/settings" and method == "POST":
            SETTINGS.update(payload)
            return json_reply(start_response, SETTINGS)
        if path == "/_shim/image-state" and method == "POST":
            from moto.ec2.models import ec2_backends

            for account in ec2_backends.values():
                for backend in account.values():
                    image = backend.amis.get(payload["image_id"])
                    if image is not None:
                        image.state = payload["state"]
                        return json_reply(start_response, {"ok": True})
            return json_reply(start_response, {"error": "no such image"}, "404 Not Found")
        if path == "/_shim/instance-health" and method == "POST":
            HEALTH[payload["name"]] = payload["status"]
            return json_reply(start_response, HEALTH)
        if path == "/_shim/ssm-agent" and method == "POST":
            AGENTS[payload["name"]] = bool(payload["online"])
            return json_reply(start_response, AGENTS)
        if path == "/_shim/ssm-invocation" and method == "POST":
            INVOCATIONS[payload["name"]] = payload
            return json_reply(start_response, INVOCATIONS)
        return json_reply(start_response, {"error": f"unknown switch {method} {path}"}, "404 Not Found")

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_shim/"):
            return self.control(environ, start_response, path)
        if not FAULTS and CALLS is None:
            return self.app(environ, start_response)
        service = service_of(environ)
        body = small_body(environ, service)
        operation = operation_of(environ, service, body)
        if CALLS is not None:
            log_call(environ, service, operation, body)
        if not FAULTS:
            return self.app(environ, start_response)
        fire = None
        with FAULTS_LOCK:
            for rule in FAULTS:
                if rule["operation"] != operation:
                    continue
                needle = rule.get("match")
                if needle and needle not in path and needle.encode() not in body:
                    continue
                rule["seen"] += 1
                times = rule.get("times", 1)
                if rule["seen"] > rule.get("after", 0) and (times < 0 or rule["fired"] < times):
                    rule["fired"] += 1
                    fire = dict(rule)
                    break
        if fire is None:
            return self.app(environ, start_response)
        if fire.get("stall"):
            time.sleep(float(fire["stall"]))
        return error_response(service, fire, start_response)


PATCHES = [patch_shared_images, patch_recorder_lock, patch_ssm_list_command_invocations, patch_instance_health, patch_ssm_instances, patch_s3_list_parts, patch_ebs_direct, patch_register_image, patch_import_snapshot]


# ---- DynamoDB (the control API's deploy cooldowns, control-api/src/cooldown.rs) ----


def patch_dynamodb_isolation():
    """DynamoDB isolates writes to an item from each other: a transaction is
    serializable with every other write, and a conditional write sees the
    item as the last write left it ("Isolation levels for DynamoDB
    transactions", Amazon DynamoDB Developer Guide). moto's server answers on
    threads, and its TransactWriteItems checks, writes and, on failure,
    restores a copy of the whole table without a lock: two concurrent
    transactions can both pass a condition, or one's rollback erase the
    other's write. One lock around moto's item operations restores what AWS
    documents (re-entrant: a transaction calls put_item and get_item)."""
    from moto.dynamodb.models import DynamoDBBackend

    lock = threading.RLock()
    for name in ("transact_write_items", "put_item", "update_item", "delete_item", "get_item"):
        original = getattr(DynamoDBBackend, name)

        def locked(self, *args, _original=original, **kwargs):
            with lock:
                return _original(self, *args, **kwargs)

        setattr(DynamoDBBackend, name, locked)


PATCHES.append(patch_dynamodb_isolation)

# ---- end DynamoDB ----


def main():
    # Request logging costs time on every call and nobody reads it.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    for patch in PATCHES:
        patch()

    from werkzeug.serving import make_server
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        create_backend_app,
    )

    app = Switches(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    # Some services build URLs from MOTO_PORT.
    os.environ["MOTO_PORT"] = str(server.server_port)
    print(f"PORT {server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
