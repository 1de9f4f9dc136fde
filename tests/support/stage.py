#!/usr/bin/env python3
"""The test stage: moto's WSGI app wrapped in a middleware that behaves like AWS.

moto never races, keeps a state pending, throttles, pages small or refuses;
AWS does all of those. Each test starts one stage and configures it over
plain HTTP (unsigned, JSON):

    POST /_stage/config      replace the whole configuration (JSON body); also
                             resets the rule counters and the random generator
    GET  /_stage/log         the request log, a JSON array in arrival order
    POST /_stage/log/clear   empty the log
    GET  /_stage/health      200 "ok"

Everything else goes on to moto (including /moto-api/). Usage:

    .venv/bin/python tests/support/stage.py [--host 127.0.0.1] [--port 0]

prints one line `STAGE READY http://HOST:PORT` once it serves and exits when
its standard input closes.

Configuration (every key optional, a missing one is off; unknown keys are
refused with 400 so a typo cannot pass silently):

    seed          the random generator's seed (default 0); a test device
    latency_ms    [lo, hi]: each AWS request waits uniform(lo, hi) ms; a test
                  device
    throttle      [{service, action, account, region, percent, first}]: the
                  first N matching requests and/or that percentage of them get
                  the service's throttling error (EC2 503 RequestLimitExceeded,
                  STS 400 Throttling, JSON services 400 ThrottlingException)
    deny          [{service, action, account, region}]: AWS's refusal (EC2 403
                  UnauthorizedOperation, also for DryRun; STS 403 AccessDenied;
                  JSON services 400 AccessDeniedException)
    pending       {image_seconds, start_seconds, stop_seconds}: new AMIs (from
                  CreateImage or CopyImage) read `pending`, started instances
                  `pending`, stopped ones `stopping` for that long, in moto's
                  model, so that filters and every describe agree
    visibility    {image_seconds, task_seconds}: eventual consistency. For
                  image_seconds after CreateImage/CopyImage the new AMI is in
                  no DescribeImages answer, and naming it (DescribeImages
                  ImageIds, DeregisterImage, EnableImageDeprecation, CopyImage,
                  CreateTags/DeleteTags, CreateReplaceRootVolumeTask) answers
                  400 InvalidAMIID.NotFound; its name is taken all the same
                  (InvalidAMIName.Duplicate). For task_seconds after
                  CreateReplaceRootVolumeTask the task is in no
                  DescribeReplaceRootVolumeTasks answer (a repeated create
                  with its ClientToken still returns it). Separate from
                  `pending`; the two windows may overlap
    failed_images [instance id]: an AMI made from one ends `failed`
    snapshot_busy {instances: [id], times: N}: CreateImage of those instances
                  is refused N times each (default 1; -1: always) with 400
                  ConcurrentSnapshotLimitExceeded, then succeeds; logged with
                  fault "snapshot_busy"
    root_tasks    {seconds, failed: [instance id]}: replace-root-volume tasks
                  (CreateReplaceRootVolumeTask, which moto lacks) read
                  `pending` for the first third of `seconds`, `in-progress`
                  until then, then `succeeded`, or `failed` for the instances
                  listed (default 0 s: done at once)
    page_size     K: DescribeInstances/Images/Snapshots/InstanceStatus and SSM
                  DescribeInstanceInformation answer at most K items a page
    ssm           {pings: {id: PingStatus}, absent: [id]}: overrides of the
                  stage's own DescribeInstanceInformation (running = Online,
                  pending/stopping/stopped = ConnectionLost, terminated absent)
    sts           {max_session_seconds: {account: secs}, disabled_regions:
                  [region], external_ids: {account: id}}, for sts:AssumeRole
                  into a role of that account: DurationSeconds (default 3600)
                  above secs (3600-43200) answers 400 ValidationError; a
                  request signed for a listed region (never us-east-1) answers
                  403 RegionDisabledException; a missing or other ExternalId
                  answers 403 AccessDenied. Faults "sts_max_session",
                  "sts_region_disabled", "sts_external_id"
    status_checks {instance id: {system, instance}}: what DescribeInstanceStatus
                  gives as that running instance's SystemStatus and
                  InstanceStatus summaries (ok, impaired, insufficient-data,
                  not-applicable, initializing) in place of moto's `ok`
    auto_scaling  {instance id: group name}: the instance carries the tag
                  aws:autoscaling:groupName=<group> in moto's model, applied
                  when configured (an unknown instance is refused with 400);
                  a later configuration without it takes the tag off
    aged          {AMI id: days}: the AMI's CreationDate and its snapshot's
                  StartTime are that many days earlier in moto's model (from
                  when the AMI was made), as if it had been made then; a test
                  device (a clock), for retention
    hooks         [{when: before|after, action, service, account, region,
                  do: start|stop|terminate, instances: [id], times}]: another actor
                  starting or stopping instances around a matching request
                  (not around DryRun requests), `times` times (default 1); a
                  test device

For sts:AssumeRole, a rule's `account` is the account of the role asked for.
Rules match on the fields they give; an absent field matches anything. The
log keeps every parameter but secrets (signatures, tokens, passwords); it
keeps ExternalId, which AWS does not treat as a secret.

Fixed always, as AWS behaves and moto does not: CreateImage with a snapshot
TagSpecification, duplicate AMI names (InvalidAMIName.Duplicate), source
fields (SourceInstanceId, SourceImageId, SourceImageRegion on CreateImage
AMIs; SourceImageId, SourceImageRegion on copies) and CopyImageTags (not the
aws: tags) on copies, disabled AMIs hidden unless IncludeDisabled,
EnableImageDeprecation (moto lacks it), DescribeSnapshots OwnerIds,
MaxResults checks and paging by MaxResults, StartInstances/StopInstances
answers and IncorrectInstanceState (one instance that cannot be stopped or
started fails the whole call), tag keys beginning `aws:` refused in
CreateTags/DeleteTags/TagSpecifications, EC2 request ids;
CreateReplaceRootVolumeTask (from an AMI, on a running instance, idempotent
by ClientToken, DryRun) and DescribeReplaceRootVolumeTasks (instance-id
filter, MaxResults 1-50, paging), which moto does not have.

Each behaviour cites the AWS page it follows in a comment beside its code;
AWS_PAGES below is the table behaviour -> AWS page -> configuration key
(`stage.py --aws-pages` prints it as markdown). seed, latency_ms, aged and hooks
are test devices and follow no AWS page.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import logging
import os
import random
import re
import sys
import threading
import time
import traceback
import urllib.parse
import uuid
import warnings
import xml.etree.ElementTree as ET
from http import HTTPStatus
from io import BytesIO
from typing import Any, Callable

warnings.filterwarnings("ignore")

from moto.core import DEFAULT_ACCOUNT_ID  # noqa: E402
from moto.core.utils import utcnow as moto_utcnow  # noqa: E402
from moto.core.responses import ActionResult  # noqa: E402
from moto.ec2.exceptions import EC2ClientError, InvalidAMIIdError  # noqa: E402
from moto.ec2.models import ec2_backends  # noqa: E402
from moto.ec2.models.amis import AmiBackend  # noqa: E402
from moto.ec2.models.instances import Instance  # noqa: E402
from moto.ec2.responses.amis import AmisResponse  # noqa: E402
from moto.ec2.responses.elastic_block_store import ElasticBlockStore  # noqa: E402
from moto.ec2.responses.instances import InstanceResponse  # noqa: E402
from moto.iam.models import get_account_id_from  # noqa: E402
from moto.moto_server.werkzeug_app import (  # noqa: E402
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server  # noqa: E402

STS_NS = "https://sts.amazonaws.com/doc/2011-06-15/"

CREDENTIAL_RE = re.compile(r"Credential=([^/,\s]+)/\d{8}/([^/]+)/([^/]+)/aws4_request")
ROLE_ACCOUNT_RE = re.compile(r"^arn:aws[a-z-]*:iam::(\d{12}):role/")
SECRET_PARAMS = re.compile(r"signature|securitytoken|security-token|secret|password|credential", re.I)

# EC2 describe calls the stage pages itself: list element, id parameter
# prefix, MaxResults range. Paging:
# https://docs.aws.amazon.com/AWSEC2/latest/APIReference/Query-Requests.html#api-pagination
# "You cannot specify this parameter and the instance IDs parameter in the
# same request." (API_DescribeInstances.html, API_DescribeInstanceStatus.html).
# The ranges are not in the API reference; they are EC2's own answers
# ("Expecting a value between 5 and 1000").
PAGED_EC2 = {
    "DescribeInstances": ("reservationSet", "InstanceId", 5, 1000),
    "DescribeImages": ("imagesSet", "ImageId", 1, 1000),
    "DescribeSnapshots": ("snapshotSet", "SnapshotId", 5, 1000),
    "DescribeInstanceStatus": ("instanceStatusSet", "InstanceId", 5, 1000),
}
SSM_DEFAULT_PAGE = 10
TOKEN_PREFIX = "stage-"

# Never secret, so always logged: "AWS does not treat the external ID as a
# secret." https://docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_create_for-user_externalid.html
KEPT_PARAMS = {"ExternalId"}

ASG_TAG = "aws:autoscaling:groupName"
# InstanceStatusSummary Status: "Valid Values: ok | impaired | insufficient-data
# | not-applicable | initializing"
# https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_InstanceStatusSummary.html
STATUS_SUMMARIES = {"ok", "impaired", "insufficient-data", "not-applicable", "initializing"}
RESERVED_TAG_PREFIX = "aws:"
# The role MaxSessionDuration setting "can have a value from 1 hour to 12 hours."
# https://docs.aws.amazon.com/IAM/latest/APIReference/API_UpdateRole.html
MAX_SESSION_RANGE = (3600, 43200)
# us-east-1 is active by default and cannot be deactivated (table of Regions).
# https://docs.aws.amazon.com/IAM/latest/UserGuide/id_credentials_temp_region-endpoints.html
STS_ALWAYS_ACTIVE = {"us-east-1"}

D = "https://docs.aws.amazon.com/"
EC2_ERRORS = D + "AWSEC2/latest/APIReference/errors-overview.html"
EC2_API = D + "AWSEC2/latest/APIReference/"
# behaviour, the AWS page it follows, the configuration key ("always": none).
AWS_PAGES: list[tuple[str, str, str]] = [
    ("EC2 throttling: 503 RequestLimitExceeded", D + "ec2/latest/devguide/ec2-api-throttling.html", "throttle"),
    ("STS throttling: 400 Throttling", D + "STS/latest/APIReference/CommonErrors.html", "throttle"),
    ("SSM (JSON) throttling: 400 ThrottlingException",
     D + "systems-manager/latest/APIReference/CommonErrors.html", "throttle"),
    ("EC2 deny: 403 UnauthorizedOperation, also for DryRun", EC2_ERRORS + " ; " + EC2_API + "API_StopInstances.html",
     "deny"),
    ("STS deny: 403 AccessDenied 'User: ... is not authorized to perform: sts:AssumeRole on resource'",
     D + "IAM/latest/UserGuide/troubleshoot_roles.html", "deny"),
    ("SSM (JSON) deny: 400 AccessDeniedException", D + "systems-manager/latest/APIReference/CommonErrors.html",
     "deny"),
    ("Organizations (JSON) deny: 400 AccessDeniedException",
     D + "organizations/latest/APIReference/API_ListAccounts.html", "deny"),
    ("new AMIs read pending", EC2_API + "API_Image.html", "pending.image_seconds"),
    ("started instances read pending, stopped ones stopping",
     D + "AWSEC2/latest/UserGuide/ec2-instance-lifecycle.html", "pending.start_seconds, pending.stop_seconds"),
    ("an AMI ends failed, with a StateReason", EC2_API + "API_Image.html", "failed_images"),
    ("a new AMI is absent / InvalidAMIID.NotFound for a while",
     D + "ec2/latest/devguide/eventual-consistency.html ; " + EC2_ERRORS, "visibility.image_seconds"),
    ("a new replace-root-volume task is absent for a while", D + "ec2/latest/devguide/eventual-consistency.html",
     "visibility.task_seconds"),
    ("CreateImage refused: 400 ConcurrentSnapshotLimitExceeded", EC2_ERRORS, "snapshot_busy"),
    ("replace-root-volume tasks: pending, in-progress, succeeded or failed",
     EC2_API + "API_ReplaceRootVolumeTask.html", "root_tasks"),
    ("pages of at most K items", EC2_API + "Query-Requests.html#api-pagination", "page_size"),
    ("MaxResults ranges; MaxResults with ids refused", EC2_API + "API_DescribeInstances.html ; "
     + EC2_API + "API_DescribeInstanceStatus.html ; " + EC2_API + "API_DescribeReplaceRootVolumeTasks.html",
     "always"),
    ("SSM DescribeInstanceInformation (moto lacks it): MaxResults 5-50, PingStatus, paging",
     D + "systems-manager/latest/APIReference/API_DescribeInstanceInformation.html", "ssm, page_size"),
    ("AssumeRole DurationSeconds above MaxSessionDuration: 400 ValidationError",
     D + "STS/latest/APIReference/API_AssumeRole.html", "sts.max_session_seconds"),
    ("AssumeRole in a Region where STS is not active: 403 RegionDisabledException",
     D + "STS/latest/APIReference/API_AssumeRole.html ; "
     + D + "IAM/latest/UserGuide/id_credentials_temp_enable-regions.html", "sts.disabled_regions"),
    ("AssumeRole without the role's external ID: 403 AccessDenied",
     D + "IAM/latest/UserGuide/id_roles_create_for-user_externalid.html", "sts.external_ids"),
    ("ExternalId kept in the request log", D + "IAM/latest/UserGuide/id_roles_create_for-user_externalid.html",
     "always"),
    ("status check summaries other than ok (not-applicable, impaired, ...)",
     EC2_API + "API_InstanceStatusSummary.html ; " + D + "AWSEC2/latest/UserGuide/monitoring-system-instance-status-check.html",
     "status_checks"),
    ("Auto Scaling group instances carry aws:autoscaling:groupName",
     D + "autoscaling/ec2/userguide/ec2-auto-scaling-tagging.html", "auto_scaling"),
    ("tag keys beginning aws: refused: 400 InvalidParameterValue",
     D + "AWSEC2/latest/UserGuide/Using_Tags.html#tag-restrictions ; " + EC2_API + "API_DeleteTags.html", "always"),
    ("duplicate AMI name: InvalidAMIName.Duplicate", EC2_ERRORS, "always"),
    ("CreateImage snapshot TagSpecification", EC2_API + "API_CreateImage.html", "always"),
    ("CreateImage AMIs: SourceInstanceId, SourceImageId, SourceImageRegion",
     EC2_API + "API_Image.html ; " + D + "AWSEC2/latest/UserGuide/ami-ancestry.html", "always"),
    ("copies: SourceImageId, SourceImageRegion, no SourceInstanceId", EC2_API + "API_Image.html", "always"),
    ("CopyImageTags copies user tags, not aws: tags; TagSpecifications on copies",
     EC2_API + "API_CopyImage.html", "always"),
    ("disabled AMIs hidden unless IncludeDisabled", EC2_API + "API_DescribeImages.html", "always"),
    ("EnableImageDeprecation (moto lacks it): DeprecationTime, seconds rounded",
     EC2_API + "API_EnableImageDeprecation.html", "always"),
    ("DescribeSnapshots OwnerIds (self)", EC2_API + "API_DescribeSnapshots.html", "always"),
    ("StartInstances/StopInstances answers: pending/stopping with the previous state",
     EC2_API + "API_StartInstances.html ; " + EC2_API + "API_StopInstances.html", "always"),
    ("one instance that cannot be stopped/started fails the call: IncorrectInstanceState", EC2_ERRORS, "always"),
    ("EC2 request ids: a UUID in the body and x-amzn-RequestId",
     EC2_ERRORS + "#api-error-response ; " + EC2_API + "Query-Requests.html", "always"),
    ("CreateReplaceRootVolumeTask (moto lacks it): running instance, ImageId, ClientToken, DryRun",
     EC2_API + "API_CreateReplaceRootVolumeTask.html ; " + D + "ec2/latest/devguide/ec2-api-idempotency.html",
     "always"),
    ("DescribeReplaceRootVolumeTasks (moto lacks it): instance-id filter, MaxResults 1-50",
     EC2_API + "API_DescribeReplaceRootVolumeTasks.html", "always"),
    ("random generator seed: a test device", "none", "seed"),
    ("latency: a test device", "none", "latency_ms"),
    ("another actor starting/stopping instances: a test device", "none", "hooks"),
    ("AMIs made days ago (CreationDate, snapshot StartTime moved back): a test device", "none", "aged"),
]


class ConfigError(ValueError):
    pass


def _keys(obj: Any, allowed: set[str], where: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ConfigError(f"{where}: expected an object")
    unknown = set(obj) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(allowed)})")
    return obj


MATCH_KEYS = {"service", "action", "account", "region"}


class Config:
    """One test's configuration. Every key is optional; a missing key is off."""

    def __init__(self, raw: dict[str, Any]):
        raw = _keys(
            raw,
            {
                "seed",
                "latency_ms",
                "throttle",
                "deny",
                "pending",
                "failed_images",
                "page_size",
                "ssm",
                "hooks",
                "root_tasks",
                "visibility",
                "snapshot_busy",
                "sts",
                "auto_scaling",
                "status_checks",
                "aged",
            },
            "config",
        )
        self.seed = raw.get("seed", 0)
        lat = raw.get("latency_ms")
        if lat is None:
            self.latency = None
        elif isinstance(lat, (int, float)):
            self.latency = (float(lat), float(lat))
        elif isinstance(lat, list) and len(lat) == 2 and lat[0] <= lat[1]:
            self.latency = (float(lat[0]), float(lat[1]))
        else:
            raise ConfigError("latency_ms: [lo, hi] in milliseconds, or one number")
        self.throttle = [
            _keys(r, MATCH_KEYS | {"percent", "first"}, f"throttle[{i}]") for i, r in enumerate(raw.get("throttle", []))
        ]
        for i, r in enumerate(self.throttle):
            if "percent" not in r and "first" not in r:
                raise ConfigError(f"throttle[{i}]: give percent, first or both")
        self.deny = [_keys(r, MATCH_KEYS, f"deny[{i}]") for i, r in enumerate(raw.get("deny", []))]
        pending = _keys(raw.get("pending", {}), {"image_seconds", "start_seconds", "stop_seconds"}, "pending")
        self.image_seconds = float(pending.get("image_seconds", 0))
        self.start_seconds = float(pending.get("start_seconds", 0))
        self.stop_seconds = float(pending.get("stop_seconds", 0))
        visibility = _keys(raw.get("visibility", {}), {"image_seconds", "task_seconds"}, "visibility")
        self.hidden_image_seconds = float(visibility.get("image_seconds", 0))
        self.hidden_task_seconds = float(visibility.get("task_seconds", 0))
        self.failed_images = set(raw.get("failed_images", []))
        busy = _keys(raw.get("snapshot_busy", {}), {"instances", "times"}, "snapshot_busy")
        self.busy_instances = set(_strings(busy.get("instances", []), "snapshot_busy.instances"))
        self.busy_times = busy.get("times", 1)
        if not isinstance(self.busy_times, int) or self.busy_times < -1:
            raise ConfigError("snapshot_busy.times: a count, or -1 for always")
        self.parse_sts(_keys(raw.get("sts", {}), {"max_session_seconds", "disabled_regions", "external_ids"}, "sts"))
        self.auto_scaling: dict[str, str] = raw.get("auto_scaling", {})
        if not isinstance(self.auto_scaling, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in self.auto_scaling.items()
        ):
            raise ConfigError("auto_scaling: {instance id: group name}")
        self.aged: dict[str, float] = raw.get("aged", {})
        if not isinstance(self.aged, dict) or not all(
            isinstance(k, str) and isinstance(v, (int, float)) and v >= 0 for k, v in self.aged.items()
        ):
            raise ConfigError("aged: {AMI id: days, at least 0}")
        self.status_checks: dict[str, dict[str, str]] = {}
        for instance_id, checks in raw.get("status_checks", {}).items():
            checks = _keys(checks, {"system", "instance"}, f"status_checks.{instance_id}")
            for which, status in checks.items():
                if status not in STATUS_SUMMARIES:
                    raise ConfigError(f"status_checks.{instance_id}.{which}: one of {sorted(STATUS_SUMMARIES)}")
            self.status_checks[instance_id] = checks
        root_tasks = _keys(raw.get("root_tasks", {}), {"seconds", "failed"}, "root_tasks")
        self.root_task_seconds = float(root_tasks.get("seconds", 0))
        self.failed_root_tasks = set(root_tasks.get("failed", []))
        self.page_size = raw.get("page_size")
        if self.page_size is not None and (not isinstance(self.page_size, int) or self.page_size < 1):
            raise ConfigError("page_size: a positive integer")
        ssm = _keys(raw.get("ssm", {}), {"pings", "absent"}, "ssm")
        self.ssm_pings: dict[str, str] = dict(ssm.get("pings", {}))
        self.ssm_absent = set(ssm.get("absent", []))
        self.hooks = []
        for i, h in enumerate(raw.get("hooks", [])):
            h = _keys(h, MATCH_KEYS | {"when", "do", "instances", "times"}, f"hooks[{i}]")
            if h.get("when") not in ("before", "after"):
                raise ConfigError(f"hooks[{i}].when: before or after")
            if h.get("do") not in ("start", "stop", "terminate"):
                raise ConfigError(f"hooks[{i}].do: start, stop or terminate")
            if not isinstance(h.get("instances"), list):
                raise ConfigError(f"hooks[{i}].instances: a list of instance ids")
            self.hooks.append(h)

    def parse_sts(self, sts: dict[str, Any]) -> None:
        lo, hi = MAX_SESSION_RANGE
        self.max_session: dict[str, int] = {}
        for account, secs in _accounts(sts.get("max_session_seconds", {}), "sts.max_session_seconds").items():
            if not isinstance(secs, int) or not lo <= secs <= hi:
                raise ConfigError(f"sts.max_session_seconds.{account}: {lo}-{hi} seconds, as a role allows")
            self.max_session[account] = secs
        self.disabled_regions = set(_strings(sts.get("disabled_regions", []), "sts.disabled_regions"))
        if self.disabled_regions & STS_ALWAYS_ACTIVE:
            raise ConfigError("sts.disabled_regions: STS cannot be deactivated in us-east-1")
        self.external_ids: dict[str, str] = _accounts(sts.get("external_ids", {}), "sts.external_ids")
        if not all(isinstance(v, str) and v for v in self.external_ids.values()):
            raise ConfigError("sts.external_ids: {account: external id}")


