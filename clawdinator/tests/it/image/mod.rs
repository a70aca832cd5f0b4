//! Images: `image build` with a stand-in nix (and its `--kvm-device`), `image publish` by both paths
//! and AMI selection (`publish`), and publish when things go wrong
//! (`publish_failures`: injected faults, re-runs, cancellation).

mod build;
mod kvm_device;
mod publish;
mod publish_failures;
