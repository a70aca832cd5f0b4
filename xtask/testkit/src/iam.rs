//! The policy judge: every AWS call a command made in the emulator (the
//! shim's call log) becomes the IAM request(s) AWS authorises it by, and
//! `@cloud-copilot/iam-simulate` decides each against the rendered policies
//! of the principal that made it ([`crate::policies`]).
//!
//! The action, resource ARN and condition keys of each operation follow the
//! Service Authorization Reference
//! (<https://docs.aws.amazon.com/service-authorization/latest/reference/>);
//! an operation without a mapping here is an error, so a new call cannot
//! slip past the judge.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context, Result};
use clawdinator::aws::iam::percent_decode;
use serde_json::{json, Value};

use crate::policies::{Principal, World};

pub const SIMULATOR: &str = "@cloud-copilot/iam-simulate";
pub const SIMULATOR_VERSION: &str = "0.1.173";

/// One IAM authorisation a call needs.
#[derive(Debug, Clone)]
pub struct Request {
    pub action: String,
    pub resource: String,
    pub context: BTreeMap<String, Value>,
    /// The call it comes from, e.g. `s3 PutObject /bucket/key`.
    pub call: String,
}

/// What the emulator knows that a request's condition keys need: tags of
/// instances, full secret ARNs, instance profiles' roles, roles' boundaries.
#[derive(Debug, Default)]
pub struct Facts {
    pub instance_tags: BTreeMap<String, BTreeMap<String, String>>,
    pub secret_arns: BTreeMap<String, String>,
    pub profile_roles: BTreeMap<String, String>,
    pub role_boundaries: BTreeMap<String, String>,
}

impl Facts {
    /// Read from the emulator (as its admin) what `calls` refer to.
    pub async fn gather(aws: &clawdinator::aws::Aws, calls: &[Value]) -> Facts {
        let mut facts = Facts::default();
        let out = aws.ec2().describe_instances().send().await;
        for instance in out.iter().flat_map(|o| o.reservations()).flat_map(|r| r.instances()) {
            let tags = instance.tags().iter().filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())));
            facts.instance_tags.insert(instance.instance_id().unwrap_or_default().to_string(), tags.collect());
        }
        let secrets = aws.secrets_manager().list_secrets().include_planned_deletion(true).send().await;
        for secret in secrets.iter().flat_map(|s| s.secret_list()) {
            if let (Some(name), Some(arn)) = (secret.name(), secret.arn()) {
                facts.secret_arns.insert(name.to_string(), arn.to_string());
                facts.secret_arns.insert(arn.to_string(), arn.to_string());
            }
        }
        for call in calls.iter().filter(|c| c["service"] == "iam") {
            if let Some(profile) = call["form"]["InstanceProfileName"].as_str() {
                if let Ok(out) = aws.iam().get_instance_profile().instance_profile_name(profile).send().await {
                    let role = out.instance_profile().and_then(|p| p.roles().first()).map(|r| r.role_name());
                    facts.profile_roles.insert(profile.into(), role.unwrap_or_default().into());
                }
            }
            if let Some(role) = call["form"]["RoleName"].as_str() {
                if let Ok(out) = aws.iam().get_role().role_name(role).send().await {
                    let boundary =
                        out.role().and_then(|r| r.permissions_boundary()).and_then(|b| b.permissions_boundary_arn());
                    facts.role_boundaries.insert(role.into(), boundary.unwrap_or_default().into());
                }
            }
        }
        facts
    }
}

/// The numbered members `Prefix.1`, `Prefix.2`, … of a query-protocol form.
fn members(form: &Value, prefix: &str) -> Vec<String> {
    (1..).map_while(|n| form[format!("{prefix}.{n}")].as_str().map(str::to_string)).collect()
}

/// `aws:TagKeys` and `aws:RequestTag/…` for the tags a request sets.
fn tag_context(tags: &[(String, String)]) -> BTreeMap<String, Value> {
    let mut context = BTreeMap::new();
    if tags.is_empty() {
        return context;
    }
    context.insert("aws:TagKeys".into(), json!(tags.iter().map(|(k, _)| k).collect::<Vec<_>>()));
    for (k, v) in tags {
        context.insert(format!("aws:RequestTag/{k}"), json!(v));
    }
    context
}

/// `<prefix>:ResourceTag/…` (EC2 `ec2:`, SSM `ssm:resourceTag/`) of an instance.
fn resource_tags(facts: &Facts, instance: &str, prefix: &str) -> BTreeMap<String, Value> {
    let tags = facts.instance_tags.get(instance).cloned().unwrap_or_default();
    tags.into_iter().map(|(k, v)| (format!("{prefix}{k}"), json!(v))).collect()
}

