#!/usr/bin/env python3
# SPDX-License-Identifier: MPL-2.0
"""Checks the deployment files offline, each against what reads it:

- the Kubernetes manifests against the Kubernetes schemas (kubernetes-validate);
- the KEDA ScaledObject and TriggerAuthentication against the fields KEDA
  documents (keda.sh/docs/2.15/reference/scaledobject-spec, scalers/aws-sqs);
- the ECS task definition, the ECS service and the autoscaling policy against
  botocore's service models (RegisterTaskDefinition, CreateService,
  PutScalingPolicy), as the AWS CLI checks them before it sends anything.

    python3 deploy/validate.py [FILE...]   (default: every file under deploy/)

Prints one line per document and exits 1 if any is invalid.
"""

import json
import os
import subprocess
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
KUBERNETES_VERSION = "1.30"

# What KEDA documents, as nested dicts of allowed keys; "*" allows any keys
# below, and a list wraps the schema of its items. Keys ending in "!" are
# required.
_TRIGGER = {
    "type!": str,
    "metadata!": {"*": str},
    "name": str,
    "useCachedMetrics": bool,
    "authenticationRef": {"name!": str, "kind": str},
    "metricType": str,
}
_SQS_METADATA = {
    "queueURL",
    "queueURLFromEnv",
    "queueLength",
    "activationQueueLength",
    "scaleOnInFlight",
    "scaleOnDelayed",
    "awsRegion",
    "awsEndpoint",
    "identityOwner",
}
KEDA = {
    "ScaledObject": {
        "scaleTargetRef!": {
            "apiVersion": str,
            "kind": str,
            "name!": str,
            "envSourceContainerName": str,
        },
        "pollingInterval": int,
        "cooldownPeriod": int,
        "initialCooldownPeriod": int,
        "idleReplicaCount": int,
        "minReplicaCount": int,
        "maxReplicaCount": int,
        "fallback": {"failureThreshold!": int, "replicas!": int},
        "advanced": {
            "restoreToOriginalReplicaCount": bool,
            "horizontalPodAutoscalerConfig": {"name": str, "behavior": {"*": object}},
            "scalingModifiers": {
                "target!": str,
                "activationTarget": str,
                "metricType": str,
                "formula!": str,
            },
        },
        "triggers!": [_TRIGGER],
    },
    "TriggerAuthentication": {
        "podIdentity": {
            "provider!": str,
            "identityId": str,
            "roleArn": str,
            "identityOwner": str,
        },
        "secretTargetRef": [{"parameter!": str, "name!": str, "key!": str}],
        "env": [{"parameter!": str, "name!": str, "containerName": str}],
    },
}


def check_shape(value, schema, where):
    """The problems of `value` against `schema`, as strings."""
    if isinstance(schema, list):
        if not isinstance(value, list):
            return [f"{where}: a list is expected"]
        return [p for i, v in enumerate(value) for p in check_shape(v, schema[0], f"{where}[{i}]")]
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            return [f"{where}: a mapping is expected"]
        if "*" in schema:
            return []
        problems = []
        keys = {k.rstrip("!"): k for k in schema}
        for key in value:
            if key not in keys:
                problems.append(f"{where}.{key}: not a field KEDA documents")
        for key, raw in keys.items():
            if raw.endswith("!") and key not in value:
                problems.append(f"{where}.{key}: required")
            elif key in value:
                problems += check_shape(value[key], schema[raw], f"{where}.{key}")
        return problems
    if schema is object or isinstance(value, schema) and not (schema is int and isinstance(value, bool)):
        return []
    return [f"{where}: {schema.__name__} expected, not {value!r}"]


def check_keda(doc):
    kind = doc.get("kind")
    problems = check_shape(doc.get("spec"), KEDA[kind], f"{kind}.spec")
    if kind == "ScaledObject":
        for i, trigger in enumerate(doc["spec"].get("triggers", [])):
            if trigger.get("type") == "aws-sqs-queue":
                meta = trigger.get("metadata", {})
                for key in meta:
                    if key not in _SQS_METADATA:
                        problems.append(f"triggers[{i}].metadata.{key}: not an aws-sqs-queue parameter")
                if "queueURL" not in meta and "queueURLFromEnv" not in meta:
                    problems.append(f"triggers[{i}].metadata: queueURL or queueURLFromEnv is required")
                if "awsRegion" not in meta:
                    problems.append(f"triggers[{i}].metadata.awsRegion: required")
    return problems


def check_kubernetes(path, doc):
    """kubernetes-validate on one document (it reads files)."""
    if doc.get("apiVersion", "").startswith("keda.sh/"):
        return check_keda(doc)
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(doc, f)
    try:
        run = subprocess.run(
            [sys.executable, "-m", "kubernetes_validate", "--strict",
             "--kubernetes-version", KUBERNETES_VERSION, f.name],
            capture_output=True, text=True,
        )
    finally:
        os.unlink(f.name)
    if run.returncode == 0:
        return []
    out = (run.stdout + run.stderr).replace(f.name, path).strip()
    return [line for line in out.splitlines() if line.strip()] or [f"exit {run.returncode}"]


# Which botocore operation takes each ECS file as its input.
AWS_FILES = {
    "task-definition.json": ("ecs", "RegisterTaskDefinition"),
    "service.json": ("ecs", "CreateService"),
    "autoscaling.json": ("application-autoscaling", "PutScalingPolicy"),
}


def check_aws(path, params):
    import botocore.session
    from botocore.validate import ParamValidator

    service, operation = AWS_FILES[os.path.basename(path)]
    model = botocore.session.get_session().get_service_model(service)
    shape = model.operation_model(operation).input_shape
    report = ParamValidator().validate(params, shape)
    if not report.has_errors():
        return []
    return [line.strip() for line in report.generate_report().splitlines() if line.strip()]


def documents(path):
    with open(path) as f:
        if path.endswith(".json"):
            return [json.load(f)]
        return [d for d in yaml.safe_load_all(f) if d]


def check(path):
    """(label, problems) for each document in the file."""
    out = []
    for doc in documents(path):
        if path.endswith(".json"):
            service, operation = AWS_FILES[os.path.basename(path)]
            out.append((f"{service} {operation}", check_aws(path, doc)))
        else:
            out.append((f"{doc.get('kind')} {doc.get('metadata', {}).get('name')}", check_kubernetes(path, doc)))
    return out


def main(paths):
    if not paths:
        paths = sorted(
            os.path.join(root, name)
            for root, _, names in os.walk(HERE)
            for name in names
            if name.endswith((".yaml", ".yml")) or name in AWS_FILES
        )
    failed = False
    for path in paths:
        for label, problems in check(path):
            shown = os.path.relpath(os.path.abspath(path), os.path.dirname(HERE))
            if problems:
                failed = True
                print(f"INVALID {shown}: {label}")
                for p in problems:
                    print(f"    {p}")
            else:
                print(f"valid   {shown}: {label}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
