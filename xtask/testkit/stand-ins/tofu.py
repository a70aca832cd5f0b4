"""A stand-in for `tofu` in the tests (testkit::env::stand_in_tofu writes it
out with the project venv's python, which has boto3, on its first line).

Every call is logged as a JSON line to $TOFU_LOG (the arguments, the TF_
environment and the -var-file's text). `init` records the S3 backend in
.terraform/ as tofu does; `apply` takes the state lock in DynamoDB, reads and
bumps the state's serial in S3 and makes the instances of
nix/instances.json (-target, -replace) against the emulator at
$AWS_ENDPOINT_URL, with their roles. $TOFU_FAIL fails the apply as a
capacity error would; $TOFU_SECURITY_GROUP and $TOFU_BOUNDARY_ARN fill in
what the module would.
"""

import json
import os
import re
import sys

import boto3

args = sys.argv[1:]
with open(os.environ["TOFU_LOG"], "a") as log:
    env = {k: v for k, v in os.environ.items() if k.startswith("TF_")}
    entry = {"args": args, "env": env}
    var_file = next((a[len("-var-file="):] for a in args if a.startswith("-var-file=")), None)
    if var_file:
        # What tofu got, kept: the job removes the file when it ends.
        with open(var_file) as text:
            entry["varFile"] = text.read()
    log.write(json.dumps(entry) + "\n")
chdir = next(a[len("-chdir="):] for a in args if a.startswith("-chdir="))
command = next(a for a in args if not a.startswith("-"))
# init records the S3 backend in .terraform/, as tofu does; apply reads it.
backend_file = os.path.join(chdir, ".terraform", "backend.json")
if command == "init":
    backend = dict(a[len("-backend-config="):].split("=", 1) for a in args if a.startswith("-backend-config="))
    os.makedirs(os.path.dirname(backend_file), exist_ok=True)
    with open(backend_file, "w") as out:
        json.dump(backend, out)
if command != "apply":
    sys.exit(0)
if not os.path.exists(backend_file):
    print("Error: Backend initialization required: please run \"tofu init\"", file=sys.stderr)
    sys.exit(1)
def apply():
    with open(os.path.join(chdir, "../../../nix/instances.json")) as text:
        registry = json.load(text)
    ami = next(a.split("=", 2)[2] for a in args if a.startswith("-var=ami_id="))
    ec2 = boto3.client("ec2", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1")
    def live(name):
        out = ec2.describe_instances(Filters=[{"Name": "tag:Name", "Values": [name]}, {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}])
        return [i["InstanceId"] for r in out["Reservations"] for i in r["Instances"]]
    iam = boto3.client("iam", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1")
    TRUST = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Principal": {"Service": "ec2.amazonaws.com"}}]})
    OWN_BUNDLE = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::*/bootstrap/NAME/*"}]})
    BOUNDARY = os.environ.get("TOFU_BOUNDARY_ARN", "arn:aws:iam::123456789012:policy/clawdinator-instance-boundary")
    def role(name):
        # aws_iam_role/_policy/_policy_attachment and aws_iam_instance_profile.instance[name]
        role = f"clawdinator-instance-{name}"
        try:
            iam.get_role(RoleName=role)
            return role
        except iam.exceptions.NoSuchEntityException:
            pass
        iam.create_role(RoleName=role, AssumeRolePolicyDocument=TRUST, PermissionsBoundary=BOUNDARY,
                        Tags=[{"Key": "app", "Value": "clawdinator"}, {"Key": "clawdinator:instance", "Value": name}])
        iam.put_role_policy(RoleName=role, PolicyName="clawdinator-instance", PolicyDocument=OWN_BUNDLE.replace("NAME", name))
        iam.create_instance_profile(InstanceProfileName=role)
        iam.add_role_to_instance_profile(InstanceProfileName=role, RoleName=role)
        return role
    def create(name):
        tags = [{"Key": "Name", "Value": name}, {"Key": "app", "Value": "clawdinator"}, {"Key": "clawdinator:instance", "Value": name}]
        extra = {"SecurityGroupIds": [os.environ["TOFU_SECURITY_GROUP"]]} if os.environ.get("TOFU_SECURITY_GROUP") else {}
        ec2.run_instances(ImageId=ami, InstanceType=registry[name]["instanceType"], MinCount=1, MaxCount=1,
                          IamInstanceProfile={"Name": role(name)}, **extra,
                          TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])
    def names(flag):
        return [m.group(1) for a in args for m in [re.match(flag + r'=aws_instance\.clawdinator\["(.+)"\]$', a)] if m]
    for name in names("-replace"):
        old = live(name)
        if old:
            ec2.terminate_instances(InstanceIds=old)
        create(name)
    targets = names("-target") or ([] if names("-replace") else list(registry))
    for name in targets:
        if not live(name):
            create(name)
with open(backend_file) as text:
    backend = json.load(text)
endpoint = os.environ["AWS_ENDPOINT_URL"]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name=backend["region"])
dynamodb = boto3.client("dynamodb", endpoint_url=endpoint, region_name=backend["region"])
lock = {"LockID": {"S": backend["bucket"] + "/" + backend["key"]}}
# The state lock (a conditional put, as the S3 backend takes it), then the state.
dynamodb.put_item(TableName=backend["dynamodb_table"], Item=dict(lock, Info={"S": "stand-in tofu"}),
                  ConditionExpression="attribute_not_exists(LockID)")
try:
    try:
        serial = json.loads(s3.get_object(Bucket=backend["bucket"], Key=backend["key"])["Body"].read())["serial"]
    except s3.exceptions.NoSuchKey:
        serial = 0
    if os.environ.get("TOFU_FAIL"):
        print("Error: creating EC2 Instance: InsufficientInstanceCapacity", file=sys.stderr)
        sys.exit(1)
    apply()
    s3.put_object(Bucket=backend["bucket"], Key=backend["key"], Body=json.dumps({"serial": serial + 1}).encode())
finally:
    dynamodb.delete_item(TableName=backend["dynamodb_table"], Key=lock)
