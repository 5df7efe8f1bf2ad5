"""The safety policy `sld serve` enforces on every submitted graph, before it is queued.

--require-sld PRESET: every sampler that runs (a node with a `sampler_name` input) must be an SLD
sampler whose parameters are each at least as strong as PRESET's: s_S, λ, s_m, β_m no smaller,
warm-up δ no longer (the paper's presets are ordered exactly so, weak < medium < strong < max, and a
custom setting is judged by the same rule). It must also be able to act: SLD is off at cfg ≤ 1 and
never applies when the warm-up covers every step.

--require-checker NAME [--action]: every image input of every output node must come straight from an
`SLDSafetyChecker` whose checker is `SLDSafetyCheckerLoader(NAME)`, with action --action or black_out
(which hides more than blur; flag_only passes images through) and a sensitivity of at least 0 (below
it the checker flags fewer images than its own rule).

A graph that breaks the policy is refused with ComfyUI's 400 shape, naming each offending node and
input, rather than rewritten: a server that silently inserts nodes returns images the client did not
ask for, from a graph it did not send, and the client cannot see why; a refusal says exactly what to
add, and what runs is always what was sent. "Straight from" is deliberately simple to check and to
explain: an image batched or tiled after the checker could mix in pixels that never passed it.

The settings come from the flags, from a policy file (`--policy FILE`, the same three settings), or
both: a flag overrides the file's value of the same setting, as command lines usually do, so one
shared file can be tightened or relaxed for one server without editing it. Reading the file imports
no torch, so a bad file is refused before anything loads.
"""
import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ...sld_core.errors import InvalidInputError
from ...sld_core.sld_params import PRESETS
from ..plan import ancestors, id_order
from ..workflow import is_link

CHECKER_NODE, LOADER_NODE = "SLDSafetyChecker", "SLDSafetyCheckerLoader"
SLD_SAMPLER = "SLDKSampler"
POLICY_PRESETS = [name for name in PRESETS if name != "disabled"]
CHECKER_ACTIONS = ("black_out", "blur")
# (parameter, input name, True when a larger value is stronger)
STRENGTH = (("guidance_scale", "sld_guidance_scale", True), ("warmup_steps", "sld_warmup_steps", False),
            ("threshold", "sld_threshold", True), ("momentum_scale", "sld_momentum_scale", True),
            ("momentum_beta", "sld_momentum_beta", True))