fn query(call: &Value) -> BTreeMap<String, String> {
    let text = call["query"].as_str().unwrap_or("");
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(&v.replace('+', " ")))
        })
        .collect()
}

/// The IAM requests one logged call needs (none for calls that need no permission).
pub fn requests(call: &Value, world: &World, facts: &Facts) -> Result<Vec<Request>> {
    let service = call["service"].as_str().unwrap_or("");
    let operation = call["operation"].as_str().unwrap_or("");
    let label = format!("{service} {operation} {}", call["path"].as_str().unwrap_or(""));
    let pieces = match service {
        "s3" => s3(call, operation, world)?,
        "ec2" => ec2(call, operation, world, facts)?,
        "ebs" => ebs(call, operation, world)?,
        "ssm" => ssm(call, operation, world, facts)?,
        "secretsmanager" => secrets(call, operation, world, facts)?,
        "iam" => iam(call, operation, world, facts)?,
        "dynamodb" => dynamodb(call, operation, world)?,
        "sts" if operation == "GetCallerIdentity" => vec![],
        _ => bail!("no IAM mapping for {service} {operation} (add it to testkit/src/iam.rs)"),
    };
    Ok(pieces
        .into_iter()
        .map(|(action, resource, context)| Request { action, resource, context, call: label.clone() })
        .collect())
}

type Piece = (String, String, BTreeMap<String, Value>);

/// Where an S3 call points: its bucket's and its object's ARNs, and the
/// parameters of its query.
struct S3Target {
    bucket_arn: String,
    object: String,
    query: BTreeMap<String, String>,
}

impl S3Target {
    fn of(call: &Value, world: &World) -> S3Target {
        let path = percent_decode(call["path"].as_str().unwrap_or("").trim_start_matches('/'));
        let (bucket, key) = path.split_once('/').unwrap_or((&path, ""));
        let bucket_arn = format!("arn:{}:s3:::{bucket}", world.partition);
        let object = format!("{bucket_arn}/{key}");
        S3Target { bucket_arn, object, query: query(call) }
    }
}

/// One S3 action on one resource.
fn s3_one(action: &str, resource: &str, context: BTreeMap<String, Value>) -> Vec<Piece> {
    vec![(format!("s3:{action}"), resource.to_string(), context)]
}

fn s3(call: &Value, operation: &str, world: &World) -> Result<Vec<Piece>> {
    let target = S3Target::of(call, world);
    match s3_object(call, operation, world, &target).or_else(|| s3_bucket(operation, &target)) {
        Some(pieces) => Ok(pieces),
        None => bail!("no IAM mapping for s3 {operation}"),
    }
}

/// The requests of a call on objects (None for a call that is not one).
fn s3_object(call: &Value, operation: &str, world: &World, target: &S3Target) -> Option<Vec<Piece>> {
    let (object, none) = (&target.object, BTreeMap::new);
    let mut put_context = none();
    if let Some(v) = call["headers"]["if-none-match"].as_str() {
        put_context.insert("s3:if-none-match".to_string(), json!(v));
    }
    // Tags set with the object (x-amz-tagging) are authorised as
    // PutObjectTagging too, beside PutObject (the S3 API reference).
    let tagged = |mut pieces: Vec<Piece>| {
        if call["headers"]["x-amz-tagging"].is_string() {
            pieces.extend(s3_one("PutObjectTagging", object, none()));
        }
        pieces
    };
    // A request naming a version is authorised as its …Version action: a
    // delete with ?versionId= removes that version for good, where a plain
    // delete only hides the object behind a delete marker.
    let versioned = target.query.contains_key("versionId");
    Some(match operation {
        // HEAD needs what GET needs (nix's S3 store asks with HEAD whether
        // a narinfo exists).
        "GetObject" | "HeadObject" if versioned => s3_one("GetObjectVersion", object, none()),
        "GetObject" | "HeadObject" => s3_one("GetObject", object, none()),
        "PutObject" => tagged(s3_one("PutObject", object, put_context)),
        "CompleteMultipartUpload" => s3_one("PutObject", object, put_context),
        "CreateMultipartUpload" => tagged(s3_one("PutObject", object, none())),
        "UploadPart" => s3_one("PutObject", object, none()),
        "CopyObject" => {
            let source = call["headers"]["x-amz-copy-source"].as_str().unwrap_or("");
            let source = percent_decode(source.trim_start_matches('/'));
            let mut pieces = tagged(s3_one("PutObject", object, put_context));
            pieces.extend(s3_one("GetObject", &format!("arn:{}:s3:::{source}", world.partition), none()));
            pieces
        }
        "DeleteObject" if versioned => s3_one("DeleteObjectVersion", object, none()),
        "DeleteObject" => s3_one("DeleteObject", object, none()),
        "DeleteObjects" => {
            let keys = call["keys"].as_array().cloned().unwrap_or_default();
            let bucket_arn = &target.bucket_arn;
            keys.iter()
                .flat_map(|k| s3_one("DeleteObject", &format!("{bucket_arn}/{}", k.as_str().unwrap_or("")), none()))
                .collect()
        }
        "AbortMultipartUpload" => s3_one("AbortMultipartUpload", object, none()),
        "ListParts" => s3_one("ListMultipartUploadParts", object, none()),
        _ => return None,
    })
}

