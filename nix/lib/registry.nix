# The fleet registry (nix/instances.json), read with builtins only: the same
# checks as `cargo xtask fleet check`, so the flake, OpenTofu and the xtask
# agree on which hosts exist. Every problem is reported at once.
let
  fields = [ "host" "instanceType" "bootstrapPrefix" "discordTokenSecret" ];
  tokenPrefix = "clawdinator-discord-token-";

  matches = regex: s: builtins.match regex s != null;
  hasInfix = infix: s: builtins.length (builtins.split (escapeRegex infix) s) > 1;
  escapeRegex = s: builtins.replaceStrings [ "." "/" ] [ "[.]" "[/]" ] s;
  isString = v: builtins.typeOf v == "string";

  # Why a value of `field` is unusable, or null. Mirrors clawdinator/src/registry/instances.rs (check_entry).
  hostError = h:
    if builtins.stringLength h < 1 || builtins.stringLength h > 63 then "must be 1 to 63 characters long"
    else if !(matches "[a-z0-9-]+" h) then "may only contain a-z, 0-9 and -"
    else if matches "-.*|.*-" h then "may not start or end with -"
    else null;
  typeError = t: if matches "[a-z][a-z0-9-]*[.][a-z0-9]+" t then null else "is not an EC2 instance type of the form family.size";
  prefixError = p:
    if matches "/.*" p then "may not start with /"
    else if matches ".*[[:space:]].*" p then "may not contain whitespace"
    else if hasInfix ".." p then "may not contain .."
    else if hasInfix "//" p then "may not contain //"
    else if !(matches "bootstrap/.+" p) then "must be a path under bootstrap/"
    else if matches ".*/" p then "may not end with /"
    else null;
  tokenError = s:
    if !(matches "${tokenPrefix}.*" s) then "does not match ${tokenPrefix}*"
    else if matches ".*[.]age" s then "must be the name without .age"
    else if !(matches "${tokenPrefix}[A-Za-z0-9_-]+" s) then "needs a suffix of letters, digits, - or _ after ${tokenPrefix}"
    else null;

  fieldErrors = {
    host = hostError;
    instanceType = typeError;
    bootstrapPrefix = prefixError;
    discordTokenSecret = tokenError;
  };

  # Problems of one entry on its own.
  entryProblems = file: name: entry:
    let
      at = field: msg: "${file}: instance `${name}`, field `${field}`: ${msg}";
      unknown = builtins.filter (k: !(builtins.elem k fields)) (builtins.attrNames entry);
      check = field:
        if !(entry ? ${field}) then [ (at field "missing field") ]
        else if !(isString entry.${field}) then [ (at field "must be a string") ]
        else
          let why = fieldErrors.${field} entry.${field}; in
          (if why == null then [ ] else [ (at field "\"${entry.${field}}\" ${why}") ])
          ++ (if field == "host" && entry.host != name then [ (at field "is \"${entry.host}\" but the key is \"${name}\"") ] else [ ]);
    in
    if builtins.typeOf entry != "set" then [ "${file}: instance `${name}`: the entry is not a JSON object" ]
    else map (k: at k "unknown field") unknown ++ builtins.concatMap check fields;

  # Problems between entries: shared prefixes or tokens, a prefix inside
  # another's (its IAM scope <prefix>/* would cover the other's bundle).
  sharedProblems = file: entries:
    let
      names = builtins.attrNames entries;
      valid = builtins.filter (n: builtins.typeOf entries.${n} == "set") names;
      valueOf = field: n: entries.${n}.${field} or null;
      pairs = builtins.concatMap (a: map (b: { inherit a b; }) (builtins.filter (b: b != a) valid)) valid;
      shared = field: what: map (p: "${file}: instance `${p.b}`, field `${field}`: \"${valueOf field p.b}\" is also the ${what} of instance `${p.a}`")
        (builtins.filter (p: p.a < p.b && isString (valueOf field p.a) && valueOf field p.a == valueOf field p.b) pairs);
      nested = map (p: "${file}: instance `${p.b}`, field `bootstrapPrefix`: \"${valueOf "bootstrapPrefix" p.b}\" lies inside \"${valueOf "bootstrapPrefix" p.a}\", the prefix of instance `${p.a}`: its IAM scope would cover this instance's bundle")
        (builtins.filter
          (p: isString (valueOf "bootstrapPrefix" p.a) && isString (valueOf "bootstrapPrefix" p.b)
            && matches "${escapeRegex (valueOf "bootstrapPrefix" p.a)}/.*" (valueOf "bootstrapPrefix" p.b))
          pairs);
    in
    shared "bootstrapPrefix" "prefix" ++ shared "discordTokenSecret" "token" ++ nested;

  problems = file: entries:
    if builtins.typeOf entries != "set" then [ "${file}: not a JSON object keyed by instance name" ]
    else if entries == { } then [ "${file}: the registry is empty" ]
    else builtins.concatLists (builtins.attrValues (builtins.mapAttrs (entryProblems file) entries)) ++ sharedProblems file entries;
in
rec {
  inherit problems;

  # The registry as an attribute set name -> entry; evaluation fails with
  # every problem found, naming the file, the instance and the field.
  load = file:
    let
      entries = builtins.fromJSON (builtins.readFile file);
      found = problems (toString file) entries;
    in
    if found == [ ] then entries
    else throw "${toString (builtins.length found)} problem(s) in the fleet registry:\n  - ${builtins.concatStringsSep "\n  - " found}";

  # One instance's entry; a missing one names the registry and the instance.
  hostFor = file: name:
    let hosts = load file; in
      hosts.${name} or (throw "instance `${name}` is not in ${toString file} (known: ${builtins.concatStringsSep ", " (builtins.attrNames hosts)})");
}
