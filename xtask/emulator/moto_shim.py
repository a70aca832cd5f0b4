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


def patch_ebs_block_size():
    # EBS direct APIs: StartSnapshot/ListSnapshotBlocks return BlockSize 524288
    # ("The size of the blocks in the snapshot, in bytes" - always 512 KiB,
    # EBS API reference, StartSnapshot response). moto answers 512.
    from moto.ebs import models

    original = models.EBSSnapshot.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.block_size = 524288

    models.EBSSnapshot.__init__ = init


PATCHES = [patch_ebs_block_size]


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