/// The requests of a call on a bucket itself (None for a call that is not one).
fn s3_bucket(operation: &str, target: &S3Target) -> Option<Vec<Piece>> {
    let (bucket_arn, q, none) = (&target.bucket_arn, &target.query, BTreeMap::new);
    Some(match operation {
        "ListObjects" if q.contains_key("versions") => s3_one("ListBucketVersions", bucket_arn, none()),
        "ListObjects" if q.contains_key("location") => s3_one("GetBucketLocation", bucket_arn, none()),
        "ListObjects" | "HeadBucket" => {
            // The condition keys of s3:ListBucket the request sets (an
            // absent parameter sets none, and StringLike on it fails).
            let keys = [("prefix", "s3:prefix"), ("delimiter", "s3:delimiter")];
            let context = keys.iter().filter_map(|(p, k)| Some((k.to_string(), json!(q.get(*p)?))));
            s3_one("ListBucket", bucket_arn, context.collect())
        }
        "ListMultipartUploads" => s3_one("ListBucketMultipartUploads", bucket_arn, none()),
        "CreateBucket" => s3_one("CreateBucket", bucket_arn, none()),
        _ => return None,
    })
}

fn ec2_arn(world: &World, id: &str) -> Result<String> {
    let (p, r, a) = (&world.partition, &world.region, &world.account);
    Ok(match id.split_once('-').map(|(k, _)| k) {
        Some("ami") => format!("arn:{p}:ec2:{r}::image/{id}"),
        Some("snap") => format!("arn:{p}:ec2:{r}::snapshot/{id}"),
        Some("i") => format!("arn:{p}:ec2:{r}:{a}:instance/{id}"),
        Some("vol") => format!("arn:{p}:ec2:{r}:{a}:volume/{id}"),
        Some("import") => format!("arn:{p}:ec2:{r}:{a}:import-snapshot-task/{id}"),
        _ => bail!("no ARN form known for the EC2 id {id}"),
    })
}

/// The tags of a query-protocol form, numbered below `list`: `Tag.` (EC2
/// CreateTags), `TagSpecification.N.Tag.` (one launch group), `Tags.member.` (IAM).
fn form_tags(form: &Value, list: &str) -> Vec<(String, String)> {
    (1..)
        .map_while(|n| {
            let key = form[format!("{list}{n}.Key")].as_str()?;
            Some((key.to_string(), form[format!("{list}{n}.Value")].as_str().unwrap_or("").to_string()))
        })
        .collect()
}

fn ec2(call: &Value, operation: &str, world: &World, facts: &Facts) -> Result<Vec<Piece>> {
    let form = &call["form"];
    let (p, r, a) = (&world.partition, &world.region, &world.account);
    let action = format!("ec2:{operation}");
    let get = |k: &str| form[k].as_str().unwrap_or("").to_string();
    let none = BTreeMap::new;
    let instance_context = |id: &str| resource_tags(facts, id, "ec2:ResourceTag/");
    Ok(match operation {
        op if op.starts_with("Describe") || op.starts_with("Get") => vec![(action, "*".into(), none())],
        "RegisterImage" => {
            let mut pieces = vec![(action.clone(), format!("arn:{p}:ec2:{r}::image/*"), none())];
            for snapshot in (1..).map_while(|n| form[format!("BlockDeviceMapping.{n}.Ebs.SnapshotId")].as_str()) {
                pieces.push((action.clone(), ec2_arn(world, snapshot)?, none()));
            }
            pieces
        }
        "CopyImage" => vec![
            (action.clone(), format!("arn:{p}:ec2:{r}::image/*"), none()),
            (action, format!("arn:{p}:ec2:{}::image/{}", get("SourceRegion"), get("SourceImageId")), none()),
        ],
        "DeregisterImage" | "EnableImageDeprecation" => vec![(action, ec2_arn(world, &get("ImageId"))?, none())],
        "DeleteSnapshot" => vec![(action, ec2_arn(world, &get("SnapshotId"))?, none())],
        "ImportSnapshot" => vec![
            (action.clone(), format!("arn:{p}:ec2:{r}:{a}:import-snapshot-task/*"), none()),
            (action, format!("arn:{p}:ec2:{r}::snapshot/*"), none()),
        ],
        "CancelImportTask" => vec![(action, ec2_arn(world, &get("ImportTaskId"))?, none())],
        "CreateTags" => {
            let tags = tag_context(&form_tags(form, "Tag."));
            members(form, "ResourceId")
                .iter()
                .map(|id| {
                    let mut context = tags.clone();
                    context.extend(instance_context(id));
                    Ok((action.clone(), ec2_arn(world, id)?, context))
                })
                .collect::<Result<_>>()?
        }
        "TerminateInstances" | "MonitorInstances" | "StopInstances" | "StartInstances" => members(form, "InstanceId")
            .iter()
            .map(|id| Ok((action.clone(), ec2_arn(world, id)?, instance_context(id))))
            .collect::<Result<_>>()?,
        "ModifyInstanceAttribute" => {
            let id = get("InstanceId");
            vec![(action, ec2_arn(world, &id)?, instance_context(&id))]
        }
        "RunInstances" => run_instances(form, world, facts)?,
        _ => bail!("no IAM mapping for ec2 {operation}"),
    })
}

