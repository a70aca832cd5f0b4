//! AWS access: CI without static keys (GitHub OIDC); timeouts.

mod github_oidc;
mod timeouts;
