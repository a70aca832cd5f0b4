//! The library's and the host binary's integration tests, one binary for
//! them all (one link of the AWS SDKs): a module per stage, each test
//! against a fresh emulator where it touches AWS.

mod audit;
mod aws;
mod bootstrap;
mod chaos;
mod fleet;
mod host;
mod image;
mod memory;
mod registry;
mod secrets;
mod version;