/// RunInstances: every resource it creates or uses, the tags it applies at
/// launch (CreateTags with `ec2:CreateAction`), and the role it passes.
fn run_instances(form: &Value, world: &World, facts: &Facts) -> Result<Vec<Piece>> {
    let (p, r, a) = (&world.partition, &world.region, &world.account);
    let action = "ec2:RunInstances".to_string();
    let get = |k: &str| form[k].as_str().unwrap_or("").to_string();
    let mut pieces: Vec<Piece> = ["instance/*", "volume/*", "network-interface/*"]
        .iter()
        .map(|kind| (action.clone(), format!("arn:{p}:ec2:{r}:{a}:{kind}"), BTreeMap::new()))
        .collect();
    pieces.push((action.clone(), ec2_arn(world, &get("ImageId"))?, BTreeMap::new()));
    if let Some(subnet) = form["SubnetId"].as_str() {
        pieces.push((action.clone(), format!("arn:{p}:ec2:{r}:{a}:subnet/{subnet}"), BTreeMap::new()));
    }
    for group in members(form, "SecurityGroupId") {
        pieces.push((action.clone(), format!("arn:{p}:ec2:{r}:{a}:security-group/{group}"), BTreeMap::new()));
    }
    for n in (1..).take_while(|n| form[format!("TagSpecification.{n}.ResourceType")].is_string()) {
        let kind = get(&format!("TagSpecification.{n}.ResourceType"));
        let mut context = tag_context(&form_tags(form, &format!("TagSpecification.{n}.Tag.")));
        context.insert("ec2:CreateAction".into(), json!("RunInstances"));
        pieces.push(("ec2:CreateTags".into(), format!("arn:{p}:ec2:{r}:{a}:{kind}/*"), context));
    }
    if let Some(profile) = form["IamInstanceProfile.Name"].as_str() {
        let role =
            facts.profile_roles.get(profile).with_context(|| format!("no role known for the profile {profile}"))?;
        let context = BTreeMap::from([("iam:PassedToService".to_string(), json!("ec2.amazonaws.com"))]);
        pieces.push(("iam:PassRole".into(), world.role_arn(role), context));
    }
    Ok(pieces)
}

fn ebs(call: &Value, operation: &str, world: &World) -> Result<Vec<Piece>> {
    let path = call["path"].as_str().unwrap_or("");
    let id = path.split('/').find(|s| s.starts_with("snap-"));
    let resource = match (operation, id) {
        ("StartSnapshot", _) => format!("arn:{}:ec2:{}::snapshot/*", world.partition, world.region),
        (_, Some(id)) => ec2_arn(world, id)?,
        _ => bail!("no snapshot id in the EBS call {path}"),
    };
    Ok(vec![(format!("ebs:{operation}"), resource, BTreeMap::new())])
}

