//! Manifest parsing against files: the examples parse, and every file of the invalid corpus
//! (`tests/data/invalid/`) fails with its own specific error, naming the document, line and
//! field where they apply.

use std::path::{Path, PathBuf};

use pss_core::model::{parse_manifest_bytes, parse_manifests, ManifestError, Object};

/// What one invalid file must produce.
struct Expected {
    file: &'static str,
    /// A substring of the message.
    message: &'static str,
    document: Option<usize>,
    line: Option<usize>,
    field: Option<&'static str>,
}

const fn case(
    file: &'static str,
    document: Option<usize>,
    line: Option<usize>,
    field: Option<&'static str>,
    message: &'static str,
) -> Expected {
    Expected {
        file,
        message,
        document,
        line,
        field,
    }
}

/// The invalid corpus: every file in `tests/data/invalid/` has exactly one row.
const CORPUS: &[Expected] = &[
    case(
        "syntax-error.yaml",
        Some(1),
        Some(4),
        None,
        "invalid YAML: while parsing a flow mapping, did not find expected ',' or '}'",
    ),
    case(
        "unknown-kind.yaml",
        Some(1),
        Some(2),
        Some("kind"),
        "unknown kind \"Deployment\"",
    ),
    case(
        "missing-kind.yaml",
        Some(1),
        Some(1),
        Some("kind"),
        "required: one of Workload, Service, AutoScalePolicy",
    ),
    case(
        "missing-name.yaml",
        Some(1),
        Some(2),
        Some("metadata.name"),
        "required",
    ),
    case(
        "bad-name-uppercase.yaml",
        Some(1),
        Some(3),
        Some("metadata.name"),
        "invalid name \"My-App\"",
    ),
    case(
        "negative-replicas.yaml",
        Some(1),
        Some(4),
        Some("spec.replicas"),
        "must be >= 0, got -1",
    ),
    case(
        "replicas-wrong-type.yaml",
        Some(1),
        Some(4),
        Some("spec.replicas"),
        "invalid type: string \"three\", expected an integer",
    ),
    case(
        "min-greater-than-max.yaml",
        Some(1),
        Some(6),
        Some("spec.maxReplicas"),
        "must be >= minReplicas (5), got 3",
    ),
    case(
        "percent-zero.yaml",
        Some(1),
        Some(7),
        Some("spec.cpu"),
        "between 1 and 100, got 0",
    ),
    case(
        "percent-101.yaml",
        Some(1),
        Some(8),
        Some("spec.memory"),
        "between 1 and 100, got 101",
    ),
    case(
        "no-autoscale-target.yaml",
        Some(1),
        Some(3),
        Some("spec"),
        "set a target: cpu, memory or both",
    ),
    case(
        "container-port-70000.yaml",
        Some(1),
        Some(9),
        Some("spec.podSpec.ports[1].containerPort"),
        "must be a port between 1 and 65535, got 70000",
    ),
    case(
        "service-port-zero.yaml",
        Some(1),
        Some(5),
        Some("spec.port"),
        "must be a port between 1 and 65535, got 0",
    ),
    case(
        "duplicate-container-names.yaml",
        Some(1),
        Some(8),
        Some("spec.podSpec.containers[1].name"),
        "duplicate container name \"web\" (also containers[0])",
    ),
    case(
        "bad-cpu-quantity.yaml",
        Some(1),
        Some(9),
        Some("spec.podSpec.containers[0].resources.cpu"),
        "invalid CPU quantity \"1 core\"",
    ),
    case(
        "bad-memory-quantity.yaml",
        Some(1),
        Some(10),
        Some("spec.podSpec.containers[1].resources.memory"),
        "invalid memory quantity \"32MB\"",
    ),
    case(
        "unknown-field-top-level.yaml",
        Some(1),
        Some(4),
        Some("status"),
        "unknown field `status`",
    ),
    case(
        "unknown-field-nested.yaml",
        Some(1),
        Some(8),
        Some("spec.podSpec.containers[0].imagePullPolicy"),
        "unknown field `imagePullPolicy`",
    ),
    case("empty.yaml", None, None, None, "no objects"),
    case("comments-only.yaml", None, None, None, "no objects"),
    case(
        "binary-garbage.bin",
        None,
        Some(1),
        None,
        "not UTF-8 text: invalid byte sequence at byte offset 0",
    ),
    case(
        "second-document-bad.yaml",
        Some(2),
        Some(17),
        Some("spec.targetPort"),
        "got -80",
    ),
    case(
        "wrong-api-version.yaml",
        Some(1),
        Some(1),
        Some("apiVersion"),
        "unsupported apiVersion \"apps/v1\"",
    ),
    case(
        "no-containers.yaml",
        Some(1),
        Some(6),
        Some("spec.podSpec.containers"),
        "at least one container",
    ),
    case(
        "duplicate-object.yaml",
        Some(2),
        Some(6),
        Some("metadata.name"),
        "duplicate Service \"my-service\": already defined in document 1",
    ),
    case(
        "probe-undeclared-port.yaml",
        Some(1),
        Some(10),
        Some("spec.podSpec.readinessProbe.port"),
        "port 8080 is not a declared containerPort (declared: 80)",
    ),
    case(
        "empty-image.yaml",
        Some(1),
        Some(7),
        Some("spec.podSpec.containers[0].image"),
        "must not be empty",
    ),
    case(
        "empty-env-name.yaml",
        Some(1),
        Some(10),
        Some("spec.podSpec.containers[0].env[1].name"),
        "must not be empty",
    ),
    case(
        "bad-probe-duration.yaml",
        Some(1),
        Some(8),
        Some("spec.podSpec.readinessProbe.interval"),
        "invalid duration \"2\"",
    ),
    case(
        "bad-placement.yaml",
        Some(1),
        Some(4),
        Some("spec.placement"),
        "unknown variant `random`, expected `spread` or `binpack`",
    ),
    case(
        "service-bad-workload-name.yaml",
        Some(1),
        Some(3),
        Some("spec.workload"),
        "invalid name \"my_app\"",
    ),
    case(
        "document-not-a-mapping.yaml",
        Some(1),
        Some(1),
        None,
        "expected a mapping with kind, metadata and spec",
    ),
    case(
        "missing-pod-spec.yaml",
        Some(1),
        Some(3),
        Some("spec"),
        "missing field `podSpec`",
    ),
];