def _strings(obj: Any, where: str) -> list[str]:
    if not isinstance(obj, list) or not all(isinstance(x, str) for x in obj):
        raise ConfigError(f"{where}: a list of strings")
    return obj


def _accounts(obj: Any, where: str) -> dict[str, Any]:
    if not isinstance(obj, dict) or not all(re.fullmatch(r"\d{12}", str(k)) for k in obj):
        raise ConfigError(f"{where}: an object keyed by 12-digit account ids")
    return dict(obj)


def matches(rule: dict[str, Any], req: "Req", account: str | None = None) -> bool:
    acct = account if account is not None else req.account
    return (
        rule.get("service", req.service) == req.service
        and rule.get("action", req.action) == req.action
        and rule.get("account", acct) == acct
        and rule.get("region", req.region) == req.region
    )


class Req:
    """What the stage knows about one AWS request."""

    def __init__(self, environ: dict[str, Any], body: bytes):
        self.environ = environ
        self.body = body
        auth = environ.get("HTTP_AUTHORIZATION", "")
        m = CREDENTIAL_RE.search(auth)
        self.key = m.group(1) if m else None
        self.region = m.group(2) if m else None
        self.service = m.group(3) if m else None
        target = environ.get("HTTP_X_AMZ_TARGET")
        self.json: dict[str, Any] | None = None
        self.form: list[tuple[str, str]] = []
        self.action: str | None = None
        if target:
            self.action = target.rsplit(".", 1)[-1]
            try:
                self.json = json.loads(body or b"{}")
            except ValueError:
                self.json = {}
            if self.service is None and target.startswith("AmazonSSM."):
                self.service = "ssm"
        else:
            ctype = environ.get("CONTENT_TYPE", "")
            if environ.get("REQUEST_METHOD") == "POST" and "x-www-form-urlencoded" in ctype:
                self.form = urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
            if not self.form:
                self.form = urllib.parse.parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
            self.action = dict(self.form).get("Action")
        self.params = dict(self.form)
        self.account = get_account_id_from(self.key) if self.key else DEFAULT_ACCOUNT_ID
        self.request_id = str(uuid.uuid4())

    def log_params(self) -> Any:
        if self.json is not None:
            return self.json
        return {
            k: v
            for k, v in self.form
            if k not in ("Action", "Version") and (k in KEPT_PARAMS or not SECRET_PARAMS.search(k))
        }

    def role_account(self) -> str | None:
        """For sts:AssumeRole, the account of the role asked for."""
        m = ROLE_ACCOUNT_RE.match(self.params.get("RoleArn", ""))
        return m.group(1) if m else None