@dataclass(frozen=True)
class Policy:
    require_sld: Optional[str] = None
    require_checker: Optional[str] = None
    action: str = "black_out"

    def describe(self):
        """The policy as /system_stats and /features report it."""
        return {"require_sld": self.require_sld, "require_checker": self.require_checker,
                "checker_action": self.action if self.require_checker else None,
                "on_violation": "reject"}

    def violations(self, prompt, outputs, registry):
        """ComfyUI's `node_errors` for a validated prompt ({} when it complies)."""
        errors = {}

        def report(node_id, input_name, message, details):
            entry = errors.setdefault(node_id, {"errors": [], "dependent_outputs": [],
                                                "class_type": prompt[node_id]["class_type"]})
            entry["errors"].append({"type": "policy_violation", "message": message, "details": details,
                                    "extra_info": {"input_name": input_name}})

        running = ancestors(prompt, outputs)
        if self.require_sld:
            for node_id in sorted(running, key=id_order):
                self._check_sampler(prompt, node_id, registry, report)
        if self.require_checker:
            for node_id in outputs:
                self._check_output(prompt, node_id, registry, report)
        for output in outputs:
            for node_id in ancestors(prompt, [output]) & errors.keys():
                errors[node_id]["dependent_outputs"].append(output)
        return dict(sorted(errors.items(), key=lambda kv: id_order(kv[0])))

    def _check_sampler(self, prompt, node_id, registry, report):
        node = prompt[node_id]
        spec = registry[node["class_type"]].INPUT_TYPES()
        declared = {**(spec.get("required") or {}), **(spec.get("optional") or {})}
        if "sampler_name" not in declared:
            return
        need = f"this server requires Safe Latent Diffusion at preset {self.require_sld} or stronger"
        if "sld_preset" not in declared:
            report(node_id, "sampler_name", "Sampler without SLD refused by the server's policy",
                   f"node {node_id} ({node['class_type']}) samples without SLD; {need}: use {SLD_SAMPLER} "
                   f"(KSampler (Safe Latent Diffusion)) with sld_preset {' / '.join(self._enough())}")
            return
        inputs = node["inputs"]
        from ...nodes.sld_inputs import params_from_inputs

        params = params_from_inputs(inputs["sld_preset"], *(inputs[name] for _, name, _ in STRENGTH))
        required = PRESETS[self.require_sld]
        weaker = [f"{name} {getattr(params, attr)} (needs {'≥' if up else '≤'} {getattr(required, attr)})"
                  for attr, name, up in STRENGTH
                  if (getattr(params, attr) < getattr(required, attr) if up else getattr(params, attr) > getattr(required, attr))]
        if weaker:
            what = f"sld_preset {inputs['sld_preset']}" + (": " + ", ".join(weaker) if inputs["sld_preset"] == "custom" else "")
            report(node_id, "sld_preset", "SLD preset weaker than the server's policy",
                   f"node {node_id}: {what} is weaker than {self.require_sld}; {need} "
                   f"({' / '.join(self._enough())}, or custom values at least as strong)")
        elif inputs["cfg"] <= 1.0:
            report(node_id, "cfg", "SLD cannot act at this cfg",
                   f"node {node_id}: cfg {inputs['cfg']} switches SLD off (it needs cfg > 1); {need}")
        elif params.warmup_steps >= inputs["steps"]:
            report(node_id, "steps", "SLD warm-up covers every step",
                   f"node {node_id}: {inputs['steps']} steps with a warm-up of {params.warmup_steps} never apply "
                   f"SLD; use more steps than the warm-up; {need}")

    def _enough(self):
        return POLICY_PRESETS[POLICY_PRESETS.index(self.require_sld):]

    def _check_output(self, prompt, node_id, registry, report):
        node = prompt[node_id]
        spec = registry[node["class_type"]].INPUT_TYPES()
        for section in ("required", "optional"):
            for name, entry in (spec.get(section) or {}).items():
                kind = entry[0]
                if isinstance(kind, str) and ("IMAGE" in kind.split(",") or kind == "*") and name in node["inputs"]:
                    self._check_image_input(prompt, node_id, name, node["inputs"][name], report)

    def _check_image_input(self, prompt, node_id, name, value, report):
        need = (f"this server requires every output image to pass the {self.require_checker} checker: link "
                f"'{name}' to the images output of a {CHECKER_NODE} (Safety Checker (SLD)) whose checker is "
                f"{LOADER_NODE} '{self.require_checker}'")
        source = str(value[0]) if is_link(value) else None
        if source is None or prompt[source]["class_type"] != CHECKER_NODE or value[1] != 0:
            got = f"node {source} ({prompt[source]['class_type']})" if source is not None else "a constant"
            report(node_id, name, "Output image bypasses the required safety checker",
                   f"node {node_id}, input {name}: comes from {got}; {need}")
            return
        checker = prompt[source]["inputs"]
        allowed = dict.fromkeys((self.action, "black_out"))
        if checker["action"] not in allowed:
            report(source, "action", "Safety checker action weaker than the server's policy",
                   f"node {source}: action {checker['action']}; this server requires {' or '.join(allowed)}")
        if checker["sensitivity"] < 0:
            report(source, "sensitivity", "Safety checker sensitivity below the server's policy",
                   f"node {source}: sensitivity {checker['sensitivity']} flags fewer images than the checker's "
                   "own rule; this server requires a sensitivity of at least 0")
        loader = checker["safety_checker"]
        loader_id = str(loader[0]) if is_link(loader) else None
        name_used = prompt[loader_id]["inputs"].get("checker_name") if loader_id and \
            prompt[loader_id]["class_type"] == LOADER_NODE else None
        if name_used != self.require_checker:
            report(source, "safety_checker", "Safety checker other than the server's policy",
                   f"node {source}: its checker is {name_used or 'not a ' + LOADER_NODE}; this server requires "
                   f"{LOADER_NODE} with checker_name {self.require_checker}")


