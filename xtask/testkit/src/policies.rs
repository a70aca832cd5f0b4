//! The fleet's IAM policies as OpenTofu applies them: each is a template
//! under `infra/opentofu/aws/policies/`, rendered there by `templatefile()`
//! and here by [`render`] with the same keys (`cargo xtask test` checks that
//! every HCL call passes exactly the keys its template uses). Only plain
//! `${name}` substitutions are used, so the two renderings are the same
//! text. Lists reach the templates already JSON-encoded (`jsonencode` in
//! HCL, [`json_list`] here).
//!
//! [`World`] is the one place that fills in what OpenTofu knows only after
//! apply (the account, ARNs and ids of resources it creates): for the
//! emulator, its account and the test's bucket, the cache bucket named
//! after it as OpenTofu names it by default.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use clawdinator::registry::Instance;

/// Where the templates are, from the repository root.
pub const DIR: &str = "infra/opentofu/aws/policies";

/// `aws_dynamodb_table.cooldown`'s name.
pub const COOLDOWN_TABLE: &str = "clawdinator-control-api-cooldown";

/// The deploy App's key in Secrets Manager (`aws_secretsmanager_secret_policy.deploy_app`).
pub const DEPLOY_APP_SECRET: &str = "clawdinator/deploy-app.pem";

/// The VPC of the fleet's instances, as the emulator's world has it.
pub const FLEET_VPC: &str = "vpc-0123456789abcdef0";

/// The values OpenTofu fills from resources and data sources.
#[derive(Debug, Clone)]
pub struct World {
    pub partition: String,
    pub account: String,
    pub region: String,
    pub bucket: String,
    /// The binary cache's bucket (`aws_s3_bucket.cache`).
    pub cache_bucket: String,
    pub lock_table: String,
    pub memory_file_system: String,
    pub instance_security_group: String,
    pub control_api_function: String,
}

impl World {
    /// The emulator's account (moto's default) and region, with the test's bucket.
    pub fn emulator(bucket: &str) -> World {
        World {
            partition: "aws".into(),
            account: "123456789012".into(),
            region: "us-east-1".into(),
            bucket: bucket.into(),
            cache_bucket: format!("{bucket}-cache"),
            lock_table: "clawdinator-terraform-locks".into(),
            memory_file_system: "fs-0123456789abcdef0".into(),
            instance_security_group: "sg-0123456789abcdef0".into(),
            control_api_function: "clawdinator-control-api".into(),
        }
    }

    pub fn bucket_arn(&self) -> String {
        format!("arn:{}:s3:::{}", self.partition, self.bucket)
    }

    pub fn cache_bucket_arn(&self) -> String {
        format!("arn:{}:s3:::{}", self.partition, self.cache_bucket)
    }

    pub fn role_arn(&self, name: &str) -> String {
        format!("arn:{}:iam::{}:role/{name}", self.partition, self.account)
    }

    pub fn control_api_arn(&self) -> String {
        format!("arn:{}:lambda:{}:{}:function:{}", self.partition, self.region, self.account, self.control_api_function)
    }

    /// The public PR-intent bucket, by its default name.
    pub fn pr_intent_bucket_arn(&self) -> String {
        format!("arn:{}:s3:::openclaw-pr-intent", self.partition)
    }

    pub fn instance_boundary_arn(&self) -> String {
        format!("arn:{}:iam::{}:policy/clawdinator-instance-boundary", self.partition, self.account)
    }

    /// Every key a template may use, as the HCL computes it.
    fn values(&self) -> BTreeMap<&'static str, String> {
        let (p, r, a) = (&self.partition, &self.region, &self.account);
        BTreeMap::from([
            ("partition", p.clone()),
            ("account", a.clone()),
            ("region", r.clone()),
            ("bucket_arn", self.bucket_arn()),
            ("cache_bucket_arn", self.cache_bucket_arn()),
            ("lock_table_arn", format!("arn:{p}:dynamodb:{r}:{a}:table/{}", self.lock_table)),
            ("memory_arn", format!("arn:{p}:elasticfilesystem:{r}:{a}:file-system/{}", self.memory_file_system)),
            ("instance_security_group_id", self.instance_security_group.clone()),
            ("instance_boundary_arn", self.instance_boundary_arn()),
            ("control_api_arn", self.control_api_arn()),
            ("pr_intent_bucket_arn", self.pr_intent_bucket_arn()),
            ("cooldown_table_arn", self.cooldown_table_arn()),
            ("ci_role_arn", self.role_arn("clawdinator-ci")),
            ("control_api_role_arn", self.role_arn("clawdinator-control-api")),
        ])
    }

    /// The control API's cooldown table (`aws_dynamodb_table.cooldown`).
    pub fn cooldown_table_arn(&self) -> String {
        let (p, r, a) = (&self.partition, &self.region, &self.account);
        format!("arn:{p}:dynamodb:{r}:{a}:table/{COOLDOWN_TABLE}")
    }

    /// A secret's ARN as Secrets Manager makes it: the name, `-` and six
    /// random characters (here always the same six).
    pub fn secret_arn(&self, name: &str) -> String {
        let (p, r, a) = (&self.partition, &self.region, &self.account);
        format!("arn:{p}:secretsmanager:{r}:{a}:secret:{name}-AbCdEf")
    }

    /// The deploy App's key, which only the control API's role may read.
    pub fn deploy_app_secret_arn(&self) -> String {
        self.secret_arn(DEPLOY_APP_SECRET)
    }
}