Response = tuple[int, list[tuple[str, str]], bytes]

def ec2_error(status: int, code: str, message: str, request_id: str) -> Response:
    # "The following shows the structure of a request error response."
    # https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html#api-error-response
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Response><Errors><Error><Code>{code}</Code><Message>{xml_escape(message)}</Message></Error></Errors>"
        f"<RequestID>{request_id}</RequestID></Response>"
    )
    return status, [("Content-Type", "text/xml;charset=UTF-8"), ("x-amzn-RequestId", request_id)], body.encode()


def sts_error(status: int, code: str, message: str, request_id: str) -> Response:
    body = (
        f'<ErrorResponse xmlns="{STS_NS}"><Error><Type>Sender</Type><Code>{code}</Code>'
        f"<Message>{xml_escape(message)}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>"
    )
    return status, [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)], body.encode()


def json_answer(status: int, obj: Any, request_id: str) -> Response:
    return (
        status,
        [("Content-Type", "application/x-amz-json-1.1"), ("x-amzn-RequestId", request_id)],
        json.dumps(obj).encode(),
    )


def json_error(status: int, code: str, message: str, request_id: str) -> Response:
    return json_answer(status, {"__type": code, "message": message}, request_id)


def xml_escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class Stage:
    """State shared by the middleware and the model patches."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.config = Config({})
        self.rng = random.Random(0)
        self.throttle_counts: list[int] = []
        self.hook_counts: list[int] = []
        self.log: list[tuple[int, dict[str, Any]]] = []
        self.seq = 0
        # id(model object) -> (object, deadline, promote function)
        self.transitions: dict[int, tuple[Any, float, Callable[[Any], None]]] = {}
        # access key id -> the ARN of the identity that uses it
        self.identities: dict[str, str] = {}
        # replace-root-volume tasks, oldest first, and by client token
        self.root_tasks: list[dict[str, Any]] = []
        self.root_tokens: dict[tuple[str, str, str], dict[str, Any]] = {}

        # AMI id -> the monotonic time it becomes visible (visibility)
        self.hidden_images: dict[str, float] = {}
        # instance id -> CreateImage refusals so far (snapshot_busy)
        self.busy_counts: dict[str, int] = {}
        # instance id -> the instance tagged with its group (auto_scaling)
        self.asg_tagged: dict[str, tuple[Any, Any]] = {}
        # AMI id -> (the AMI, its CreationDate and its snapshot's StartTime as
        # made), for `aged`
        self.made_at: dict[str, tuple[Any, Any, Any]] = {}

    def configure(self, raw: dict[str, Any]) -> None:
        config = Config(raw)
        with self.lock:
            found = find_instances(config.auto_scaling)
            self.age_images(config.aged)
            self.config = config
            self.rng = random.Random(config.seed)
            self.throttle_counts = [0] * len(config.throttle)
            self.hook_counts = [0] * len(config.hooks)
            self.busy_counts = {}
            self.tag_groups(found)

    # -- auto_scaling -------------------------------------------------------------

    def tag_groups(self, found: dict[str, tuple[Any, Any]]) -> None:
        """Puts each configured instance's group tag on it, as Amazon EC2 Auto
        Scaling does, and takes it off instances no longer configured (gone from
        the group). "When you launch instances in an Auto Scaling group, Auto
        Scaling automatically tags each one with the group name. This tag can be
        identified by its key, aws:autoscaling:groupName." (older Developer Guide,
        http://docs.aws.amazon.com/AutoScaling/latest/DeveloperGuide/ASTagging.html;
        now https://docs.aws.amazon.com/autoscaling/ec2/userguide/ec2-auto-scaling-tagging.html)"""
        for instance_id, (backend, _) in self.asg_tagged.items():
            if instance_id not in found:
                backend.delete_tags([instance_id], {ASG_TAG: None})
        for instance_id, (backend, _) in found.items():
            backend.create_tags([instance_id], {ASG_TAG: self.config.auto_scaling[instance_id]})
        self.asg_tagged = found

    # -- aged (a test device: a clock) -------------------------------------------

    def age_images(self, aged: dict[str, float]) -> None:
        """Moves each AMI's CreationDate (and its snapshot's StartTime) the given
        days back from when it was made; AMIs configured before and not now get
        their own times back."""
        for ami_id in set(aged) - set(self.made_at):
            ami = find_image(ami_id)
            snap = getattr(ami, "ebs_snapshot", None)
            self.made_at[ami_id] = (ami, ami.creation_date, getattr(snap, "start_time", None))
        for ami_id, (ami, created, started) in self.made_at.items():
            back = datetime.timedelta(days=aged.get(ami_id, 0))
            ami.creation_date = created - back if isinstance(created, datetime.datetime) else created
            snap = getattr(ami, "ebs_snapshot", None)
            if snap is not None and started is not None:
                snap.start_time = started - back

    # -- visibility (eventual consistency) -------------------------------------

    def hide_image(self, ami_id: str) -> None:
        secs = self.config.hidden_image_seconds
        if secs > 0:
            with self.lock:
                self.hidden_images[ami_id] = time.monotonic() + secs

    def image_hidden(self, ami_id: str | None) -> bool:
        """Whether a new AMI has not yet propagated: "if you run a command to
        modify or describe the resource that you just created, its ID might not
        have propagated throughout the system, and you will get an error
        responding that the resource does not exist."
        https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html"""
        if not self.hidden_images:
            return False
        with self.lock:
            until = self.hidden_images.get(ami_id or "")
            if until is not None and until <= time.monotonic():
                del self.hidden_images[ami_id or ""]
                until = None
        return until is not None

    def snapshot_busy(self, instance_id: str | None) -> bool:
        config = self.config
        if instance_id not in config.busy_instances:
            return False
        with self.lock:
            n = self.busy_counts.get(instance_id, 0)
            if config.busy_times != -1 and n >= config.busy_times:
                return False
            self.busy_counts[instance_id] = n + 1
        return True

    def next_seq(self) -> int:
        with self.lock:
            self.seq += 1
            return self.seq

    def record(self, seq: int, entry: dict[str, Any]) -> None:
        with self.lock:
            self.log.append((seq, entry))

    def log_json(self) -> list[dict[str, Any]]:
        with self.lock:
            return [e for _, e in sorted(self.log, key=lambda p: p[0])]

    # -- pending windows, kept in moto's model --------------------------------

    def schedule(self, obj: Any, seconds: float, promote: Callable[[Any], None]) -> None:
        with self.lock:
            self.transitions[id(obj)] = (obj, time.monotonic() + seconds, promote)

    def unschedule(self, obj: Any) -> None:
        with self.lock:
            self.transitions.pop(id(obj), None)

    def promote_due(self) -> None:
        now = time.monotonic()
        with self.lock:
            due = [k for k, (_, deadline, _) in self.transitions.items() if deadline <= now]
            for k in due:
                obj, _, promote = self.transitions.pop(k)
                promote(obj)

    # Instances pass through pending and stopping: "When you launch an instance,
    # it enters the pending state"; "When you stop your instance, it enters the
    # stopping state, and then the stopped state."
    # https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/ec2-instance-lifecycle.html

    def begin_start(self, inst: Any) -> None:
        secs = self.config.start_seconds
        if secs > 0:
            inst._state.name, inst._state.code = "pending", 0
            self.schedule(inst, secs, _to_running)
        else:
            self.unschedule(inst)

    def begin_stop(self, inst: Any) -> None:
        secs = self.config.stop_seconds
        if secs > 0:
            inst._state.name, inst._state.code = "stopping", 64
            self.schedule(inst, secs, _to_stopped)
        else:
            self.unschedule(inst)

    def begin_image(self, ami: Any, source_instance: str | None) -> None:
        # Image State "Valid Values: pending | available | invalid | deregistered
        # | transient | failed | error | disabled"; Snapshot State pending |
        # completed | ... https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_Image.html
        fails = source_instance is not None and source_instance in self.config.failed_images
        secs = self.config.image_seconds
        promote = _to_failed if fails else _to_available
        if secs > 0:
            ami.state = "pending"
            ami.ebs_snapshot.status = "pending"
            self.schedule(ami, secs, promote)
        else:
            promote(ami)

    # -- faults ----------------------------------------------------------------

    def latency(self) -> float:
        # A test device: no AWS page.
        with self.lock:
            lat = self.config.latency
            return self.rng.uniform(*lat) / 1000.0 if lat else 0.0

    def throttled(self, req: Req) -> bool:
        account = req.role_account() if req.action == "AssumeRole" else None
        hit = False
        with self.lock:
            for i, rule in enumerate(self.config.throttle):
                if not matches(rule, req, account):
                    continue
                self.throttle_counts[i] += 1
                if self.throttle_counts[i] <= rule.get("first", 0):
                    hit = True
                elif "percent" in rule and self.rng.random() * 100 < rule["percent"]:
                    hit = True
        return hit

    def denied(self, req: Req) -> bool:
        account = req.role_account() if req.action == "AssumeRole" else None
        with self.lock:
            return any(matches(rule, req, account) for rule in self.config.deny)

    def due_hooks(self, when: str, req: Req) -> list[dict[str, Any]]:
        # A test device (another actor): no AWS page.
        out = []
        with self.lock:
            for i, hook in enumerate(self.config.hooks):
                if hook["when"] == when and matches(hook, req) and self.hook_counts[i] < hook.get("times", 1):
                    self.hook_counts[i] += 1
                    out.append(hook)
        return out

    def caller_arn(self, req: Req) -> str:
        with self.lock:
            known = self.identities.get(req.key or "")
        return known or f"arn:aws:iam::{req.account}:user/stage"