fn ssm(call: &Value, operation: &str, world: &World, facts: &Facts) -> Result<Vec<Piece>> {
    let body = &call["json"];
    let (p, r, a) = (&world.partition, &world.region, &world.account);
    let action = format!("ssm:{operation}");
    Ok(match operation {
        "SendCommand" => {
            // AWS evaluates an AWS-owned document as `arn:…:ssm:REGION::document/NAME`;
            // the simulator's ARN check needs an account, so the policy names
            // the document with `*` there, which matches both.
            let document = body["DocumentName"].as_str().unwrap_or("");
            let mut pieces =
                vec![(action.clone(), format!("arn:{p}:ssm:{r}:{a}:document/{document}"), BTreeMap::new())];
            for id in body["InstanceIds"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                pieces.push((action.clone(), ec2_arn(world, id)?, resource_tags(facts, id, "ssm:resourceTag/")));
            }
            pieces
        }
        "GetParameter" => {
            let name = body["Name"].as_str().unwrap_or("");
            let name = name.strip_prefix('/').unwrap_or(name);
            vec![(action, format!("arn:{p}:ssm:{r}:{a}:parameter/{name}"), BTreeMap::new())]
        }
        "GetCommandInvocation" | "ListCommandInvocations" | "DescribeInstanceInformation" | "ListCommands" => {
            vec![(action, "*".into(), BTreeMap::new())]
        }
        _ => bail!("no IAM mapping for ssm {operation}"),
    })
}

/// The table's ARN.
fn table_arn(world: &World, table: &str) -> String {
    format!("arn:{}:dynamodb:{}:{}:table/{table}", world.partition, world.region, world.account)
}

/// DynamoDB: a transaction is authorised item by item, each as the
/// operation it holds (PutItem, UpdateItem, DeleteItem, and
/// ConditionCheckItem for a ConditionCheck: "Using IAM with DynamoDB
/// transactions" in the DynamoDB developer guide); there is no IAM action
/// TransactWriteItems.
fn dynamodb(call: &Value, operation: &str, world: &World) -> Result<Vec<Piece>> {
    let body = &call["json"];
    if operation == "TransactWriteItems" {
        let items = body["TransactItems"].as_array().context("a TransactWriteItems call without TransactItems")?;
        let enclosing = || BTreeMap::from([("dynamodb:EnclosingOperation".to_string(), json!(operation))]);
        return items
            .iter()
            .map(|item| {
                let (kind, inner) = item.as_object().and_then(|o| o.iter().next()).context("an empty transact item")?;
                let action = match kind.as_str() {
                    "Put" => "PutItem",
                    "Update" => "UpdateItem",
                    "Delete" => "DeleteItem",
                    "ConditionCheck" => "ConditionCheckItem",
                    other => bail!("no IAM mapping for the transact item {other}"),
                };
                let table = inner["TableName"].as_str().context("a transact item without TableName")?;
                Ok((format!("dynamodb:{action}"), table_arn(world, table), enclosing()))
            })
            .collect();
    }
    let table = body["TableName"].as_str().context("a DynamoDB call without TableName")?;
    Ok(vec![(format!("dynamodb:{operation}"), table_arn(world, table), BTreeMap::new())])
}

fn secrets(call: &Value, operation: &str, world: &World, facts: &Facts) -> Result<Vec<Piece>> {
    let body = &call["json"];
    let action = format!("secretsmanager:{operation}");
    if operation == "ListSecrets" {
        return Ok(vec![(action, "*".into(), BTreeMap::new())]);
    }
    let id = body["SecretId"].as_str().or(body["Name"].as_str()).context("a Secrets Manager call without a secret")?;
    // A secret created and deleted again (a failed upload's cleanup) is no
    // longer in the emulator; its ARN still has the name and six characters.
    let gone = matches!(operation, "CreateSecret" | "DeleteSecret").then(|| match id.starts_with("arn:") {
        true => id.to_string(),
        false => world.secret_arn(id),
    });
    let arn =
        facts.secret_arns.get(id).cloned().or(gone).with_context(|| format!("the emulator has no secret {id}"))?;
    let tags: Vec<(String, String)> = body["Tags"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| (t["Key"].as_str().unwrap_or("").into(), t["Value"].as_str().unwrap_or("").into()))
        .collect();
    let mut pieces = vec![(action, arn.clone(), tag_context(&tags))];
    // Tags given at creation need secretsmanager:TagResource too (the
    // CreateSecret API reference).
    if operation == "CreateSecret" && !tags.is_empty() {
        pieces.push(("secretsmanager:TagResource".into(), arn, tag_context(&tags)));
    }
    Ok(pieces)
}

fn iam(call: &Value, operation: &str, world: &World, facts: &Facts) -> Result<Vec<Piece>> {
    let form = &call["form"];
    let action = format!("iam:{operation}");
    let tags = form_tags(form, "Tags.member.");
    let pieces = iam_role(form, operation, &action, &tags, world, facts)
        .or_else(|| iam_profile_or_policy(form, operation, &action, &tags, world));
    match pieces {
        Some(pieces) => Ok(pieces),
        None => bail!("no IAM mapping for iam {operation}"),
    }
}

