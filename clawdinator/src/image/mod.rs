//! The image stage: build the NixOS image, publish it as a fleet AMI (EBS
//! direct or S3 + VM Import), and select or prune fleet AMIs.

pub mod ami;
pub mod build;
pub mod import;
pub mod publish;
pub mod snapshot;

pub use build::ImageManifest;