STAGE = Stage()


def find_image(ami_id: str) -> Any:
    """The AMI with this id, in any account and region; an unknown id is a
    configuration error."""
    for account in dict.values(ec2_backends):
        for backend in dict.values(account):
            if ami_id in backend.amis:
                return backend.amis[ami_id]
    raise ConfigError(f"aged: no AMI {ami_id}")


def find_instances(wanted: dict[str, str]) -> dict[str, tuple[Any, Any]]:
    """instance id -> (its backend, the instance), for every id in `wanted`,
    from any account and region; an unknown id is a configuration error."""
    found: dict[str, tuple[Any, Any]] = {}
    if not wanted:
        return found
    for account in dict.values(ec2_backends):
        for backend in dict.values(account):
            for inst in backend.all_instances():
                if inst.id in wanted:
                    found[inst.id] = (backend, inst)
    missing = sorted(set(wanted) - set(found))
    if missing:
        raise ConfigError(f"auto_scaling: no instance {', '.join(missing)}")
    return found


def _to_running(inst: Any) -> None:
    if inst._state.name == "pending":
        inst._state.name, inst._state.code = "running", 16


def _to_stopped(inst: Any) -> None:
    if inst._state.name == "stopping":
        inst._state.name, inst._state.code = "stopped", 80


def _to_available(ami: Any) -> None:
    if ami.state in ("pending", "available"):
        ami.state = "available"
        ami.ebs_snapshot.status = "completed"


def _to_failed(ami: Any) -> None:
    # "failed" and StateReason ("The reason for the state change."):
    # https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_Image.html
    if ami.state in ("pending", "available"):
        ami.state = "failed"
        ami.state_reason = {
            "Code": "Server.InternalError",
            "Message": "Server.InternalError: Internal error on snapshot creation (stage: failed_images)",
        }
        ami.ebs_snapshot.status = "completed"


# -- patches of moto's model ----------------------------------------------------

_orig_instance_start = Instance.start
_orig_instance_stop = Instance.stop
_orig_create_image = AmiBackend.create_image


def _instance_start(self: Instance) -> Any:
    previous = copy.copy(self._state)
    if previous.name in ("running", "pending", "terminated", "shutting-down"):
        return previous
    _orig_instance_start(self)
    # AWS moves LaunchTime with every start: "The time that the instance was
    # last launched." moto keeps the first launch's.
    # https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_Instance.html
    self.launch_time = moto_utcnow()
    STAGE.begin_start(self)
    return previous


def _instance_stop(self: Instance) -> Any:
    previous = copy.copy(self._state)
    if previous.name in ("stopped", "stopping", "terminated", "shutting-down"):
        return previous
    _orig_instance_stop(self)
    STAGE.begin_stop(self)
    return previous


def _create_image(self: AmiBackend, instance_id: str, name: str, description: str, tag_specifications: list) -> Any:
    account = self.account_id  # type: ignore[attr-defined]
    # "The specified AMI name is already in use by another AMI." (hidden ones too)
    # https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html
    for ami in list(self.amis.values()):
        if ami.name == name and ami.owner_id == account:
            raise EC2ClientError("InvalidAMIName.Duplicate", f"AMI name {name} is already in use by AMI {ami.id}")
    # "You can tag the AMI, the snapshots, or both." (moto: HTTP 500 on snapshot)
    # https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateImage.html
    image_specs, snapshot_tags = [], []
    for spec in tag_specifications or []:
        if spec.get("ResourceType") == "snapshot":
            snapshot_tags += spec.get("Tags", [])
        else:
            image_specs.append(spec)
    ami = _orig_create_image(self, instance_id, name, description, image_specs)
    for tag in snapshot_tags:
        ami.ebs_snapshot.add_tag(tag["Key"], tag.get("Value", ""))
    # "For AMIs created using CreateImage (creates an AMI from an instance), the
    # source AMI ID is the ID of the AMI used to launch the instance."
    # https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/ami-ancestry.html; SourceImageId,
    # SourceImageRegion and SourceInstanceId in
    # https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_Image.html
    ami.source_image_id = ami.instance.image_id
    ami.source_image_region = self.region_name  # type: ignore[attr-defined]
    STAGE.begin_image(ami, instance_id)
    STAGE.hide_image(ami.id)
    return ami