/// The requests of a call on a role (None for a call that is not one).
fn iam_role(
    form: &Value,
    operation: &str,
    action: &str,
    tags: &[(String, String)],
    world: &World,
    facts: &Facts,
) -> Option<Vec<Piece>> {
    let action = action.to_string();
    let role = form["RoleName"].as_str().unwrap_or("");
    let role_arn = world.role_arn(role);
    let boundary = |role: &str| {
        let known = facts.role_boundaries.get(role).filter(|b| !b.is_empty());
        known.map(|b| BTreeMap::from([("iam:PermissionsBoundary".to_string(), json!(b))])).unwrap_or_default()
    };
    Some(match operation {
        "CreateRole" => {
            let mut context = tag_context(tags);
            if let Some(b) = form["PermissionsBoundary"].as_str() {
                context.insert("iam:PermissionsBoundary".into(), json!(b));
            }
            // Tags given at creation are authorised as TagRole too.
            let mut pieces = vec![(action, role_arn.clone(), context)];
            if !tags.is_empty() {
                pieces.push(("iam:TagRole".into(), role_arn, tag_context(tags)));
            }
            pieces
        }
        "PutRolePolicy" | "DeleteRolePolicy" | "DetachRolePolicy" => vec![(action, role_arn, boundary(role))],
        "AttachRolePolicy" => {
            let mut context = boundary(role);
            context.insert("iam:PolicyARN".into(), json!(form["PolicyArn"].as_str().unwrap_or("")));
            vec![(action, role_arn, context)]
        }
        "TagRole" => vec![(action, role_arn, tag_context(tags))],
        "GetRole"
        | "GetRolePolicy"
        | "ListRolePolicies"
        | "ListAttachedRolePolicies"
        | "ListInstanceProfilesForRole" => {
            vec![(action, role_arn, BTreeMap::new())]
        }
        _ => return None,
    })
}

/// The requests of a call on an instance profile or a managed policy (None
/// for a call that is not one).
fn iam_profile_or_policy(
    form: &Value,
    operation: &str,
    action: &str,
    tags: &[(String, String)],
    world: &World,
) -> Option<Vec<Piece>> {
    let (p, a) = (&world.partition, &world.account);
    let action = action.to_string();
    let profile = format!("arn:{p}:iam::{a}:instance-profile/{}", form["InstanceProfileName"].as_str().unwrap_or(""));
    Some(match operation {
        "CreateInstanceProfile" if !tags.is_empty() => vec![
            (action, profile.clone(), tag_context(tags)),
            ("iam:TagInstanceProfile".into(), profile, tag_context(tags)),
        ],
        "CreateInstanceProfile" | "GetInstanceProfile" => vec![(action, profile, BTreeMap::new())],
        // A managed policy is read by its ARN (`doctor` reads the roles' policies).
        "GetPolicy" | "GetPolicyVersion" => {
            vec![(action, form["PolicyArn"].as_str().unwrap_or("").to_string(), BTreeMap::new())]
        }
        // Adding a role to a profile also passes it, to EC2: the IAM API
        // reference for AddRoleToInstanceProfile says the caller needs
        // PassRole and that its iam:AssociatedResourceArn is an EC2 instance
        // ARN, so the role is passed to ec2.amazonaws.com.
        "AddRoleToInstanceProfile" => {
            let role_arn = world.role_arn(form["RoleName"].as_str().unwrap_or(""));
            let to_ec2 = BTreeMap::from([("iam:PassedToService".to_string(), json!("ec2.amazonaws.com"))]);
            vec![(action, profile, BTreeMap::new()), ("iam:PassRole".into(), role_arn, to_ec2)]
        }
        _ => return None,
    })
}

/// One decision of the simulator.
#[derive(Debug, Clone)]
pub struct Decision {
    pub principal: String,
    pub request: Request,
    pub allowed: bool,
    /// The simulator's result and why (`ImplicitlyDenied: no statement …`).
    pub reason: String,
}

impl std::fmt::Display for Decision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} on {} ({}): {}",
            self.principal, self.request.action, self.request.resource, self.request.call, self.reason
        )?;
        if !self.request.context.is_empty() {
            write!(f, " with {}", serde_json::to_string(&self.request.context).unwrap_or_default())?;
        }
        Ok(())
    }
}