fn invalid_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/invalid")
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples")
}

fn parse_file(path: &Path) -> Result<Vec<Object>, ManifestError> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    parse_manifest_bytes(&bytes, &path.file_name().unwrap().to_string_lossy())
}

#[test]
fn every_invalid_manifest_gives_its_specific_error() {
    let mut failures = Vec::new();
    for expected in CORPUS {
        let e = match parse_file(&invalid_dir().join(expected.file)) {
            Ok(objects) => {
                failures.push(format!(
                    "{}: parsed, {} objects",
                    expected.file,
                    objects.len()
                ));
                continue;
            }
            Err(e) => e,
        };
        eprintln!("{e}");
        let got = (e.document, e.line, e.field.as_deref());
        let want = (expected.document, expected.line, expected.field);
        if got != want || !e.message.contains(expected.message) || e.file != expected.file {
            failures.push(format!(
                "{}:\n  got  {got:?} {:?}\n  want {want:?} message containing {:?}",
                expected.file, e.message, expected.message
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn errors_display_file_document_line_and_field() {
    let e = parse_file(&invalid_dir().join("second-document-bad.yaml")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "second-document-bad.yaml: document 2 (line 17): spec.targetPort: must be a port between 1 and 65535, got -80"
    );
    let e = parse_file(&invalid_dir().join("syntax-error.yaml")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("syntax-error.yaml: document 1 (line 4, column 5): invalid YAML: "),
        "{e}"
    );
    let e = parse_file(&invalid_dir().join("empty.yaml")).unwrap_err();
    assert!(e.to_string().starts_with("empty.yaml: no objects"), "{e}");
}

#[test]
fn corpus_table_covers_every_file() {
    let mut on_disk: Vec<String> = std::fs::read_dir(invalid_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut in_table: Vec<String> = CORPUS.iter().map(|c| c.file.to_string()).collect();
    in_table.sort();
    assert_eq!(on_disk, in_table);
    assert!(CORPUS.len() >= 20);
}

#[test]
fn the_examples_parse() {
    let app = parse_file(&examples_dir().join("my-app.yaml")).unwrap();
    let [Object::Workload(w)] = app.as_slice() else {
        panic!("{app:?}")
    };
    assert_eq!((w.name.as_str(), w.replicas), ("my-app", 3));
    assert_eq!(w.pod_spec.containers[0].image, "localhost/pss-demo:latest");
    assert_eq!(
        w.pod_spec.containers[0].command,
        ["/bin/httpd", "-f", "-p", "80", "-h", "/www"]
    );
    assert_eq!(w.pod_spec.ports[0].container_port, 80);
    assert!(w.pod_spec.readiness_probe.is_some());

    let service = parse_file(&examples_dir().join("my-service.yaml")).unwrap();
    let [Object::Service(s)] = service.as_slice() else {
        panic!("{service:?}")
    };
    assert_eq!(
        (s.name.as_str(), s.workload.as_str(), s.port, s.target_port),
        ("my-service", "my-app", 80, 80)
    );

    let autoscaler = parse_file(&examples_dir().join("my-autoscaler.yaml")).unwrap();
    let [Object::AutoScalePolicy(p)] = autoscaler.as_slice() else {
        panic!("{autoscaler:?}")
    };
    assert_eq!(
        (
            p.workload.as_str(),
            p.min_replicas,
            p.max_replicas,
            p.cpu_percent,
            p.memory_percent
        ),
        ("my-app", 2, 10, Some(70), Some(80))
    );
}

#[test]
fn the_examples_combined_in_one_file_parse_in_order() {
    let combined = ["my-app.yaml", "my-service.yaml", "my-autoscaler.yaml"]
        .map(|f| std::fs::read_to_string(examples_dir().join(f)).unwrap())
        .join("---\n");
    let objects = parse_manifests(&combined, "combined.yaml").unwrap();
    let kinds: Vec<_> = objects.iter().map(|o| (o.kind(), o.name())).collect();
    assert_eq!(
        kinds,
        [
            ("Workload", "my-app"),
            ("Service", "my-service"),
            ("AutoScalePolicy", "my-autoscaler")
        ]
    );
}

#[test]
fn a_bad_document_after_the_examples_fails_the_whole_file_at_its_line() {
    let app = std::fs::read_to_string(examples_dir().join("my-app.yaml")).unwrap();
    let app_lines = app.lines().count();
    let text = format!(
        "{app}---\nkind: Service\nmetadata: {{name: s}}\nspec: {{workload: my-app, port: 70000}}\n"
    );
    let e = parse_manifests(&text, "apply.yaml").unwrap_err();
    assert_eq!(e.document, Some(2));
    assert_eq!(e.line, Some(app_lines + 4));
    assert_eq!(e.field.as_deref(), Some("spec.port"));
}