def _copy_image_response(self: AmisResponse) -> ActionResult:
    source_image_id = self._get_param("SourceImageId")
    source_region = self._get_param("SourceRegion")
    name = self._get_param("Name")
    description = self._get_param("Description")
    copy_tags = self._get_bool_param("CopyImageTags", False)
    tag_specifications = self._get_param("TagSpecifications", [])
    self.error_on_dryrun()
    if STAGE.image_hidden(source_image_id):
        raise InvalidAMIIdError(source_image_id)
    image = self.ec2_backend.copy_image(source_image_id, source_region, name, description)
    # A copy names the AMI copied and its Region; SourceInstanceId "only appears
    # if the AMI was created using CreateImage."
    # https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_Image.html
    image.source_image_id = source_image_id
    image.source_image_region = source_region
    image.instance_id = None
    # CopyImageTags: "Specifies whether to copy your user-defined AMI tags to the
    # new AMI. The following tags are not be copied: System tags (prefixed with
    # aws:)" https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CopyImage.html
    if copy_tags:
        source = ec2_backends[self.current_account][source_region].amis.get(source_image_id)
        for tag in source.get_tags() if source else []:
            if not tag["key"].startswith(RESERVED_TAG_PREFIX):
                image.add_tag(tag["key"], tag["value"])
    # TagSpecifications: "The tags to apply to the new AMI and new snapshots." (same page)
    for spec in tag_specifications:
        target = image.ebs_snapshot if spec.get("ResourceType") == "snapshot" else image
        for tag in spec.get("Tags", []):
            target.add_tag(tag["Key"], tag.get("Value", ""))
    STAGE.begin_image(image, None)
    STAGE.hide_image(image.id)
    return ActionResult({"ImageId": image.id})


def _describe_images_response(self: AmisResponse) -> ActionResult:
    self.error_on_dryrun()
    ami_ids = self._get_param("ImageIds", [])
    # Not yet propagated: named, InvalidAMIID.NotFound ("The specified AMI doesn't
    # exist."); otherwise left out. https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html,
    # https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html
    hidden = [i for i in ami_ids if STAGE.image_hidden(i)]
    if hidden:
        raise InvalidAMIIdError(hidden)
    images = self.ec2_backend.describe_images(
        ami_ids=ami_ids,
        filters=self._filters_from_querystring(),
        exec_users=self._get_param("ExecutableUsers", []),
        owners=self._get_param("Owners", []),
    )
    images = [i for i in images if not STAGE.image_hidden(i.id)]
    # IncludeDisabled: "Default: No disabled AMIs are included in the response."
    # https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeImages.html
    if not self._get_bool_param("IncludeDisabled", False):
        images = [i for i in images if i.state != "disabled"]
    return ActionResult({"Images": images})


def _deregister_image_response(self: AmisResponse) -> ActionResult:
    ami_id = self._get_param("ImageId")
    self.error_on_dryrun()
    # Not yet propagated: https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html
    if STAGE.image_hidden(ami_id):
        raise InvalidAMIIdError(ami_id)
    self.ec2_backend.deregister_image(ami_id)
    return ActionResult({"Return": True})


def _enable_image_deprecation_response(self: AmisResponse) -> ActionResult:
    """moto lacks EnableImageDeprecation. "If you specify a value for seconds,
    Amazon EC2 rounds the seconds to the nearest minute." The answer: "Returns
    true if the request succeeds". The image then carries DeprecationTime.
    https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_EnableImageDeprecation.html"""
    ami_id = self._get_param("ImageId")
    deprecate_at = self._get_param("DeprecateAt")
    self.error_on_dryrun()
    ami = self.ec2_backend.amis.get(ami_id)
    if ami is None or STAGE.image_hidden(ami_id):
        raise InvalidAMIIdError(ami_id)
    ami.deprecation_time = deprecation_time(deprecate_at)
    return ActionResult({"Return": True})


def deprecation_time(value: Any) -> str:
    """DeprecateAt (a datetime or an ISO 8601 text) to the minute, as UTC text."""
    if isinstance(value, datetime.datetime):
        at = value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)
    else:
        at = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    at = at.astimezone(datetime.timezone.utc)
    at = (at + datetime.timedelta(seconds=30)).replace(second=0, microsecond=0)
    return at.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _describe_snapshots_response(self: ElasticBlockStore) -> ActionResult:
    snapshots = self.ec2_backend.describe_snapshots(
        snapshot_ids=self._get_param("SnapshotIds", []),
        filters=self._filters_from_querystring(),
    )
    # moto ignores OwnerIds: "Scopes the results to snapshots with the specified
    # owners. You can specify a combination of Amazon Web Services account IDs,
    # self, and amazon." https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeSnapshots.html
    owners = self._get_param("OwnerIds", [])
    if owners:
        wanted = {self.current_account if o == "self" else o for o in owners}
        snapshots = [s for s in snapshots if s.owner_id in wanted]
    return ActionResult({"Snapshots": snapshots})


# IncorrectInstanceState: "The instance is in an incorrect state for the
# requested action." https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html
# AWS documents no message; these are the ones EC2 was seen to give.


def _incorrect_state(instance_id: str, verb: str) -> EC2ClientError:
    return EC2ClientError(
        "IncorrectInstanceState",
        f"The instance '{instance_id}' is not in a state from which it can be {verb}.",
    )


def _never_running(instance_id: str) -> EC2ClientError:
    return EC2ClientError(
        "IncorrectInstanceState",
        f"Instance '{instance_id}' cannot be stopped as it has never reached the 'running' state.",
    )


# One instance in a wrong state fails the whole call and changes none (as
# TerminateInstances documents: "If you specify multiple instances and the
# request fails (for example, because of a single incorrect instance ID), none
# of the instances are terminated."
# https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_TerminateInstances.html;
# Start/StopInstances document nothing, EC2 was seen to do the same). The
# answers say pending/stopping with the previous state, as the examples of
# https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_StartInstances.html and
# https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_StopInstances.html show.


def _start_instances_response(self: InstanceResponse) -> ActionResult:
    instance_ids = self._get_param("InstanceIds", [])
    self.error_on_dryrun()
    for inst in self.ec2_backend.get_multi_instances_by_id(instance_ids):
        if inst._state.name not in ("stopped", "running", "pending"):
            raise _incorrect_state(inst.id, "started")
    started = self.ec2_backend.start_instances(instance_ids)
    out = []
    for inst, previous in started:
        if previous.name == "stopped":
            current = {"Code": 0, "Name": "pending"}
        else:
            current = {"Code": inst._state.code, "Name": inst._state.name}
        out.append({"InstanceId": inst.id, "CurrentState": current, "PreviousState": previous})
    return ActionResult({"StartingInstances": out})


def _stop_instances_response(self: InstanceResponse) -> ActionResult:
    instance_ids = self._get_param("InstanceIds", [])
    self.error_on_dryrun()
    for inst in self.ec2_backend.get_multi_instances_by_id(instance_ids):
        if inst._state.name == "pending":
            raise _never_running(inst.id)
        if inst._state.name not in ("running", "stopping", "stopped"):
            raise _incorrect_state(inst.id, "stopped")
    stopped = self.ec2_backend.stop_instances(instance_ids)
    out = []
    for inst, previous in stopped:
        if previous.name == "running":
            current = {"Code": 64, "Name": "stopping"}
        else:
            current = {"Code": inst._state.code, "Name": inst._state.name}
        out.append({"InstanceId": inst.id, "CurrentState": current, "PreviousState": previous})
    return ActionResult({"StoppingInstances": out})


_orig_instance_status = Instance.instance_status
_orig_system_status = Instance.system_status


def _status_summary(inst: Any, which: str, orig: Any) -> dict[str, Any]:
    """A running instance's check summary as configured (status_checks):
    "Valid Values: ok | impaired | insufficient-data | not-applicable |
    initializing", the details only with a check EC2 ran.
    https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_InstanceStatusSummary.html"""
    status = STAGE.config.status_checks.get(inst.id, {}).get(which)
    if status is None or inst.state_code != 16:
        return orig.fget(inst)
    if status in ("not-applicable", "initializing"):
        return {"Status": status}
    passed = {"ok": "passed", "impaired": "failed", "insufficient-data": "insufficient-data"}[status]
    return {"Details": [{"Name": "reachability", "Status": passed}], "Status": status}


def install_patches() -> None:
    Instance.instance_status = property(lambda i: _status_summary(i, "instance", _orig_instance_status))  # type: ignore[method-assign,assignment]
    Instance.system_status = property(lambda i: _status_summary(i, "system", _orig_system_status))  # type: ignore[method-assign,assignment]
    Instance.start = _instance_start  # type: ignore[method-assign]
    Instance.stop = _instance_stop  # type: ignore[method-assign]
    AmiBackend.create_image = _create_image  # type: ignore[method-assign]
    AmisResponse.copy_image = _copy_image_response  # type: ignore[method-assign]
    AmisResponse.describe_images = _describe_images_response  # type: ignore[method-assign]
    AmisResponse.deregister_image = _deregister_image_response  # type: ignore[method-assign]
    AmisResponse.enable_image_deprecation = _enable_image_deprecation_response  # type: ignore[attr-defined]
    ElasticBlockStore.describe_snapshots = _describe_snapshots_response  # type: ignore[method-assign]
    InstanceResponse.start_instances = _start_instances_response  # type: ignore[method-assign]
    InstanceResponse.stop_instances = _stop_instances_response  # type: ignore[method-assign]


# -- the middleware ---------------------------------------------------------------