/// Run by `node -e`: argv [node, package dir]; stdin {cases: […]}; prints
/// [{result, reason}] in the same order.
const SIMULATE: &str = r#"
// The package resolves through its `exports` map only by name.
const load = require("module").createRequire(process.argv[1] + "/package.json");
const { runSimulation } = load("@cloud-copilot/iam-simulate");
let input = "";
process.stdin.on("data", (d) => (input += d));
process.stdin.on("end", async () => {
  const { cases } = JSON.parse(input);
  const out = [];
  const sid = (s) => (s.explain && s.explain.identifier) || (s.statement && s.statement.Sid) || "?";
  for (const c of cases) {
    const simulation = {
      identityPolicies: c.identity,
      serviceControlPolicies: [],
      resourceControlPolicies: [],
      permissionBoundaryPolicies: c.boundary ? [{ name: "boundary", policy: c.boundary }] : undefined,
      resourcePolicy: c.resourcePolicy || undefined,
      request: { action: c.action, principal: c.principal,
                 resource: { accountId: c.account, resource: c.resource }, contextVariables: c.context },
    };
    const r = await runSimulation(simulation, {});
    if (r.resultType === "error") { out.push({ result: "Error", reason: JSON.stringify(r.errors) }); continue; }
    const analyses = r.resultType === "single" ? [r.result] : r.results;
    const why = [];
    for (const a of analyses.map((x) => x.analysis || {})) {
      for (const [name, part] of [["identity", a.identityAnalysis], ["boundary", a.permissionBoundaryAnalysis], ["resource", a.resourceAnalysis]]) {
        if (!part) continue;
        for (const s of part.denyStatements || []) why.push(`${name} policy denies by ${sid(s)}`);
        if (part.result && part.result !== "Allowed" && !(part.denyStatements || []).length) {
          const near = (part.unmatchedStatements || []).filter((s) => s.actionMatch)
            .map((s) => `${sid(s)} (${[s.resourceMatch ? "" : "resource", s.conditionMatch === "Match" ? "" : "condition"].filter(Boolean).join(", ") || "?"} differs)`);
          why.push(`${name} policy: ${part.result}` + (near.length ? `; statements for this action that did not match: ${near.join("; ")}` : "; no statement names this action"));
        }
      }
    }
    if (!why.length && r.resultType === "wildcard" && !r.results.length) {
      why.push("no statement grants this action on resources of this pattern");
    }
    out.push({ result: r.overallResult, reason: why.length ? why.join(" / ") : r.overallResult });
  }
  process.stdout.write(JSON.stringify(out));
});
"#;

/// Judge `requests` (each with its principal) with the simulator; S3
/// requests meet the policy of their bucket: `bucket_policy` on the fleet
/// bucket, and on the cache and the public PR-intent bucket the policies
/// OpenTofu gives them; the deploy App's key meets its own. Each request
/// carries its principal's [`Principal::session`] keys. A principal whose ARN is
/// [`ANONYMOUS`](crate::policies::ANONYMOUS) sends unsigned requests.
pub fn judge(world: &World, bucket_policy: &Value, requests: &[(&Principal, Request)]) -> Result<Vec<Decision>> {
    let root = crate::repo_root();
    let resources = ResourcePolicies {
        bucket: bucket_policy.clone(),
        deploy_app_secret: crate::policies::deploy_app_secret_policy(&root, world)?,
        pr_intent_bucket: crate::policies::pr_intent_bucket_policy(&root, world)?,
    };
    judge_with(world, &resources, requests)
}

/// The resource policies a test may change (to show each statement is
/// needed); the others are always OpenTofu's.
#[derive(Debug, Clone)]
pub struct ResourcePolicies {
    /// The fleet bucket's (`aws_s3_bucket_policy.fleet`).
    pub bucket: Value,
    /// The deploy App key's (`aws_secretsmanager_secret_policy.deploy_app`).
    pub deploy_app_secret: Value,
    /// The public PR-intent bucket's (`aws_s3_bucket_policy.pr_intent`).
    pub pr_intent_bucket: Value,
}

/// [`judge`] with these resource policies.
pub fn judge_with(
    world: &World,
    policies: &ResourcePolicies,
    requests: &[(&Principal, Request)],
) -> Result<Vec<Decision>> {
    let root = crate::repo_root();
    let package = crate::npm::npm_package(&root, SIMULATOR, SIMULATOR_VERSION)?;
    let meets = PolicyOf::new(world, policies, crate::policies::cache_bucket_policy(&root, world)?);
    let cases: Vec<Value> = requests
        .iter()
        .map(|(principal, request)| simulation_case(world, principal, request, meets.resource(&request.resource)))
        .collect();
    let results = simulate(&package, &cases)?;
    Ok(requests
        .iter()
        .zip(results)
        .map(|((principal, request), r)| Decision {
            principal: principal.name.clone(),
            request: request.clone(),
            allowed: r["result"] == "Allowed",
            reason: format!("{}: {}", r["result"].as_str().unwrap_or("?"), r["reason"].as_str().unwrap_or("")),
        })
        .collect())
}

