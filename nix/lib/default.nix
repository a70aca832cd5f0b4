# The fleet's pure logic, builtins only (evaluates without nixpkgs):
# registry -> hosts, repos.tsv, the secrets list.
{
  registry = import ./registry.nix;
  hosts = import ./hosts.nix;
  repos = import ./repos.nix;
  secrets = import ./secrets.nix;
}