class Middleware:
    def __init__(self, moto: Any):
        self.moto = moto

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_stage/"):
            status, headers, body = self.control(environ, path)
            return self.reply(start_response, status, headers, body)
        body = self.read_body(environ)
        environ["wsgi.input"] = BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        if path.startswith("/moto-api"):
            return self.moto(environ, start_response)
        STAGE.promote_due()
        req = Req(environ, body)
        if req.action is None:
            return self.moto(environ, start_response)
        seq = STAGE.next_seq()
        arrived = time.time()
        fault = None
        try:
            pause = STAGE.latency()
            if pause:
                time.sleep(pause)
            STAGE.promote_due()
            fault, (status, headers, out) = self.handle(req)
        except Exception:  # a bug in the stage: say so loudly
            traceback.print_exc(file=sys.stderr)
            status, headers, out = 500, [("Content-Type", "text/plain")], traceback.format_exc().encode()
        STAGE.record(
            seq,
            {
                "t": arrived,
                "done": time.time(),
                "service": req.service or "unknown",
                "action": req.action,
                "account": req.account,
                "region": req.region,
                "status": status,
                "fault": fault,
                "params": req.log_params(),
            },
        )
        return self.reply(start_response, status, headers, out)

    @staticmethod
    def read_body(environ: dict[str, Any]) -> bytes:
        stream = environ["wsgi.input"]
        length = environ.get("CONTENT_LENGTH")
        if length:
            return stream.read(int(length))
        if environ.get("wsgi.input_terminated"):
            return stream.read()
        return b""

    @staticmethod
    def reply(start_response: Any, status: int, headers: list[tuple[str, str]], body: bytes) -> list[bytes]:
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(body))))
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Status"
        start_response(f"{status} {phrase}", headers)
        return [body]

    # -- control API ----------------------------------------------------------

    def control(self, environ: dict[str, Any], path: str) -> Response:
        method = environ.get("REQUEST_METHOD")
        text = [("Content-Type", "text/plain")]
        if path == "/_stage/health":
            return 200, text, b"ok"
        if path == "/_stage/config" and method == "POST":
            body = self.read_body(environ)
            try:
                STAGE.configure(json.loads(body or b"{}"))
            except (ValueError, TypeError, KeyError) as e:
                return 400, text, f"bad stage config: {e}".encode()
            return 200, text, b"ok"
        if path == "/_stage/log" and method == "GET":
            return 200, [("Content-Type", "application/json")], json.dumps(STAGE.log_json()).encode()
        if path == "/_stage/log/clear" and method == "POST":
            with STAGE.lock:
                STAGE.log.clear()
            return 200, text, b"ok"
        return 404, text, f"no stage endpoint {method} {path}".encode()

    # -- AWS requests ---------------------------------------------------------

    def handle(self, req: Req) -> tuple[str | None, Response]:
        if STAGE.throttled(req):
            return "throttle", self.throttle_answer(req)
        if STAGE.denied(req):
            return "deny", self.deny_answer(req)
        dry_run = req.params.get("DryRun", "").lower() == "true"
        refused = self.refusal(req, dry_run)
        if refused is not None:
            return refused
        # Another actor races real calls, not permission probes.
        for hook in [] if dry_run else STAGE.due_hooks("before", req):
            self.run_hook(hook, "before", req)
        tag_refusal = self.tag_refusal(req) if req.service == "ec2" else None
        if tag_refusal is not None:
            answer = tag_refusal
        elif req.service == "ssm" and req.action == "DescribeInstanceInformation":
            answer = self.describe_instance_information(req)
        elif req.service == "ec2" and req.action in PAGED_EC2:
            answer = self.paged_ec2(req)
        elif req.service == "ec2" and req.action == "CreateReplaceRootVolumeTask":
            answer = self.create_root_task(req, dry_run)
        elif req.service == "ec2" and req.action == "DescribeReplaceRootVolumeTasks":
            answer = self.describe_root_tasks(req)
        else:
            answer = self.forward(req.environ, req.body)
            if req.action == "AssumeRole" and answer[0] == 200:
                self.learn_identity(answer[2])
        if req.service == "ec2":
            answer = with_request_id(answer, req.request_id)
        if 200 <= answer[0] < 300 and not dry_run:
            for hook in STAGE.due_hooks("after", req):
                self.run_hook(hook, "after", req)
        return None, answer

    # -- configured refusals AWS gives ---------------------------------------------

    def refusal(self, req: Req, dry_run: bool) -> tuple[str, Response] | None:
        """A configured refusal (snapshot_busy, sts) and its fault name."""
        if req.service == "ec2" and req.action == "CreateImage" and not dry_run:
            if STAGE.snapshot_busy(req.params.get("InstanceId")):
                return "snapshot_busy", self.snapshot_busy_answer(req)
        if req.service == "sts" and req.action == "AssumeRole":
            return self.assume_role_refusal(req)
        return None

    def snapshot_busy_answer(self, req: Req) -> Response:
        # ConcurrentSnapshotLimitExceeded: "You've reached the limit on the number
        # of concurrent snapshots you can create on the specified volume."
        # https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html
        # CreateImage meets it when it snapshots a busy volume (AWS re:Post
        # https://repost.aws/knowledge-center/ebs-snapshot-stuck); the message is
        # the one EC2 was seen to give.
        return ec2_error(
            400,
            "ConcurrentSnapshotLimitExceeded",
            "Maximum allowed in-progress snapshots for a single volume exceeded.",
            req.request_id,
        )

    def assume_role_refusal(self, req: Req) -> tuple[str, Response] | None:
        """AssumeRole refused as configured (sts), or None."""
        config = STAGE.config
        rid = req.request_id
        account = req.role_account() or req.account
        # RegionDisabledException, HTTP 403: "STS is not activated in the requested
        # region for the account that is being asked to generate credentials."
        # https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html, and
        # https://docs.aws.amazon.com/IAM/latest/UserGuide/id_credentials_temp_enable-regions.html
        # (the message is the one STS was seen to give).
        if req.region in config.disabled_regions:
            return "sts_region_disabled", sts_error(
                403,
                "RegionDisabledException",
                f"STS is not activated in this region for account:{account}. "
                "Your account administrator can activate STS in this region using the IAM Console.",
                rid,
            )
        # A role that requires an external ID refuses a request without it: "If
        # you try to assume a role for which you are specified as a trusted account
        # but pass an incorrect external ID, you are denied access." (older STS guide,
        # http://docs.aws.amazon.com/STS/latest/UsingSTS/sts-delegating-externalid.html; now
        # https://docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_create_for-user_externalid.html)
        wanted = config.external_ids.get(account)
        if wanted is not None and req.params.get("ExternalId") != wanted:
            return "sts_external_id", self.deny_answer(req)
        # DurationSeconds "By default, the value is set to 3600 seconds."; "If you
        # specify a value higher than this setting or the administrator setting
        # (whichever is lower), the operation fails."
        # https://docs.aws.amazon.com/STS/latest/APIReference/API_AssumeRole.html
        # (code and message as STS was seen to give them).
        limit = config.max_session.get(account)
        try:
            duration = int(req.params.get("DurationSeconds", "3600"))
        except ValueError:
            duration = None
        if limit is not None and duration is not None and duration > limit:
            return "sts_max_session", sts_error(
                400,
                "ValidationError",
                "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.",
                rid,
            )
        return None

    def tag_refusal(self, req: Req) -> Response | None:
        """EC2's refusal of a reserved tag key, or of a tag on an AMI that has not
        yet propagated (visibility), or None."""
        rid = req.request_id
        # "The aws: prefix is reserved for AWS use. If a tag has a tag key with this
        # prefix, then you can't edit or delete the tag's key or value."
        # https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/Using_Tags.html#tag-restrictions
        # (messages as EC2 was seen to give them).
        for key, value in req.form:
            if not value.startswith(RESERVED_TAG_PREFIX):
                continue
            if req.action in ("CreateTags", "DeleteTags") and re.fullmatch(r"Tag\.\d+\.Key", key):
                return ec2_error(
                    400,
                    "InvalidParameterValue",
                    f"Value ( {value} ) for parameter key is invalid. "
                    "Tag keys starting with 'aws:' are reserved for internal use",
                    rid,
                )
            if re.fullmatch(r"TagSpecification\.\d+\.Tag\.\d+\.Key", key):
                return ec2_error(
                    400, "InvalidParameterValue", "Tag keys starting with 'aws:' are reserved for internal use", rid
                )
        if req.action in ("CreateTags", "DeleteTags"):
            for key, value in req.form:
                if re.fullmatch(r"ResourceId\.\d+", key) and STAGE.image_hidden(value):
                    return ec2_error(400, "InvalidAMIID.NotFound", f"The image id '[{value}]' does not exist", rid)
        return None

    def forward(self, environ: dict[str, Any], body: bytes) -> Response:
        env = dict(environ)
        env["wsgi.input"] = BytesIO(body)
        env["CONTENT_LENGTH"] = str(len(body))
        captured: dict[str, Any] = {}
        chunks: list[bytes] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
            captured["status"] = int(status.split(" ", 1)[0])
            captured["headers"] = list(headers)
            return chunks.append

        result = self.moto(env, start_response)
        try:
            for chunk in result:
                chunks.append(chunk)
        finally:
            if hasattr(result, "close"):
                result.close()
        return captured["status"], captured["headers"], b"".join(chunks)

    def learn_identity(self, body: bytes) -> None:
        text = body.decode("utf-8", "replace")
        key = re.search(r"<AccessKeyId>([^<]+)</AccessKeyId>", text)
        arn = re.search(r"<AssumedRoleUser>.*?<Arn>([^<]+)</Arn>", text, re.S)
        if key and arn:
            with STAGE.lock:
                STAGE.identities[key.group(1)] = arn.group(1)

    def throttle_answer(self, req: Req) -> Response:
        rid = req.request_id
        # STS: "ThrottlingException ... HTTP Status Code: 400"
        # https://docs.aws.amazon.com/STS/latest/APIReference/CommonErrors.html; the
        # Query API's code is Throttling, "Rate exceeded", as STS was seen to give it.
        if req.service == "sts":
            return sts_error(400, "Throttling", "Rate exceeded", rid)
        # SSM: "ThrottlingException The request was denied due to request
        # throttling. HTTP Status Code: 400"
        # https://docs.aws.amazon.com/systems-manager/latest/APIReference/CommonErrors.html
        if req.json is not None:
            return json_error(400, "ThrottlingException", "Rate exceeded", rid)
        # "If you exceed an API throttling limit, you get the RequestLimitExceeded
        # error code." https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html;
        # a server error (5xx) in https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html
        return ec2_error(503, "RequestLimitExceeded", "Request limit exceeded.", rid)

    def deny_answer(self, req: Req) -> Response:
        rid = req.request_id
        who = STAGE.caller_arn(req)
        # "User: arn:aws:iam::account-id:user/user-name is not authorized to
        # perform: sts:AssumeRole on resource: arn:aws:iam::account-id:role/role-name"
        # https://docs.aws.amazon.com/IAM/latest/UserGuide/troubleshoot_roles.html
        if req.service == "sts":
            resource = req.params.get("RoleArn") if req.action == "AssumeRole" else "*"
            return sts_error(
                403,
                "AccessDenied",
                f"User: {who} is not authorized to perform: sts:{req.action} on resource: {resource}",
                rid,
            )
        # "AccessDeniedException You do not have sufficient access to perform this
        # action. HTTP Status Code: 400"
        # https://docs.aws.amazon.com/systems-manager/latest/APIReference/CommonErrors.html;
        # Organizations the same: "AccessDeniedException ... HTTP Status Code: 400"
        # https://docs.aws.amazon.com/organizations/latest/APIReference/API_ListAccounts.html
        if req.json is not None:
            return json_error(
                400,
                "AccessDeniedException",
                f"User: {who} is not authorized to perform: {req.service}:{req.action} "
                "because no identity-based policy allows the action",
                rid,
            )
        # "You are not authorized to perform this operation."
        # https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html; for
        # DryRun too: "If you have the required permissions, the error response is
        # DryRunOperation. Otherwise, it is UnauthorizedOperation." (DryRun in
        # https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_StopInstances.html)
        return ec2_error(
            403,
            "UnauthorizedOperation",
            f"You are not authorized to perform this operation. User: {who} "
            f"is not authorized to perform: {req.service}:{req.action}",
            rid,
        )

    def run_hook(self, hook: dict[str, Any], when: str, req: Req) -> None:
        """A test device: another actor starting or stopping instances."""
        account = hook.get("account", req.account)
        region = hook.get("region", req.region) or "us-east-1"
        backend = ec2_backends[account][region]
        done, missing = [], []
        for instance_id in hook["instances"]:
            try:
                inst = backend.get_instance(instance_id)
            except Exception:
                missing.append(instance_id)
                continue
            if hook["do"] == "start":
                inst.start()
            elif hook["do"] == "terminate":
                backend.terminate_instances([instance_id])
            else:
                inst.stop()
            done.append(instance_id)
        STAGE.record(
            STAGE.next_seq(),
            {
                "t": time.time(),
                "service": "stage",
                "action": f"hook:{hook['do']}",
                "account": account,
                "region": region,
                "status": 200 if not missing else 404,
                "fault": None,
                "params": {"when": when, "trigger": req.action, "instances": done, "missing": missing},
            },
        )

    # -- paging ---------------------------------------------------------------

    def paged_ec2(self, req: Req) -> Response:
        list_name, id_prefix, lo, hi = PAGED_EC2[req.action]
        rid = req.request_id
        has_ids = any(k.startswith(id_prefix + ".") for k in req.params)
        raw_max = req.params.get("MaxResults")
        max_results = None
        if raw_max is not None:
            if has_ids:
                return ec2_error(
                    400,
                    "InvalidParameterCombination",
                    f"The parameter {id_prefix}s cannot be used with the parameter maxResults",
                    rid,
                )
            try:
                max_results = int(raw_max)
            except ValueError:
                return ec2_error(400, "InvalidParameterValue", f"Invalid value '{raw_max}' for maxResults", rid)
            if not lo <= max_results <= hi:
                return ec2_error(
                    400,
                    "InvalidParameterValue",
                    f"Value ( {max_results} ) for parameter maxResults is invalid. "
                    f"Expecting a value between {lo} and {hi}.",
                    rid,
                )
        page = None if has_ids else STAGE.config.page_size
        if max_results is not None:
            page = max_results if page is None else min(page, max_results)
        token = req.params.get("NextToken")
        offset = 0
        if token is not None:
            offset = parse_token(token)
            if offset is None:
                return ec2_error(400, "InvalidParameterValue", f"Invalid NextToken value: {token}", rid)

        form = [(k, v) for k, v in req.form if k not in ("MaxResults", "NextToken")]
        status, headers, body = self.forward(req.environ, urllib.parse.urlencode(form).encode())
        if status != 200:
            return status, headers, body
        root, ns = parse_plain(body)
        items_el = root.find(list_name)
        moto_token = root.find("nextToken")
        if items_el is None:
            return status, headers, body
        items = list(items_el)
        # moto pages some of these itself: collect every page it has.
        rounds = 0
        while moto_token is not None and moto_token.text and rounds < 1000:
            rounds += 1
            more_form = form + [("NextToken", moto_token.text)]
            s2, h2, b2 = self.forward(req.environ, urllib.parse.urlencode(more_form).encode())
            if s2 != 200:
                return s2, h2, b2
            more, _ = parse_plain(b2)
            more_items = more.find(list_name)
            items += list(more_items) if more_items is not None else []
            moto_token = more.find("nextToken")
        had_moto_token = root.find("nextToken") is not None
        if page is None and offset == 0 and not had_moto_token:
            return status, headers, body  # nothing to page: moto's bytes untouched
        for el in root.findall("nextToken"):
            root.remove(el)
        end = len(items) if page is None else offset + page
        for child in list(items_el):
            items_el.remove(child)
        items_el.extend(items[offset:end])
        if end < len(items):
            ET.SubElement(root, "nextToken").text = f"{TOKEN_PREFIX}{end}"
        if ns:
            root.set("xmlns", ns)
        out = '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode")
        return status, headers, out.encode()

    # -- replace-root-volume tasks ------------------------------------------------

    def create_root_task(self, req: Req, dry_run: bool) -> Response:
        """moto lacks CreateReplaceRootVolumeTask. "Replaces the EBS-backed root
        volume for a running instance with a new volume that is ... restored from
        an AMI"; "If you do not specify a client token, a randomly generated token
        is used for the request to ensure idempotency."
        https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_CreateReplaceRootVolumeTask.html;
        a token reused with other parameters: "the IdempotentParameterMismatch error
        is returned." https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-idempotency.html"""
        rid = req.request_id
        p = req.params
        if dry_run:
            return ec2_error(412, "DryRunOperation", "Request would have succeeded, but DryRun flag is set.", rid)
        instance_id, image_id, token = p.get("InstanceId"), p.get("ImageId"), p.get("ClientToken", str(uuid.uuid4()))
        if not instance_id:
            return ec2_error(400, "MissingParameter", "The request must contain the parameter InstanceId", rid)
        if not image_id:
            return ec2_error(400, "InvalidParameterCombination", "The stage emulates tasks from an ImageId only", rid)
        region = req.region or "us-east-1"
        key = (req.account, region, token)
        with STAGE.lock:
            known = STAGE.root_tokens.get(key)
        if known is not None:
            # Every parameter, as AWS compares them: "If you retry a request with
            # the same client token, but change one or more of the API
            # parameters, the IdempotentParameterMismatch error is returned."
            # https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-idempotency.html
            same = (
                known["instance"] == instance_id
                and known["image"] == image_id
                and known["delete"] == (p.get("DeleteReplacedRootVolume", "false").lower() == "true")
                and sorted(known["tags"]) == sorted(root_task_tags(p))
            )
            if not same:
                return ec2_error(
                    400,
                    "IdempotentParameterMismatch",
                    "The client token you have provided is associated with a resource that is already deleted "
                    "or has different parameters. Please use a different client token.",
                    rid,
                )
            return 200, XML_TEXT, root_task_answer("CreateReplaceRootVolumeTaskResponse", rid, [known], None, True)
        backend = ec2_backends[req.account][region]
        try:
            inst = backend.get_instance(instance_id)
        except Exception:
            return ec2_error(400, "InvalidInstanceID.NotFound", f"The instance ID '{instance_id}' does not exist", rid)
        if inst._state.name != "running":
            return ec2_error(
                400,
                "IncorrectInstanceState",
                f"The instance '{instance_id}' is not in a valid state for this operation.",
                rid,
            )
        ami = backend.amis.get(image_id)
        if ami is None or STAGE.image_hidden(image_id):
            return ec2_error(400, "InvalidAMIID.NotFound", f"The image id '[{image_id}]' does not exist", rid)
        if ami.state != "available":
            return ec2_error(400, "IncorrectState", f"The image '{image_id}' is not in the available state.", rid)
        tags = root_task_tags(p)
        config = STAGE.config
        task = {
            "id": "replacevol-" + uuid.uuid4().hex[:17],
            "account": req.account,
            "region": region,
            "instance": instance_id,
            "image": image_id,
            "token": token,
            "tags": tags,
            "delete": p.get("DeleteReplacedRootVolume", "false").lower() == "true",
            "created": time.time(),
            "seconds": config.root_task_seconds,
            "visible": time.time() + config.hidden_task_seconds,
            "fate": "failed" if instance_id in config.failed_root_tasks else "succeeded",
        }
        with STAGE.lock:
            STAGE.root_tasks.append(task)
            STAGE.root_tokens[key] = task
        return 200, XML_TEXT, root_task_answer("CreateReplaceRootVolumeTaskResponse", rid, [task], None, True)

    def describe_root_tasks(self, req: Req) -> Response:
        """moto lacks DescribeReplaceRootVolumeTasks: the instance-id filter
        ("The ID of the instance for which the root volume replacement task was
        created."), MaxResults 1-50, NextToken.
        https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeReplaceRootVolumeTasks.html"""
        rid = req.request_id
        p = req.params
        ids: set[str] | None = None
        n = 1
        while f"Filter.{n}.Name" in p:
            name = p[f"Filter.{n}.Name"]
            if name != "instance-id":
                return ec2_error(400, "InvalidParameterValue", f"The filter '{name}' is invalid", rid)
            values, m = set(), 1
            while f"Filter.{n}.Value.{m}" in p:
                values.add(p[f"Filter.{n}.Value.{m}"])
                m += 1
            if len(values) > 200:
                return ec2_error(400, "FilterLimitExceeded", "The maximum number of filter values is 200", rid)
            ids = values
            n += 1
        wanted_ids, m = set(), 1
        while f"ReplaceRootVolumeTaskId.{m}" in p:
            wanted_ids.add(p[f"ReplaceRootVolumeTaskId.{m}"])
            m += 1
        raw_max = p.get("MaxResults")
        page = STAGE.config.page_size
        if raw_max is not None:
            try:
                max_results = int(raw_max)
            except ValueError:
                max_results = 0
            if not 1 <= max_results <= 50:
                return ec2_error(
                    400,
                    "InvalidParameterValue",
                    f"Value ( {raw_max} ) for parameter maxResults is invalid. Expecting a value between 1 and 50.",
                    rid,
                )
            page = max_results if page is None else min(page, max_results)
        offset = 0
        token = p.get("NextToken")
        if token is not None:
            offset = parse_token(token)
            if offset is None:
                return ec2_error(400, "InvalidParameterValue", f"Invalid NextToken value: {token}", rid)
        region = req.region or "us-east-1"
        now = time.time()
        with STAGE.lock:
            # A task not yet propagated is absent (visibility.task_seconds):
            # https://docs.aws.amazon.com/ec2/latest/devguide/eventual-consistency.html
            tasks = [
                t
                for t in STAGE.root_tasks
                if t["visible"] <= now
                and t["account"] == req.account
                and t["region"] == region
                and (ids is None or t["instance"] in ids)
                and (not wanted_ids or t["id"] in wanted_ids)
            ]
        end = len(tasks) if page is None else offset + page
        next_token = f"{TOKEN_PREFIX}{end}" if end < len(tasks) else None
        return 200, XML_TEXT, root_task_answer(
            "DescribeReplaceRootVolumeTasksResponse", rid, tasks[offset:end], next_token, False
        )

    # -- SSM DescribeInstanceInformation -----------------------------------------

    def describe_instance_information(self, req: Req) -> Response:
        """moto lacks DescribeInstanceInformation. MaxResults "Valid Range:
        Minimum value of 5. Maximum value of 50.", "The default value is 10
        items."; PingStatus "Online | ConnectionLost | Inactive".
        https://docs.aws.amazon.com/systems-manager/latest/APIReference/API_DescribeInstanceInformation.html
        Two points differ from AWS (kept because tests/stage.rs relies on them):
        AWS allows 1-100 filter values (API_InstanceInformationStringFilter.html),
        the stage 1-40; and "This operation does not return information for nodes
        that are either Stopped or Terminated.", where the stage answers stopped
        ones ConnectionLost."""
        rid = req.request_id
        body = req.json or {}
        max_results = body.get("MaxResults")
        if max_results is not None and (not isinstance(max_results, int) or not 5 <= max_results <= 50):
            return json_error(
                400,
                "ValidationException",
                f"1 validation error detected: Value '{max_results}' at 'maxResults' failed to satisfy "
                "constraint: Member must have value between 5 and 50",
                rid,
            )
        filters: dict[str, set[str]] = {}
        for f in body.get("Filters", []) or []:
            key, values = f.get("Key"), f.get("Values") or []
            if not 1 <= len(values) <= 40:
                return json_error(
                    400,
                    "ValidationException",
                    f"1 validation error detected: Value at 'filters.{key}.values' failed to satisfy "
                    "constraint: Member must have length between 1 and 40",
                    rid,
                )
            if key not in ("InstanceIds", "PingStatus", "PlatformTypes"):
                return json_error(
                    400,
                    "ValidationException",
                    f"The stage does not emulate the filter key {key}",
                    rid,
                )
            filters[key] = set(values)
        if body.get("InstanceInformationFilterList"):
            return json_error(
                400, "ValidationException", "The stage does not emulate InstanceInformationFilterList", rid
            )
        page = STAGE.config.page_size or SSM_DEFAULT_PAGE
        if max_results is not None:
            page = min(page, max_results) if STAGE.config.page_size else max_results
        token = body.get("NextToken")
        offset = 0
        if token is not None:
            offset = parse_token(token)
            if offset is None:
                return json_error(400, "InvalidNextToken", "The specified token is not valid.", rid)

        config = STAGE.config
        now = time.time()
        infos = []
        for inst in ec2_backends[req.account][req.region or "us-east-1"].all_instances():
            state = inst._state.name
            if inst.id in config.ssm_absent:
                continue
            if inst.id in config.ssm_pings:
                ping = config.ssm_pings[inst.id]
            elif state == "running":
                ping = "Online"
            elif state in ("terminated", "shutting-down"):
                continue
            else:
                ping = "ConnectionLost"
            platform = "Windows" if (inst.platform or "").lower() == "windows" else "Linux"
            info = {
                "InstanceId": inst.id,
                "PingStatus": ping,
                "LastPingDateTime": now,
                "AgentVersion": "3.3.987.0",
                "IsLatestVersion": False,
                "PlatformType": platform,
                "ResourceType": "EC2Instance",
                "IPAddress": inst.private_ip,
            }
            if "InstanceIds" in filters and inst.id not in filters["InstanceIds"]:
                continue
            if "PingStatus" in filters and ping not in filters["PingStatus"]:
                continue
            if "PlatformTypes" in filters and platform not in filters["PlatformTypes"]:
                continue
            infos.append(info)
        end = offset + page
        out: dict[str, Any] = {"InstanceInformationList": infos[offset:end]}
        if end < len(infos):
            out["NextToken"] = f"{TOKEN_PREFIX}{end}"
        return json_answer(200, out, rid)


