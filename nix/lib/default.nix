# The fleet's pure logic, builtins only (evaluates without nixpkgs):
# registry -> hosts, repos.tsv, the secrets list, build info from flake.lock.
{
  registry = import ./registry.nix;
  hosts = import ./hosts.nix;
  repos = import ./repos.nix;
  secrets = import ./secrets.nix;
  buildInfo = import ./build-info.nix;
}