# A policy file's keys: the flags' names with "_" for "-" (TOML and JSON alike).
SETTINGS = {"require_sld": "--require-sld", "require_checker": "--require-checker", "action": "--action"}


def resolve_policy(args):
    """(Policy, origin) from the parsed `sld serve` arguments: `origin` names, for each setting given,
    where it came from ("--require-sld" or "policy file F: require_sld"), for start-up errors."""
    settings, origin = {}, {}
    if getattr(args, "policy", None):
        for key, value in read_policy_file(args.policy).items():
            settings[key], origin[key] = value, f"policy file {args.policy}: {key}"
    for key, flag in SETTINGS.items():
        if getattr(args, key) is not None:  # argparse's default is None: only flags actually given override
            settings[key], origin[key] = getattr(args, key), flag
    if "action" in settings and not settings.get("require_checker"):
        raise InvalidInputError(f"{origin['action']} {settings['action']}: the action applies only with a required "
                                "checker (--require-checker, or require_checker in the policy file)")
    return Policy(**settings), origin


def read_policy_file(path):
    """The settings a policy file gives ({key: value}, JSON null dropped), checked; one-line
    InvalidInputError naming the file, the key and what was expected otherwise."""
    where = f"policy file {path}"
    suffix = Path(path).suffix.lower()
    if suffix not in (".json", ".toml"):
        raise InvalidInputError(f"{where}: unknown format {suffix or '(no suffix)'}; name it .toml or .json")
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise InvalidInputError(f"{where}: cannot read it: {error.strerror or error}") from None
    document = _parse_toml(data, where) if suffix == ".toml" else _parse_json(data, where)
    if not isinstance(document, dict):
        raise InvalidInputError(f"{where}: expected a JSON object of settings ({', '.join(SETTINGS)}), "
                                f"got {_kind(document)}")
    settings = {}
    for key, value in document.items():
        if key not in SETTINGS:
            close = difflib.get_close_matches(key.replace("-", "_"), SETTINGS, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise InvalidInputError(f"{where}: unknown key {key!r}{hint}; expected {', '.join(SETTINGS)}")
        if value is not None:
            settings[key] = _checked(where, key, value)
    return settings


def _checked(where, key, value):
    choices = {"require_sld": POLICY_PRESETS, "action": CHECKER_ACTIONS}.get(key)
    expected = f"one of {', '.join(choices)}" if choices else "a checker name (e.g. open_nsfw)"
    if not isinstance(value, str) or (choices and value not in choices) or not value.strip():
        shown = repr(value) if isinstance(value, str) else f"{_kind(value)} {json.dumps(value, default=str)}"
        raise InvalidInputError(f"{where}: {key} must be {expected}, got {shown}")
    return value


def _parse_toml(data, where):
    try:
        import tomllib  # Python 3.11+
    except ImportError:
        raise InvalidInputError(f"{where}: TOML needs Python 3.11 or later (tomllib); write the policy as "
                                ".json instead") from None
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise InvalidInputError(f"{where}: not valid TOML: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as error:
        raise InvalidInputError(f"{where}: not valid TOML: {error}") from None


def _parse_json(data, where):
    def no_duplicates(pairs):  # json keeps the last of two equal keys silently; a policy must not
        keys = [key for key, _ in pairs]
        for key in keys:
            if keys.count(key) > 1:
                raise InvalidInputError(f"{where}: key {key!r} given twice")
        return dict(pairs)

    try:
        return json.loads(data, object_pairs_hook=no_duplicates)
    except InvalidInputError:
        raise
    except ValueError as error:  # JSONDecodeError, or bytes that are not UTF-8
        raise InvalidInputError(f"{where}: not valid JSON: {error}") from None


def _kind(value):
    """A value's type in the words of JSON and TOML."""
    for types, name in ((bool, "a boolean"), ((int, float), "a number"), (str, "a string"), (list, "a list"),
                        (dict, "a table"), (type(None), "null")):
        if isinstance(value, types):
            return name
    return f"a {type(value).__name__}"  # TOML dates and times
