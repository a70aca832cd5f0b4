//! The fleet against EC2: status, deploy and switch (`status_deploy_switch`),
//! and the host's signed client for the control API (`control_client`).

mod control_client;
mod status_deploy_switch;
