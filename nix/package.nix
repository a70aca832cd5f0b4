# The host binary `clawdinator` (the clawdinator crate: the stages' commands,
# no dev harness), built from Cargo.lock with nixpkgs' Rust tooling. The
# source holds every workspace member, since cargo loads the whole workspace.
{ lib, rustPlatform, cmake, perl }:

rustPlatform.buildRustPackage {
  pname = "clawdinator";
  inherit ((lib.importTOML ../clawdinator/Cargo.toml).package) version;

  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [ ../Cargo.toml ../Cargo.lock ../clawdinator ../control-api ../xtask ../.cargo ];
  };
  cargoLock.lockFile = ../Cargo.lock;

  # aws-lc-sys (TLS) builds its C sources.
  nativeBuildInputs = [ cmake perl ];
  dontUseCmakeConfigure = true;

  cargoBuildFlags = [ "--package" "clawdinator" "--bin" "clawdinator" ];
  # The tests need the AWS emulator (moto, from PyPI) and network; CI runs
  # them with `cargo xtask test`.
  doCheck = false;

  meta = {
    description = "clawdinators host commands: bootstrap, secrets, memory, deploys";
    mainProgram = "clawdinator";
    license = lib.licenses.mit;
  };
}
