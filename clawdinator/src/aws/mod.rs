//! How every stage reaches AWS: one configuration for every command (the
//! standard credential chain, `AWS_ENDPOINT_URL`, explicit timeouts and a
//! single retry layer), and errors that name the operation, the resource
//! and the IAM permission a denial lacks.
//!
//! - `config`: [`Settings`], [`Timeouts`] and [`Aws`], the loaded configuration and its clients
//!   (S3, STS, IAM, EC2, EBS, Secrets Manager, SSM, DynamoDB);
//! - `error`: [`error`] and [`error_code`], an SDK error as one line;
//! - `github_oidc`: in GitHub Actions, the CI role assumed with a fresh OIDC token;
//! - [`actions`]: the IAM action(s) each operation needs;
//! - [`iam`]: policy documents as IAM returns them, and trust policy checks;
//! - [`s3`]: S3 helpers every stage shares (conditional writes, multipart).

pub mod actions;
mod config;
mod error;
mod github_oidc;
pub mod iam;
pub mod s3;

pub use config::{Aws, Settings, Timeouts};
pub use error::{error, error_code, may_have_been_carried_out};