/// Which resource policy a request meets: its bucket's, or the deploy
/// App key's.
struct PolicyOf<'p> {
    buckets: [(String, Value); 3],
    deploy_app: &'p Value,
    deploy_app_arn: String,
}

impl<'p> PolicyOf<'p> {
    fn new(world: &World, policies: &'p ResourcePolicies, cache_bucket: Value) -> PolicyOf<'p> {
        PolicyOf {
            buckets: [
                (world.bucket_arn(), policies.bucket.clone()),
                (world.cache_bucket_arn(), cache_bucket),
                (world.pr_intent_bucket_arn(), policies.pr_intent_bucket.clone()),
            ],
            deploy_app: &policies.deploy_app_secret,
            deploy_app_arn: world.deploy_app_secret_arn(),
        }
    }

    /// The policy on `resource`, if it has one.
    fn resource(&self, resource: &str) -> Option<&Value> {
        // The secret's ARN without its six random characters.
        let deploy_app_stem = &self.deploy_app_arn[..self.deploy_app_arn.len() - 6];
        let on =
            |arn: &String| resource == arn || resource.strip_prefix(arn.as_str()).is_some_and(|r| r.starts_with('/'));
        let secret = resource.strip_prefix(deploy_app_stem).is_some_and(|rest| rest.len() == 6);
        let bucket = self.buckets.iter().find(|(arn, _)| on(arn)).map(|(_, policy)| policy);
        bucket.or(secret.then_some(self.deploy_app))
    }
}

/// What the simulator is asked for one request: the principal's policies,
/// the resource's, and the request's context with the keys AWS adds.
fn simulation_case(world: &World, principal: &Principal, request: &Request, resource_policy: Option<&Value>) -> Value {
    let mut context = principal.session.clone();
    context.extend(request.context.clone());
    // Every call the fleet makes is HTTPS; a request may say it is not
    // (a reader trying plain HTTP).
    context.entry("aws:SecureTransport".into()).or_insert(json!("true"));
    // AWS sets it on every signed request: the role's ARN for a
    // role's session (IAM's global condition keys).
    if principal.arn != crate::policies::ANONYMOUS {
        context.insert("aws:PrincipalArn".into(), json!(principal.arn));
    }
    let who =
        if principal.arn == crate::policies::ANONYMOUS { json!({"type": "Anonymous"}) } else { json!(principal.arn) };
    json!({
        "principal": who,
        "identity": principal.identity.iter().map(|(name, policy)| json!({"name": name, "policy": policy})).collect::<Vec<_>>(),
        "boundary": principal.boundary,
        "resourcePolicy": resource_policy,
        "action": request.action,
        "resource": request.resource,
        "account": world.account,
        "context": context,
    })
}

/// Run [`SIMULATE`] with the simulator in `package` on `cases`: one
/// `{result, reason}` for each, in order.
fn simulate(package: &std::path::Path, cases: &[Value]) -> Result<Vec<Value>> {
    use std::io::Write;
    let mut child = std::process::Command::new("node")
        .arg("-e")
        .arg(SIMULATE)
        .arg(package)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("cannot run node (the IAM simulator needs Node.js)")?;
    child.stdin.take().expect("piped").write_all(json!({ "cases": cases }).to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    anyhow::ensure!(out.status.success(), "the IAM simulator failed");
    serde_json::from_slice(&out.stdout).context("the simulator's output is not JSON")
}

/// Which command made each call: `(command, calls logged when it ended)`,
/// in order, as a test marks them with [`Commands::ran`].
#[derive(Debug, Default, Clone)]
pub struct Commands(pub Vec<(String, usize)>);

impl Commands {
    /// `command` has ended; the log then held `logged` calls.
    pub fn ran(&mut self, command: &str, logged: usize) {
        self.0.push((command.to_string(), logged));
    }

    /// The command that made call number `index`.
    pub fn of(&self, index: usize) -> &str {
        self.0.iter().find(|(_, end)| index < *end).map(|(c, _)| c.as_str()).unwrap_or("an unmarked command")
    }
}

/// The distinct requests of `calls` made with `access_key` (the principal's
/// own key), each naming the command that made it.
pub fn requests_of(
    calls: &[Value],
    access_key: &str,
    commands: &Commands,
    world: &World,
    facts: &Facts,
) -> Result<Vec<Request>> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (index, call) in calls.iter().enumerate().filter(|(_, c)| c["accessKey"] == access_key) {
        for mut request in requests(call, world, facts)? {
            request.call = format!("`{}`: {}", commands.of(index), request.call);
            let key = (request.action.clone(), request.resource.clone(), serde_json::to_string(&request.context)?);
            if seen.insert(key) {
                out.push(request);
            }
        }
    }
    Ok(out)
}
