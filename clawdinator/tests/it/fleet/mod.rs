//! The fleet against EC2: status, deploy and switch (`status_deploy_switch`),
//! the host's signed client for the control API (`control_client`) and the
//! root helper through which agents reach it (`control_helper`), and a
//! fleet of 300 hosts (`scale`).

mod control_client;
mod control_helper;
pub(crate) mod scale;
mod status_deploy_switch;
