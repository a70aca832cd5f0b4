"""EBS direct APIs (StartSnapshot, PutSnapshotBlock, CompleteSnapshot,
GetSnapshotBlock) as the EBS direct APIs reference documents them
(https://docs.aws.amazon.com/ebs/latest/APIReference/), where moto differs.
The functions below replace moto's EBSResponse methods (`self` is one)."""

import base64
import hashlib
import json
import threading

from moto.core.exceptions import JsonRESTError
from moto.core.responses import ActionResult
from moto.ebs import models, responses
from moto.ec2.models.elastic_block_store import EBSBackend as EC2EBSBackend

from .. import state

EBS_BLOCK = 524288
# StartSnapshot's answers by (account, region, ClientToken), with the request's parameters.
TOKENS = {}
TOKENS_LOCK = threading.Lock()


def start_snapshot(self):
    token = self._get_param("ClientToken")
    params = json.dumps(
        [self._get_param(k) for k in ("VolumeSize", "Tags", "Description", "Encrypted", "KmsKeyArn")],
        sort_keys=True,
        default=str,
    )
    with TOKENS_LOCK:
        # ClientToken: "if the original request completes successfully,
        # the subsequent retries with the same client token return the
        # result from the original successful request" - whatever has
        # happened to that snapshot since. A token reused with other
        # parameters is a ConflictException ("The request uses the same
        # client token as a previous, but non-identical request").
        key = (self.current_account, self.region, token)
        if token and key in TOKENS:
            original_params, response = TOKENS[key]
            if original_params != params:
                raise JsonRESTError(
                    "ConflictException",
                    "The request uses the same client token as a previous, but non-identical request.",
                )
            return ActionResult(response)
        response = new_snapshot(self)
        if token:
            TOKENS[key] = (params, response)
    return ActionResult(response)


def new_snapshot(self):
    """StartSnapshot's answer for a snapshot it starts now."""
    backend = self.ebs_backend
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
    return response


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
    pending_polls = state.setting("snapshot_pending_polls")
    if ok and pending_polls:
        ec2_snap.status = "pending"
        ec2_snap.pending_polls = pending_polls
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


def patch_ebs_direct():
    """EBS direct APIs as the EBS API reference documents them."""
    original_init = models.EBSSnapshot.__init__

    def init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        # StartSnapshot: "BlockSize: The size of the blocks in the snapshot,
        # in bytes" - always 524288. moto answers 512.
        self.block_size = EBS_BLOCK

    original_describe = EC2EBSBackend.describe_snapshots

    def describe_snapshots(self, *args, **kwargs):
        # A completed snapshot a test holds back stays "pending" for
        # `snapshot_pending_polls` DescribeSnapshots calls (EBS completes asynchronously).
        found = original_describe(self, *args, **kwargs)
        for snap in found:
            polls = getattr(snap, "pending_polls", 0)
            if polls:
                snap.pending_polls = polls - 1
                if polls == 1:
                    snap.status = "completed"
        return found

    models.EBSSnapshot.__init__ = init
    EC2EBSBackend.describe_snapshots = describe_snapshots
    responses.EBSResponse.writable = writable
    responses.EBSResponse.start_snapshot = start_snapshot
    responses.EBSResponse.put_snapshot_block = put_snapshot_block
    responses.EBSResponse.complete_snapshot = complete_snapshot
    responses.EBSResponse.get_snapshot_block = get_snapshot_block
