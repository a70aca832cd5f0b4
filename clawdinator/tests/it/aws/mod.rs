//! AWS access: CI without static keys (GitHub OIDC).

mod github_oidc;
