"""Where moto differs from AWS's documented behaviour, or lacks an API this
project calls: one patch each, naming the AWS documentation it follows.
Nothing here is used against real AWS."""

from .ebs import patch_ebs_direct
from .images import patch_register_image, patch_shared_images
from .instances import patch_instance_health
from .server import patch_dynamodb_isolation, patch_recorder_lock, patch_s3_list_parts
from .ssm import patch_ssm_instances, patch_ssm_list_command_invocations
from .vm_import import patch_import_snapshot

PATCHES = [
    patch_shared_images,
    patch_recorder_lock,
    patch_ssm_list_command_invocations,
    patch_instance_health,
    patch_ssm_instances,
    patch_s3_list_parts,
    patch_ebs_direct,
    patch_register_image,
    patch_import_snapshot,
    patch_dynamodb_isolation,
]


def apply():
    for patch in PATCHES:
        patch()
