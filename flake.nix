{
  description = "clawdinators: a NixOS flake to a self-bootstrapping fleet of EC2 hosts";

  # The gateway's flake brings nixpkgs; flake.lock pins both (and what
  # nix-openclaw brings), and every build and switch uses the lock as it is
  # (--no-update-lock-file). Updating the pins: README.
  inputs = {
    nix-openclaw.url = "github:openclaw/nix-openclaw";
    nixpkgs.follows = "nix-openclaw/nixpkgs";
  };

  outputs = { self, nixpkgs, nix-openclaw }:
    let
      inherit (nixpkgs) lib;
      fleet = import ./nix/lib;
      hostSystem = "x86_64-linux";
      systems = [ "x86_64-linux" "aarch64-linux" ];
      pkgsFor = system: import nixpkgs { inherit system; overlays = [ self.overlays.default ]; };
      forAllSystems = f: lib.genAttrs systems (system: f (pkgsFor system));

      # What every host gets, the image included: EC2 support, the gateway
      # module, ours, and the fleet's shared settings.
      common = [
        ({ modulesPath, ... }: {
          imports = [ "${modulesPath}/virtualisation/amazon-image.nix" ];
          nixpkgs.overlays = [ self.overlays.default ];
          system.configurationRevision = self.rev or self.dirtyRev or null;
          services.clawdinator.buildInfo = fleet.buildInfo.fromLock {
            lockFile = ./flake.lock;
            revision = self.rev or self.dirtyRev or "unknown";
          };
        })
        nix-openclaw.nixosModules.openclaw-gateway
        self.nixosModules.clawdinator
        ./nix/modules/fleet.nix
      ];
      mkHost = modules: lib.nixosSystem { system = hostSystem; modules = common ++ modules; };

      # One host per instance of the registry (nix/hosts/<name>.nix merged when present).
      hosts = fleet.hosts.fromRegistry { registryFile = ./nix/instances.json; hostsDir = ./nix/hosts; };

      # Checks over the whole fleet's rendered configurations, carried by
      # every host as assertions, so that building any host refuses the
      # fleet: at most one host polls each Telegram bot token.
      telegram = import ./nix/gateway/telegram.nix;
      fleetChecks = {
        assertions = map (message: { assertion = false; inherit message; })
          (telegram.problems (lib.mapAttrs (name: _: telegram.fromConfig self.nixosConfigurations.${name}.config) hosts));
      };
      image = "clawdinator-image";
    in
    {
      lib = fleet;

      overlays.default = lib.composeExtensions nix-openclaw.overlays.default (final: _prev: {
        clawdinator = final.callPackage ./nix/package.nix { };
        pi-coding-agent = final.callPackage ./nix/packages/pi-coding-agent.nix { };
      });

      nixosModules.clawdinator = import ./nix/modules/clawdinator;
      nixosModules.default = self.nixosModules.clawdinator;

      nixosConfigurations =
        if hosts ? ${image} then throw "nix/instances.json: `${image}` is the image's configuration; name the instance otherwise"
        else lib.mapAttrs (_name: host: mkHost ([ host.settings fleetChecks ] ++ host.extraModules)) hosts
          // { ${image} = mkHost [ ./nix/modules/image.nix ]; };

      packages = forAllSystems (pkgs: {
        inherit (pkgs) clawdinator pi-coding-agent;
        default = pkgs.clawdinator;
      } // lib.optionalAttrs (pkgs.stdenv.hostPlatform.system == hostSystem) {
        # The raw image `cargo xtask image-build` builds.
        image = self.nixosConfigurations.${image}.config.system.build.images.amazon;
      });

      # `nix flake check`: every host's system evaluates and builds, and the crate builds.
      checks.${hostSystem} =
        lib.mapAttrs' (name: host: lib.nameValuePair "host-${name}" host.config.system.build.toplevel) self.nixosConfigurations
        // { clawdinator = self.packages.${hostSystem}.clawdinator; };

      # `nix fmt`: nixpkgs-fmt, the formatter `cargo xtask test` checks every .nix
      # file with (1.3.0, its last release: the same in nixpkgs and on crates.io,
      # so the flake's formatter and the check cannot disagree).
      formatter = forAllSystems (pkgs: pkgs.nixpkgs-fmt);

      # `nix develop`: everything the README's two commands and `cargo xtask test` use,
      # and the `openclaw` CLI the hosts run (the same pinned package), for operators.
      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = with pkgs; [
            openclaw-gateway
            cargo
            rustc
            clippy
            rustfmt
            cmake
            perl
            opentofu
            awscli2
            age
            zstd
            git
            python3
            nix
            shellcheck
            nixpkgs-fmt
            deadnix
            actionlint
            zizmor
            checkov
            check-jsonschema
          ];
          RUST_SRC_PATH = "${pkgs.rustPlatform.rustLibSrc}";
        };
      });
    };
}
