# This repository's crate, built from Cargo.lock with nixpkgs' Rust
# tooling: what hosts run as `clawdinator` (the same program as
# `cargo xtask` in a checkout).
{ lib, rustPlatform, cmake, perl }:

rustPlatform.buildRustPackage {
  pname = "clawdinator";
  inherit ((lib.importTOML ../xtask/Cargo.toml).package) version;

  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [ ../Cargo.toml ../Cargo.lock ../xtask ../.cargo ];
  };
  cargoLock.lockFile = ../Cargo.lock;

  # aws-lc-sys (TLS) builds its C sources.
  nativeBuildInputs = [ cmake perl ];
  dontUseCmakeConfigure = true;

  cargoBuildFlags = [ "--package" "xtask" "--bin" "clawdinator" ];
  # The tests need the AWS emulator (moto, from PyPI) and network; CI runs
  # them with `cargo xtask test`.
  doCheck = false;

  meta = {
    description = "clawdinators host commands: bootstrap, secrets, memory, deploys";
    mainProgram = "clawdinator";
    license = lib.licenses.mit;
  };
}
