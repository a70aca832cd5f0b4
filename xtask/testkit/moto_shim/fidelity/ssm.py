"""Systems Manager: the instances' agents and the commands run on them, as
the SSM API reference documents them, where moto differs or lacks the call.
The functions taking `self` become SimpleSystemManagerResponse methods."""

import re
import time

from moto.core.exceptions import JsonRESTError
from moto.core.responses import ActionResult
from moto.ssm import models
from moto.ssm.responses import SimpleSystemManagerResponse

from .. import state
from .instances import ec2_instances, instance_name


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


def online(instance):
    return instance.state_code == 16 and state.for_instance("agents", instance_name(instance.id), True)


def wanted_instances(self):
    """The instance ids DescribeInstanceInformation filters by (either filter form)."""
    wanted = set()
    for f in self._get_param("Filters", []) or []:
        if f.get("Key") == "InstanceIds":
            wanted.update(f.get("Values", []))
    for f in self._get_param("InstanceInformationFilterList", []) or []:
        if f.get("key") == "InstanceIds":
            wanted.update(f.get("valueSet", []))
    return wanted


def describe_instance_information(self):
    wanted = wanted_instances(self)
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


def get_command_invocation(self):
    command = self.ssm_backend.get_command_by_id(self._get_param("CommandId"))
    invocation = command.get_invocation(self._get_param("InstanceId"), self._get_param("PluginName"))
    shown = {k: v for k, v in invocation.items() if not k.startswith("_")}
    if invocation.get("_pending", 0) > 0:
        invocation["_pending"] -= 1
        shown.update({"Status": "InProgress", "StatusDetails": "InProgress", "ResponseCode": -1, "StandardOutputContent": ""})
    return ActionResult(shown)


def patch_ssm_list_command_invocations():
    """ssm ListCommandInvocations, which moto lacks: one invocation per
    targeted instance of each command, filtered by CommandId and InstanceId;
    with Details=true each lists its plugins (SSM API reference,
    ListCommandInvocations). The fleet deploy polls it after SendCommand."""
    SimpleSystemManagerResponse.list_command_invocations = list_command_invocations


def patch_ssm_instances():
    """ssm DescribeInstanceInformation, which moto lacks: the running EC2
    instances whose agent is registered, each with PingStatus Online, or
    ConnectionLost when a test says so (SSM API reference,
    DescribeInstanceInformation; filter key InstanceIds). SendCommand
    refuses an instance whose agent is not online with InvalidInstanceId
    (SSM API reference, SendCommand errors). GetCommandInvocation reports
    the outcome a test chose (`ssm-invocation` in moto_shim/__init__.py)."""
    SimpleSystemManagerResponse.describe_instance_information = describe_instance_information
    SimpleSystemManagerResponse.get_command_invocation = get_command_invocation

    original_send = SimpleSystemManagerResponse.send_command

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
        rule = state.for_instance("invocations", instance_name(instance_id))
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