XML_TEXT = [("Content-Type", "text/xml;charset=UTF-8")]


def root_task_tags(p: dict[str, str]) -> list[tuple[str, str]]:
    """The replace-root-volume-task tags of a CreateReplaceRootVolumeTask."""
    tags = []
    n = 1
    while f"TagSpecification.{n}.ResourceType" in p:
        if p[f"TagSpecification.{n}.ResourceType"] == "replace-root-volume-task":
            m = 1
            while f"TagSpecification.{n}.Tag.{m}.Key" in p:
                tags.append((p[f"TagSpecification.{n}.Tag.{m}.Key"], p.get(f"TagSpecification.{n}.Tag.{m}.Value", "")))
                m += 1
        n += 1
    return tags


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def root_task_state(task: dict[str, Any], now: float) -> tuple[str, str | None]:
    """A task's state now, and its completion time once it has one. TaskState
    "Valid Values: pending | in-progress | failing | succeeded | failed |
    failed-detached" https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_ReplaceRootVolumeTask.html"""
    secs = task["seconds"]
    done = task["created"] + secs
    if now >= done:
        return task["fate"], iso(done)
    if now < task["created"] + secs / 3:
        return "pending", None
    return "in-progress", None


def root_task_answer(
    root: str, request_id: str, tasks: list[dict[str, Any]], next_token: str | None, single: bool
) -> bytes:
    now = time.time()
    items = []
    for t in tasks:
        state, complete = root_task_state(t, now)
        tag_xml = "".join(
            f"<item><key>{xml_escape(k)}</key><value>{xml_escape(v)}</value></item>" for k, v in t["tags"]
        )
        items.append(
            f"<replaceRootVolumeTaskId>{t['id']}</replaceRootVolumeTaskId>"
            f"<instanceId>{t['instance']}</instanceId>"
            f"<taskState>{state}</taskState>"
            f"<startTime>{iso(t['created'])}</startTime>"
            + (f"<completeTime>{complete}</completeTime>" if complete else "")
            + f"<tagSet>{tag_xml}</tagSet>"
            f"<imageId>{t['image']}</imageId>"
            f"<deleteReplacedRootVolume>{str(t['delete']).lower()}</deleteReplacedRootVolume>"
        )
    if single:
        body = f"<replaceRootVolumeTask>{items[0]}</replaceRootVolumeTask>"
    else:
        body = "<replaceRootVolumeTaskSet>" + "".join(f"<item>{i}</item>" for i in items) + "</replaceRootVolumeTaskSet>"
        if next_token:
            body += f"<nextToken>{next_token}</nextToken>"
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<{root} xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>{request_id}</requestId>'
        f"{body}</{root}>"
    ).encode()


