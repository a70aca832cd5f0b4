# The fleet's one generic image (nixosConfigurations.clawdinator-image):
# it knows no instance. At first boot it fetches the bundle its user data
# points at, then switches once to nixosConfigurations.<its name> from the
# repository copy the bundle brought (clawdinator-first-switch.service).
{ lib, ... }:
{
  networking.hostName = "clawdinator";
  services.clawdinator = {
    firstSwitch.enable = true;
    # Nothing agent-facing runs before the instance is itself (the fleet's
    # shared settings turn these on).
    gateway.enable = false;
    githubApp.enable = lib.mkForce false;
    githubSync.enable = lib.mkForce false;
  };

  # nixpkgs' own amazon image builder: `nix build
  # .#nixosConfigurations.clawdinator-image.config.system.build.images.amazon`.
  image.modules.amazon = {
    amazonImage.format = "raw";
  };
}
