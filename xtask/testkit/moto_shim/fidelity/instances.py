"""EC2 instances as the fleet names them, and their status checks."""

from .. import state


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
        rule = state.for_instance("health", instance_name(self.id))
        if rule is None or rule == "ok" or self.state_code != 16:
            return original(self)
        detail = "failed" if rule == "impaired" else "initializing"
        return {"Details": [{"Name": "reachability", "Status": detail}], "Status": rule}

    Instance.instance_status = property(instance_status)