def with_request_id(answer: Response, request_id: str) -> Response:
    """moto's EC2 answers carry the literal `request-id`; AWS's a UUID, the
    same in the body and the x-amzn-RequestId header (the example error response
    carries "<RequestID>ea966190-f9aa-478e-9ede-example</RequestID>",
    https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html#api-error-response)."""
    status, headers, body = answer
    rid = request_id.encode()
    body = body.replace(b"<requestId>request-id</requestId>", b"<requestId>" + rid + b"</requestId>")
    body = body.replace(b"<RequestID>request-id</RequestID>", b"<RequestID>" + rid + b"</RequestID>")
    headers = [(k, v) for k, v in headers if k.lower() != "x-amzn-requestid"]
    headers.append(("x-amzn-RequestId", request_id))
    return status, headers, body


def parse_plain(body: bytes) -> tuple[ET.Element, str]:
    """Parses an answer in one XML namespace, leaving the tags without it
    (written back as a plain default xmlns, as AWS writes it)."""
    root = ET.fromstring(body)
    ns = root.tag[1:].split("}", 1)[0] if root.tag.startswith("{") else ""
    if ns:
        for el in root.iter():
            if el.tag.startswith("{"):
                el.tag = el.tag.split("}", 1)[1]
    return root, ns


def parse_token(token: str) -> int | None:
    if not token.startswith(TOKEN_PREFIX):
        return None
    try:
        n = int(token[len(TOKEN_PREFIX):])
    except ValueError:
        return None
    return n if n >= 0 else None


class QuietHandler(MotoRequestHandler):
    def log(self, type: str, message: str, *args: Any) -> None:  # noqa: A002
        pass

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        pass


def exit_on_stdin_eof() -> None:
    try:
        while sys.stdin.buffer.read(4096):
            pass
    finally:
        os._exit(0)


def aws_pages_markdown() -> str:
    rows = ["| behaviour | AWS page | stage config key |", "|---|---|---|"]
    rows += [f"| {b} | {u} | {k} |" for b, u, k in AWS_PAGES]
    return "\n".join(rows) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--aws-pages", action="store_true", help="print AWS_PAGES as markdown and exit")
    args = parser.parse_args()
    if args.aws_pages:
        print(aws_pages_markdown(), end="")
        return
    logging.getLogger("werkzeug").disabled = True
    install_patches()
    app = Middleware(DomainDispatcherApplication(create_backend_app))
    server = make_server(args.host, args.port, app, threaded=True, request_handler=QuietHandler)
    threading.Thread(target=exit_on_stdin_eof, daemon=True).start()
    host, port = server.server_address[:2]
    print(f"STAGE READY http://{host}:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
