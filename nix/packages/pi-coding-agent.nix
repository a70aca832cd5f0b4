# The pi coding agent (the agents' `pi`), from npm. The published tarball
# carries no lock file, so its dependency tree is pinned by the lock beside
# this file (the original fleet's lock data; it satisfies every range of
# the tarball's package.json). A new version: change version and hash,
# replace the lock (npm install --package-lock-only in the unpacked
# tarball), and take npmDepsHash from the mismatch nix reports.
{ buildNpmPackage, fetchurl }:

buildNpmPackage rec {
  pname = "pi-coding-agent";
  version = "0.52.6";

  src = fetchurl {
    url = "https://registry.npmjs.org/@mariozechner/pi-coding-agent/-/pi-coding-agent-${version}.tgz";
    hash = "sha256-CXKWlAxjXSwSJI+DVzgLu1A04w+QQzE6yBXBO/j/za4=";
  };

  postPatch = ''
    cp ${./pi-coding-agent/package-lock.json} package-lock.json
  '';

  npmDepsHash = "sha256-zD87h87FILBSKCygRLV0jZxLjgU5YnM765FISjFDpas=";
  dontNpmBuild = true;

  meta.mainProgram = "pi";
}
