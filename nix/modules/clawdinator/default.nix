# The clawdinator host: bootstrap from S3, secrets into /run/agenix,
# repository seeds, shared memory on EFS over TLS, GitHub App tokens, the
# gateway (through nix-openclaw's services.openclaw-gateway), and switches
# to systems CI built and signed into the fleet's binary cache.
#
# Every job is a command of this project's binary (`clawdinator`, the
# hostPackage); no unit runs a script. Per-instance facts (name, bucket,
# prefix, region, EFS id) are options when a configuration knows them and
# otherwise come at run time from /etc/clawdinator/, which the instance's
# user data writes: one image serves every instance and every account.
#
# One concern per file, helpers in lib.nix.
{
  imports = [
    ./base.nix
    ./bootstrap.nix
    ./memory.nix
    ./github.nix
    ./gateway.nix
    ./updates.nix
    ./instance-role.nix
    ./cache.nix
    ./public-tree.nix
    ./pi.nix
  ];
}
