//! Secrets: `secrets check` and the no-secret-in-output promise (`check`),
//! Secrets Manager and GitHub App tokens (`manager`).

mod check;
mod manager;
mod store;
