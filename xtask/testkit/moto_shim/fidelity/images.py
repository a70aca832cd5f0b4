"""AMIs: RegisterImage, CopyImage, EnableImageDeprecation and shared
images as the EC2 API reference documents them, where moto differs. The
functions taking `self` replace moto's EC2Response methods."""

import threading

from moto.core.responses import ActionResult
from moto.ec2.exceptions import EC2ClientError
from moto.ec2.models import amis, ec2_backends
from moto.ec2.models.amis import Ami
from moto.ec2.responses import EC2Response

# CopyImage's answers by (account, region, ClientToken), with the request's
# parameters; a retry racing the original (each on a thread of the server)
# gets its copy too.
COPY_TOKENS = {}
COPY_LOCK = threading.Lock()


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
    image.registered_bdm = [registered_mapping(backend, image, bdm) for bdm in self._get_param("BlockDeviceMappings", [])]
    tags = self._parse_tag_specification().get("image", {})
    if tags:
        backend.create_tags([image.id], tags)
    return ActionResult({"ImageId": image.id})


def registered_mapping(backend, image, bdm):
    """One block device mapping as RegisterImage was given it, its snapshot
    now the AMI's."""
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
    return {
        "DeviceName": bdm.get("DeviceName"),
        "Ebs": {
            "SnapshotId": snap_id,
            "VolumeSize": size,
            "VolumeType": ebs.get("VolumeType", "gp2"),
            "DeleteOnTermination": ebs.get("DeleteOnTermination", False),
            "Encrypted": False,
        },
    }


def copy_image(self):
    # CopyImage: a repeated ClientToken returns the original copy.
    # EC2 idempotency (Ensuring idempotency in Amazon EC2 API requests):
    # a repeated ClientToken returns the original result, even when that
    # AMI has since been deregistered; other parameters with the same
    # token are IdempotentParameterMismatch.
    token = self._get_param("ClientToken")
    key = (self.current_account, self.region, token)
    params = (self._get_param("SourceImageId"), self._get_param("SourceRegion"), self._get_param("Name"))
    with COPY_LOCK:
        if token and key in COPY_TOKENS:
            original, image_id = COPY_TOKENS[key]
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
            COPY_TOKENS[key] = (params, image.id)
    return ActionResult({"ImageId": image.id})


def enable_image_deprecation(self):
    # EnableImageDeprecation sets the image's DeprecationTime.
    image = self.ec2_backend.describe_images(ami_ids=[self._get_param("ImageId")])[0]
    at = self._get_param("DeprecateAt")
    image.deprecation_time = at if isinstance(at, str) else at.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return ActionResult({"Return": True})


def patch_register_image():
    """RegisterImage keeps what the caller registered (EC2 API reference,
    RegisterImage): moto drops everything but the name."""
    original_bdm = Ami.block_device_mappings

    def block_device_mappings(self):
        return getattr(self, "registered_bdm", None) or original_bdm.fget(self)

    Ami.block_device_mappings = property(block_device_mappings)
    EC2Response.register_image = register_image
    EC2Response.copy_image = copy_image
    EC2Response.enable_image_deprecation = enable_image_deprecation


def patch_shared_images():
    """A public AMI, or one whose launch permissions name an account, is
    visible to that account by id (DescribeImages; "Share an AMI with
    specific AWS accounts", https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/sharingamis-explicit.html).
    moto keeps each account's images apart; this shows the shared ones by
    id, never under an Owners filter that does not name their owner."""
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
