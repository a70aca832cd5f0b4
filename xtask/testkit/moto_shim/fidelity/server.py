"""Where moto's server itself departs from AWS: concurrent requests
(its recorder, DynamoDB's isolation) and S3's ListParts document."""

import threading


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
