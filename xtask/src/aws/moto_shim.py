"""Test-only launcher for moto server, the project's local AWS emulator.

Starts moto on 127.0.0.1 with an OS-chosen port, prints `PORT <n>` on stdout
once it is listening, and serves until killed. Before serving it patches the
few places where moto differs from AWS's documented behaviour or lacks an API
this project calls. Each patch names the AWS behaviour it follows; nothing
here is used against real AWS.
"""

import logging
import os
import sys


import base64
import hashlib
import math
import threading
import uuid

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
        with lock:
            # ClientToken: "Idempotency ensures that an API request completes
            # only once": a retry with the same token returns the original
            # snapshot (while it still exists).
            key = (self.current_account, self.region, token)
            if token and key in tokens and tokens[key] in backend.snapshots:
                snap = backend.snapshots[tokens[key]]
            else:
                snap = backend.start_snapshot(
                    volume_size=self._get_param("VolumeSize"),
                    tags=self._get_param("Tags"),
                    description=self._get_param("Description"),
                )
                ec2_snap = backend.ec2_backend.get_snapshot(snap.snapshot_id)
                # A snapshot being written is "pending" in EC2 until completed.
                ec2_snap.status = "pending"
                if self._get_param("Encrypted") or self._get_param("KmsKeyArn"):
                    ec2_snap.encrypted = True
                    ec2_snap.kms_key_id = self._get_param("KmsKeyArn")
                if token:
                    tokens[key] = snap.snapshot_id
        return ActionResult(
            {
                "SnapshotId": snap.snapshot_id,
                "OwnerId": snap.account_id,
                "Status": snap.status,
                "StartTime": snap.start_time,
                "VolumeSize": snap.volume_size,
                "BlockSize": snap.block_size,
                "Tags": snap.tags,
                "Description": snap.description,
            }
        )

    def put_snapshot_block(self):
        data = self._get_param("BlockData")
        if isinstance(data, str):
            data = data.encode("latin-1")
        data = bytes(data or b"")
        checksum = self._get_param("Checksum")
        length = int(self._get_param("DataLength"))
        snap = self.ebs_backend.snapshots.get(self._get_param("SnapshotId"))
        if snap is None:
            raise JsonRESTError("ResourceNotFoundException", "The snapshot does not exist")
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
        snap = self.ebs_backend.snapshots.get(self._get_param("SnapshotId"))
        if snap is None:
            raise JsonRESTError("ResourceNotFoundException", "The snapshot does not exist")
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
        self.ebs_backend.ec2_backend.get_snapshot(snap.snapshot_id).status = status
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
        token = self._get_param("ClientToken")
        key = (self.current_account, self.region, token)
        if token and key in copy_tokens and copy_tokens[key] in self.ec2_backend.amis:
            return ActionResult({"ImageId": copy_tokens[key]})
        image = self.ec2_backend.copy_image(
            self._get_param("SourceImageId"),
            self._get_param("SourceRegion"),
            self._get_param("Name"),
            self._get_param("Description"),
        )
        if token:
            copy_tokens[key] = image.id
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

    EC2Response.import_snapshot = import_snapshot
    EC2Response.describe_import_snapshot_tasks = describe_import_snapshot_tasks


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


PATCHES = [patch_recorder_lock, patch_ssm_list_command_invocations, patch_s3_list_parts, patch_ebs_direct, patch_register_image, patch_import_snapshot]


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

    app = DomainDispatcherApplication(create_backend_app)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    # Some services build URLs from MOTO_PORT.
    os.environ["MOTO_PORT"] = str(server.server_port)
    print(f"PORT {server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