/// The names between `${` and `}` of a template (`$${` is a literal).
pub fn template_variables(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        let escaped = at > 0 && rest.as_bytes()[at - 1] == b'$';
        rest = &rest[at + 2..];
        if let (false, Some(end)) = (escaped, rest.find('}')) {
            found.insert(rest[..end].trim().to_string());
        }
    }
    found
}

/// `items` as a JSON array, as `jsonencode` writes a list of strings.
pub fn json_list<S: AsRef<str>>(items: &[S]) -> String {
    Value::from(items.iter().map(|s| s.as_ref().to_string()).collect::<Vec<_>>()).to_string()
}

/// `template` with each `${name}` replaced by `values[name]` (`$${` is a
/// literal `${`, as in `templatefile`); a name without a value is an error.
pub fn render(template: &str, values: &BTreeMap<&str, String>) -> Result<String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(at) = rest.find("${") {
        if at > 0 && rest.as_bytes()[at - 1] == b'$' {
            out.push_str(&rest[..at - 1]);
            out.push_str("${");
            rest = &rest[at + 2..];
            continue;
        }
        out.push_str(&rest[..at]);
        let end = rest[at..].find('}').context("an unclosed ${ in a template")? + at;
        let name = rest[at + 2..end].trim();
        match values.get(name) {
            Some(value) => out.push_str(value),
            None => bail!("the template uses ${{{name}}}, which has no value"),
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The policy document `name` (`policies/<name>.json.tftpl`) rendered with
/// the world's values plus `extra`.
pub fn document(root: &Path, name: &str, world: &World, extra: &[(&'static str, String)]) -> Result<Value> {
    let path = root.join(DIR).join(format!("{name}.json.tftpl"));
    let template = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut values = world.values();
    values.extend(extra.iter().cloned());
    let text = render(&template, &values).with_context(|| path.display().to_string())?;
    serde_json::from_str(&text).with_context(|| format!("{} does not render to JSON", path.display()))
}

/// Who makes a call: its ARN, the identity policies OpenTofu attaches to
/// it (name, document), its permissions boundary, and the condition keys
/// its credentials add to every request it signs ([`Principal::session`]).
#[derive(Debug, Clone)]
pub struct Principal {
    pub name: String,
    pub arn: String,
    pub identity: Vec<(String, Value)>,
    pub boundary: Option<Value>,
    pub session: BTreeMap<String, Value>,
}

impl Principal {
    /// A principal with these policies and credentials from no instance.
    pub fn new(name: &str, arn: &str, identity: Vec<(String, Value)>, boundary: Option<Value>) -> Principal {
        Principal { name: name.into(), arn: arn.into(), identity, boundary, session: BTreeMap::new() }
    }

    /// The same principal signing with credentials EC2 issued to a fleet
    /// instance: AWS adds `aws:ec2InstanceSourceVPC` (and the instance's
    /// private address) to every request signed with those (IAM's global
    /// condition keys); no other credentials carry them.
    pub fn on_an_instance(mut self) -> Principal {
        self.session.insert("aws:ec2InstanceSourceVPC".into(), Value::from(FLEET_VPC));
        self.session.insert("aws:ec2InstanceSourcePrivateIPv4".into(), Value::from("10.0.1.17"));
        self
    }

    /// The same principal signing with credentials from anywhere else
    /// (an AssumeRole from another account, keys carried off the host's
    /// role by something that is not EC2).
    pub fn off_any_instance(mut self, name: &str) -> Principal {
        self.session.clear();
        self.name = name.into();
        self
    }
}

/// The CI role (`aws_iam_role_policy.ci`).
pub fn ci(root: &Path, world: &World) -> Result<Principal> {
    let identity = vec![("clawdinator-ci".into(), document(root, "ci", world, &[])?)];
    Ok(Principal::new("ci", &world.role_arn("clawdinator-ci"), identity, None))
}

/// A member of the operators' group (`aws_iam_group_policy.operators`)
/// with nothing else: what the fleet itself grants a human.
pub fn operator(root: &Path, world: &World) -> Result<Principal> {
    let identity = vec![("clawdinator-control-api".into(), document(root, "operators", world, &[])?)];
    let arn = format!("arn:{}:iam::{}:user/alice", world.partition, world.account);
    Ok(Principal::new("an operator", &arn, identity, None))
}

/// The instance boundary (`aws_iam_policy.instance_boundary`).
pub fn instance_boundary(root: &Path, world: &World) -> Result<Value> {
    document(root, "instance-boundary", world, &[])
}

/// The deploy App key's resource policy (`aws_secretsmanager_secret_policy.deploy_app`).
pub fn deploy_app_secret_policy(root: &Path, world: &World) -> Result<Value> {
    document(root, "deploy-app-secret", world, &[])
}

/// An instance's role (`aws_iam_role_policy.instance[NAME]`, and the
/// control API grant when it is enabled), within the instance boundary.
pub fn instance(root: &Path, world: &World, instance: &Instance, control_api: bool) -> Result<Principal> {
    let (p, r, a) = (&world.partition, &world.region, &world.account);
    let secrets = clawdinator::secrets::Spec::load(&root.join(clawdinator::secrets::DEFAULT_SPEC))?;
    let mut arns: Vec<String> = secrets
        .common
        .iter()
        .map(|n| format!("arn:{p}:secretsmanager:{r}:{a}:secret:clawdinator/{n}-??????"))
        .collect();
    arns.push(format!("arn:{p}:secretsmanager:{r}:{a}:secret:clawdinator/{}/discord-token-??????", instance.host));
    let identity_arn =
        format!("arn:{p}:secretsmanager:{r}:{a}:secret:clawdinator/{}/age-identity-??????", instance.host);
    let extra = [
        ("bootstrap_prefix", instance.bootstrap_prefix.clone()),
        ("secret_arns", json_list(&arns)),
        ("age_identity_arn", identity_arn),
    ];
    let mut identity = vec![("clawdinator-instance".to_string(), document(root, "instance", world, &extra)?)];
    if control_api {
        identity.push(("clawdinator-instance-control-api".into(), document(root, "instance-control-api", world, &[])?));
    }
    let name = format!("instance {}", instance.host);
    let arn = world.role_arn(&format!("clawdinator-instance-{}", instance.host));
    Ok(Principal::new(&name, &arn, identity, Some(instance_boundary(root, world)?)).on_an_instance())
}

/// An instance among `pr_intent_publishers`: its policies plus the managed
/// `clawdinator-pr-intent-publish` OpenTofu attaches to it.
pub fn pr_intent_publisher(root: &Path, world: &World, mut instance: Principal) -> Result<Principal> {
    instance.identity.push(("clawdinator-pr-intent-publish".into(), document(root, "pr-intent-publish", world, &[])?));
    instance.name = format!("{} (publisher)", instance.name);
    Ok(instance)
}

/// Whoever sends an unsigned request: no identity policy, no account;
/// only a resource policy could let it in.
pub fn anonymous() -> Principal {
    Principal::new("anyone (unsigned)", ANONYMOUS, vec![], None)
}

/// The [`Principal::arn`] of [`anonymous`].
pub const ANONYMOUS: &str = "anonymous";

/// The control API's Lambda role (`aws_iam_role_policy.control_api`).
pub fn control_api(root: &Path, world: &World) -> Result<Principal> {
    let identity = vec![("clawdinator-control-api".into(), document(root, "control-api", world, &[])?)];
    Ok(Principal::new("control api", &world.role_arn("clawdinator-control-api"), identity, None))
}

/// The fleet bucket's resource policy (`aws_s3_bucket_policy.fleet`).
pub fn bucket_policy(root: &Path, world: &World) -> Result<Value> {
    document(root, "bucket", world, &[])
}

/// The cache bucket's resource policy (`aws_s3_bucket_policy.cache`).
pub fn cache_bucket_policy(root: &Path, world: &World) -> Result<Value> {
    let arn = world.cache_bucket_arn();
    let extra = [("actions", json_list(&["s3:*"])), ("resources", json_list(&[arn.clone(), format!("{arn}/*")]))];
    document(root, "deny-without-tls", world, &extra)
}

/// The public PR-intent bucket's resource policy (`aws_s3_bucket_policy.pr_intent`).
pub fn pr_intent_bucket_policy(root: &Path, world: &World) -> Result<Value> {
    document(root, "pr-intent-public", world, &[])
}
