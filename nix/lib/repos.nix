# clawdinator/repos.tsv, read with builtins only: `name<TAB>url[<TAB>branch]`
# per line, blank lines and `#` comments skipped; the same rules as
# `cargo xtask seeds prepare`, every problem reported at once.
let
  lines = text: builtins.filter builtins.isString (builtins.split "\n" text);
  stripCR = line: let m = builtins.match "(.*)\r" line; in if m == null then line else builtins.head m;
  fieldsOf = line: builtins.filter builtins.isString (builtins.split "\t" line);
  isSkipped = line: builtins.match "[[:space:]]*(#.*)?" line != null;
  isClean = f: f != "" && builtins.match "[[:space:]].*|.*[[:space:]]" f == null;
  nameError = name:
    if builtins.match "[A-Za-z0-9._-]+" name == null || builtins.match "[.].*" name != null || name == "SEEDS.json"
    then "repository name \"${name}\" must be letters, digits, . _ - (not starting with .)"
    else null;

  # One line: { repo } or { error }.
  parseLine = file: number: raw:
    let
      line = stripCR raw;
      fields = fieldsOf line;
      count = builtins.length fields;
      at = msg: { error = "${file}:${toString number}: ${msg}"; };
    in
    if count < 2 || count > 3 || !(builtins.all isClean fields) then at "expected `name<TAB>url[<TAB>branch]`, found \"${line}\""
    else
      let name = builtins.elemAt fields 0; in
      if nameError name != null then at (nameError name)
      else { repo = { inherit name; url = builtins.elemAt fields 1; branch = if count == 3 then builtins.elemAt fields 2 else null; line = number; }; };

  parse = file: text:
    let
      numbered = builtins.genList (i: { number = i + 1; raw = builtins.elemAt (lines text) i; }) (builtins.length (lines text));
      parsed = map (l: parseLine file l.number l.raw) (builtins.filter (l: !(isSkipped l.raw)) numbered);
      repos = map (p: p.repo) (builtins.filter (p: p ? repo) parsed);
      names = map (r: r.name) repos;
      duplicates = builtins.filter (r: builtins.length (builtins.filter (n: n == r.name) names) > 1) repos;
      errors = map (p: p.error) (builtins.filter (p: p ? error) parsed)
        ++ map (r: "${file}:${toString r.line}: duplicate name \"${r.name}\"") duplicates;
    in
    if errors == [ ] then map (r: { inherit (r) name url branch; }) repos
    else throw (builtins.concatStringsSep "\n" errors);
in
{
  inherit parse;
  load = file: parse (toString file) (builtins.readFile file);
}
