//! The Lambda's `bootstrap`: configuration from the environment, then one
//! handler per request (see the library).

// What ships has no `unsafe`: system calls go through the library's crates.
#![forbid(unsafe_code)]

use anyhow::Context;
use clawdinator_control_api::{handle, Audit, Config, Live, Workflow};

fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("the function's environment lacks {name}"))
}

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let registry = clawdinator::registry::Registry::load(std::path::Path::new(
        &std::env::var("CLAWDINATOR_REGISTRY").unwrap_or_else(|_| "instances.json".into()),
    ))?;
    let operators = env("CLAWDINATOR_OPERATORS")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let aws = clawdinator::aws::Aws::load(&clawdinator::aws::Settings::default()).await?;
    let audit = Audit {
        aws: aws.clone(),
        chain: clawdinator::audit::BucketChain::new(&env("CLAWDINATOR_AUDIT_BUCKET")?, "control-api"),
    };
    let live = Live {
        aws,
        registry: registry.clone(),
        workflow: Workflow {
            api_url: std::env::var("GITHUB_API_URL").unwrap_or_else(|_| "https://api.github.com".into()),
            repo: env("GITHUB_REPOSITORY")?,
            workflow: "fleet-deploy.yml".into(),
            git_ref: std::env::var("CLAWDINATOR_DEPLOY_REF").unwrap_or_else(|_| "main".into()),
        },
        app_id: env("CLAWDINATOR_APP_ID")?,
        installation_id: env("CLAWDINATOR_APP_INSTALLATION_ID")?,
        pem_secret: std::env::var("CLAWDINATOR_APP_KEY_SECRET").unwrap_or_else(|_| "clawdinator/deploy-app.pem".into()),
    };
    let account = env("CLAWDINATOR_ACCOUNT_ID")?;
    let cooldowns = clawdinator_control_api::cooldown::Cooldowns::from_env(&live.aws)?;
    let config = Config { registry, operators, account, cooldowns };
    lambda_http::run(lambda_http::service_fn(|request| {
        let (config, live, audit) = (&config, &live, &audit);
        async move { Ok::<_, std::convert::Infallible>(handle(config, live, audit, request).await) }
    }))
    .await
}
