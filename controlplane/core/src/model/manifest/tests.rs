//! The parser against hand-written manifests, and proptests: any valid workload written as
//! YAML parses back, and a bad field is reported at its document and line.

use super::*;
use crate::model::{
    format_cpu, format_memory, Container, EnvVar, Placement, PodSpec, PortSpec, Protocol,
    ReadinessProbe, Resources, Workload,
};
use proptest::prelude::*;

const APP: &str = "\
kind: Workload
metadata: {name: my-app}
spec:
  replicas: 3
  placement: binpack
  podSpec:
    containers:
      - name: web
        image: localhost/pss-demo:latest
        command: [\"/bin/httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/www\"]
        args: []
        env: [{name: GREETING, value: hello}]
        resources: {cpu: 100m, memory: 32Mi}
    ports:
      - containerPort: 80
    readinessProbe: {port: 80, interval: 2s, timeout: 1s}
";

/// The single object of `text`.
fn one(text: &str) -> Object {
    let mut objects = parse_manifests(text, "t.yaml").unwrap();
    assert_eq!(objects.len(), 1, "{objects:?}");
    objects.remove(0)
}

fn err(text: &str) -> ManifestError {
    parse_manifests(text, "t.yaml").expect_err("should fail")
}

#[test]
fn parses_the_canonical_workload() {
    let Object::Workload(w) = one(APP) else {
        panic!("not a workload")
    };
    assert_eq!(w.name, "my-app");
    assert_eq!(w.replicas, 3);
    assert_eq!(w.placement, Placement::Binpack);
    let c = &w.pod_spec.containers[0];
    assert_eq!(c.command, ["/bin/httpd", "-f", "-p", "80", "-h", "/www"]);
    assert_eq!(
        c.env,
        [EnvVar {
            name: "GREETING".into(),
            value: "hello".into()
        }]
    );
    assert_eq!(
        c.resources,
        Resources {
            cpu_millis: 100,
            memory_bytes: 32 << 20
        }
    );
    assert_eq!(
        w.pod_spec.ports,
        [PortSpec {
            container_port: 80,
            protocol: Protocol::Tcp
        }]
    );
    assert_eq!(
        w.pod_spec.readiness_probe,
        Some(ReadinessProbe {
            port: Some(80),
            interval_ms: 2000,
            timeout_ms: 1000
        })
    );
}

#[test]
fn defaults_fill_what_is_left_out() {
    let text = "apiVersion: pss/v1\nkind: Workload\nmetadata: {name: a}\nspec:\n  podSpec:\n    containers: [{name: c, image: i}]\n";
    let Object::Workload(w) = one(text) else {
        panic!("not a workload")
    };
    assert_eq!((w.replicas, w.placement), (1, Placement::Spread));
    assert_eq!(w.pod_spec.containers[0].resources, Resources::default());
    let svc = "kind: Service\nmetadata: {name: s}\nspec: {workload: a, port: 8080}\n";
    let Object::Service(s) = one(svc) else {
        panic!("not a service")
    };
    assert_eq!(s.target_port, 8080);
    let hpa = "kind: AutoScalePolicy\nmetadata: {name: h}\nspec: {workload: a, maxReplicas: 4, cpu: 50}\n";
    let Object::AutoScalePolicy(p) = one(hpa) else {
        panic!("not a policy")
    };
    assert_eq!(
        (p.min_replicas, p.cpu_percent, p.memory_percent),
        (1, Some(50), None)
    );
}

#[test]
fn error_names_file_document_line_and_field() {
    let text = format!(
        "{APP}---\n{}",
        APP.replace("replicas: 3", "replicas: -1")
            .replace("my-app", "b")
    );
    let e = err(&text);
    assert_eq!(e.document, Some(2));
    assert_eq!(e.field.as_deref(), Some("spec.replicas"));
    assert_eq!(e.line, Some(21));
    assert_eq!(
        e.to_string(),
        "t.yaml: document 2 (line 21): spec.replicas: must be >= 0, got -1"
    );
}

#[test]
fn nested_field_errors_point_at_the_field_line() {
    let text = APP.replace(
        "resources: {cpu: 100m, memory: 32Mi}",
        "resources:\n          cpu: 100m\n          memory: lots",
    );
    let e = err(&text);
    assert_eq!(
        e.field.as_deref(),
        Some("spec.podSpec.containers[0].resources.memory")
    );
    assert_eq!(e.line, Some(15));
    assert!(
        e.message.contains("invalid memory quantity \"lots\""),
        "{e}"
    );
}

#[test]
fn second_container_error_points_at_its_item() {
    let text = APP.replace(
        "    ports:",
        "      - name: Side\n        image: x\n    ports:",
    );
    let e = err(&text);
    assert_eq!(e.field.as_deref(), Some("spec.podSpec.containers[1].name"));
    assert_eq!(e.line, Some(14));
    assert!(e.message.contains("use lowercase"), "{e}");
}

#[test]
fn syntax_errors_have_line_and_column_without_duplication() {
    let e = err("kind: Workload\nmetadata: {name: a\n");
    assert_eq!(e.document, Some(1));
    assert!(e.line.is_some() && e.column.is_some(), "{e:?}");
    assert!(e.message.starts_with("invalid YAML: "), "{e}");
    let (line, column) = (e.line.unwrap(), e.column.unwrap());
    let primary = format!("at line {line} column {column}");
    assert!(
        !e.message.contains(&primary),
        "the location is in the fields: {e}"
    );
}

#[test]
fn unknown_fields_are_named() {
    let e = err(&APP.replace(
        "image: localhost",
        "imagePullPolicy: Always\n        image: localhost",
    ));
    assert_eq!(
        e.field.as_deref(),
        Some("spec.podSpec.containers[0].imagePullPolicy")
    );
    assert_eq!(e.line, Some(9));
    assert!(e.message.contains("unknown field `imagePullPolicy`"), "{e}");
}

#[test]
fn empty_documents_are_skipped_but_no_objects_is_an_error() {
    assert_eq!(
        parse_manifests(&format!("---\n{APP}---\n# end\n"), "t")
            .unwrap()
            .len(),
        1
    );
    for text in ["", "# nothing\n", "---\n---\n"] {
        let e = err(text);
        assert!(e.message.starts_with("no objects"), "{e}");
        assert_eq!(e.document, None);
    }
}

#[test]
fn invalid_utf8_reports_the_offset() {
    let e = parse_manifest_bytes(b"kind: Workload\n\xff\xfe", "bin").unwrap_err();
    assert!(e.message.contains("byte offset 15"), "{e}");
    assert_eq!(e.line, Some(2));
}

#[test]
fn commands_accept_unquoted_numbers() {
    let text = APP.replace("\"80\", \"-h\"", "80, \"-h\"");
    let Object::Workload(w) = one(&text) else {
        panic!("not a workload")
    };
    assert_eq!(w.pod_spec.containers[0].command[3], "80");
}

/// A string as a YAML double-quoted scalar (JSON strings are valid YAML).
fn quoted(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialise")
}

/// `w` written as a block-style manifest document.
fn render(w: &Workload) -> String {
    let mut out = format!(
            "kind: Workload\nmetadata:\n  name: {}\nspec:\n  replicas: {}\n  placement: {}\n  podSpec:\n    containers:\n",
            w.name,
            w.replicas,
            w.placement.as_str()
        );
    for c in &w.pod_spec.containers {
        let words = |v: &[String]| v.iter().map(|s| quoted(s)).collect::<Vec<_>>().join(", ");
        out += &format!(
            "      - name: {}\n        image: {}\n",
            c.name,
            quoted(&c.image)
        );
        out += &format!(
            "        command: [{}]\n        args: [{}]\n",
            words(&c.command),
            words(&c.args)
        );
        out += "        env:\n";
        for e in &c.env {
            out += &format!(
                "          - name: {}\n            value: {}\n",
                e.name,
                quoted(&e.value)
            );
        }
        out += &format!(
            "        resources:\n          cpu: {}\n          memory: {}\n",
            format_cpu(c.resources.cpu_millis),
            format_memory(c.resources.memory_bytes)
        );
    }
    out += "    ports:\n";
    for p in &w.pod_spec.ports {
        out += &format!(
            "      - containerPort: {}\n        protocol: {}\n",
            p.container_port,
            p.protocol.as_str()
        );
    }
    if let Some(probe) = &w.pod_spec.readiness_probe {
        out += "    readinessProbe:\n";
        if let Some(port) = probe.port {
            out += &format!("      port: {port}\n");
        }
        out += &format!(
            "      interval: {}ms\n      timeout: {}ms\n",
            probe.interval_ms, probe.timeout_ms
        );
    }
    out
}

fn container_strategy(index: usize) -> impl Strategy<Value = Container> {
    let words = prop::collection::vec("[ -~]{0,12}", 0..4);
    let env = prop::collection::vec(("[A-Z_][A-Z0-9_]{0,8}", "[ -~]{0,10}"), 0..3);
    (
        "[a-z]{1,8}",
        "[a-z]{1,10}(/[a-z]{1,10})?(:[a-z0-9.]{1,6})?",
        words.clone(),
        words,
        env,
        0u64..100_000,
        0u64..(1 << 40),
    )
        .prop_map(
            move |(name, image, command, args, env, cpu_millis, memory_bytes)| Container {
                liveness_probe: None,
                limits: None,
                name: format!("{name}{index}"),
                image,
                command,
                args,
                env: env
                    .into_iter()
                    .map(|(name, value)| EnvVar { name, value })
                    .collect(),
                resources: Resources {
                    cpu_millis,
                    memory_bytes,
                },
            },
        )
}

fn workload_strategy() -> impl Strategy<Value = Workload> {
    let containers =
        (1usize..4).prop_flat_map(|n| (0..n).map(container_strategy).collect::<Vec<_>>());
    let ports = prop::collection::btree_set((1u16..=65535, any::<bool>()), 0..3);
    let probe = (any::<bool>(), 1u64..60_000, 1u64..10_000);
    let placement = prop_oneof![Just(Placement::Spread), Just(Placement::Binpack)];
    (
        "[a-z]([a-z0-9-]{0,20}[a-z0-9])?",
        0u32..1000,
        placement,
        containers,
        ports,
        probe,
    )
        .prop_map(
            |(
                name,
                replicas,
                placement,
                containers,
                ports,
                (first_port, interval_ms, timeout_ms),
            )| {
                let ports: Vec<PortSpec> = ports
                    .into_iter()
                    .map(|(container_port, udp)| PortSpec {
                        container_port,
                        protocol: if udp { Protocol::Udp } else { Protocol::Tcp },
                    })
                    .collect();
                let readiness_probe = ports.first().map(|p| ReadinessProbe {
                    port: (!first_port).then_some(p.container_port),
                    interval_ms,
                    timeout_ms,
                });
                Workload {
                    labels: Default::default(),
                    rollout: Default::default(),
                    name,
                    replicas,
                    placement,
                    pod_spec: PodSpec {
                        restart_policy: Default::default(),
                        restarted_at_ms: 0,
                        containers,
                        ports,
                        readiness_probe,
                    },
                }
            },
        )
}

proptest! {
    #[test]
    fn any_valid_workload_written_as_yaml_parses_back(w in workload_strategy()) {
        let text = render(&w);
        prop_assert_eq!(parse_manifests(&text, "t").map_err(|e| e.to_string()), Ok(vec![Object::Workload(w)]));
    }

    #[test]
    fn a_bad_field_in_any_document_is_reported_at_its_document_and_line(
        workloads in prop::collection::vec(workload_strategy(), 1..4),
        bad in any::<prop::sample::Index>(),
    ) {
        let bad = bad.index(workloads.len());
        let docs: Vec<String> = workloads
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let w = Workload { name: format!("w{i}"), ..w.clone() };
                let doc = render(&w);
                if i == bad { doc.replacen(&format!("  replicas: {}\n", w.replicas), "  replicas: -7\n", 1) } else { doc }
            })
            .collect();
        let text = docs.join("---\n");
        let line = 1 + text[..text.find("replicas: -7").unwrap()].matches('\n').count();
        let e = parse_manifests(&text, "t").unwrap_err();
        prop_assert_eq!(e.document, Some(bad + 1));
        prop_assert_eq!(e.line, Some(line));
        prop_assert_eq!(e.field.as_deref(), Some("spec.replicas"));
        prop_assert_eq!(e.message, "must be >= 0, got -7");
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        let _ = parse_manifests(&text, "t");
    }
}

#[test]
fn documents_are_numbered_among_those_that_hold_something() {
    // The parser skips empty documents before the decoder sees them, so a stray `---` or a
    // comments-only document does not count; lines are the parser's and stay exact.
    let bad = APP
        .replace("replicas: 3", "replicas: -1")
        .replace("my-app", "b");
    let text = format!("{APP}---\n# nothing here\n---\n---\n{bad}");
    let e = err(&text);
    assert_eq!(e.document, Some(2));
    let line = 1 + text[..text.find("replicas: -1").unwrap()]
        .matches('\n')
        .count();
    assert_eq!(e.line, Some(line));
}

#[test]
fn yaml_1_1_booleans_and_leading_zeros_stay_text() {
    let text = APP.replace(
        "env: [{name: GREETING, value: hello}]",
        "env: [{name: A, value: yes}, {name: B, value: 0755}, {name: C, value: 1_000}]",
    );
    let Object::Workload(w) = one(&text) else {
        panic!("not a workload")
    };
    let values: Vec<&str> = w.pod_spec.containers[0]
        .env
        .iter()
        .map(|e| e.value.as_str())
        .collect();
    assert_eq!(values, ["yes", "0755", "1_000"]);
}

/// A workload whose first container has `resources` as given (indented for a container).
fn with_resources(resources: &str) -> String {
    format!(
        "kind: Workload\nmetadata: {{name: r}}\nspec:\n  podSpec:\n    containers:\n      - name: c\n        image: i\n        resources: {resources}\n"
    )
}

fn container_of(text: &str) -> crate::model::Container {
    let Object::Workload(w) = one(text) else {
        panic!("not a workload")
    };
    w.pod_spec.containers[0].clone()
}

#[test]
fn resources_take_the_seed_form_and_kubernetes_requests_and_limits() {
    let mi = |n: u64| n * 1024 * 1024;
    // The seed's flat form: requests, enforced as limits too.
    let c = container_of(&with_resources("{cpu: 100m, memory: 64Mi}"));
    assert_eq!(c.resources.cpu_millis, 100);
    assert_eq!(c.limits, None);
    assert_eq!(c.effective_limits(), c.resources);
    // Kubernetes' form.
    let c = container_of(&with_resources(
        "{requests: {cpu: 100m, memory: 64Mi}, limits: {cpu: 500m, memory: 128Mi}}",
    ));
    assert_eq!(
        (c.resources.cpu_millis, c.resources.memory_bytes),
        (100, mi(64))
    );
    assert_eq!(
        c.effective_limits(),
        Resources {
            cpu_millis: 500,
            memory_bytes: mi(128)
        }
    );
    // Requests only: no limit. Limits only: requests equal them.
    let c = container_of(&with_resources("{requests: {cpu: 100m}}"));
    assert_eq!(c.effective_limits(), Resources::default());
    let c = container_of(&with_resources("{limits: {memory: 32Mi}}"));
    assert_eq!(c.resources.memory_bytes, mi(32));
    assert_eq!(c.effective_limits().memory_bytes, mi(32));
    // Mixed forms, and a request above its limit, are refused with their field.
    let e = err(&with_resources("{cpu: 1, limits: {cpu: 2}}"));
    assert!(e.to_string().contains("not both"), "{e}");
    let e = err(&with_resources("{requests: {cpu: 2}, limits: {cpu: 1}}"));
    assert!(
        e.to_string()
            .contains("resources.requests.cpu: the request (2000) is above the limit (1000)"),
        "{e}"
    );
}

#[test]
fn restart_policy_and_its_hash() {
    let base = "kind: Workload\nmetadata: {name: r}\nspec:\n  podSpec:\n    containers: [{name: c, image: i}]\n";
    let Object::Workload(always) = one(base) else {
        panic!()
    };
    let never = base.replace(
        "    containers:",
        "    restartPolicy: Never\n    containers:",
    );
    let Object::Workload(never) = one(&never) else {
        panic!()
    };
    assert_eq!(
        never.pod_spec.restart_policy,
        crate::model::RestartPolicy::Never
    );
    // Always (the default) keeps the hash a spec had before the field existed.
    assert_eq!(
        always.pod_spec.spec_hash(),
        PodSpec {
            restart_policy: Default::default(),
            ..always.pod_spec.clone()
        }
        .spec_hash()
    );
    assert!(!serde_json::to_string(&always.pod_spec)
        .unwrap()
        .contains("restart_policy"));
    assert_ne!(always.pod_spec.spec_hash(), never.pod_spec.spec_hash());
    let e = err(&base.replace(
        "    containers:",
        "    restartPolicy: Sometimes\n    containers:",
    ));
    assert!(e.to_string().contains("spec.podSpec.restartPolicy"), "{e}");
}

#[test]
fn liveness_probes_tcp_or_exec() {
    let with = |probe: &str| {
        format!(
            "kind: Workload\nmetadata: {{name: l}}\nspec:\n  podSpec:\n    containers:\n      - name: c\n        image: i\n        livenessProbe: {probe}\n    ports: [{{containerPort: 80}}]\n"
        )
    };
    let c = container_of(&with("{tcpSocket: {port: 80}}"));
    let p = c.liveness_probe.unwrap();
    assert_eq!(p.check, crate::model::LivenessCheck::Tcp { port: 80 });
    assert_eq!((p.interval_ms, p.failure_threshold), (10_000, 3));
    let c = container_of(&with(
        "{exec: {command: [test, -f, /tmp/ok]}, interval: 2s, failureThreshold: 5, initialDelay: 1s}",
    ));
    let p = c.liveness_probe.unwrap();
    assert_eq!(
        p.check,
        crate::model::LivenessCheck::Exec {
            command: vec!["test".into(), "-f".into(), "/tmp/ok".into()]
        }
    );
    assert_eq!(
        (p.interval_ms, p.failure_threshold, p.initial_delay_ms),
        (2000, 5, 1000)
    );
    let e = err(&with("{tcpSocket: {port: 81}}"));
    assert!(
        e.to_string().contains("livenessProbe.tcpSocket.port"),
        "{e}"
    );
    let e = err(&with("{tcpSocket: {port: 80}, exec: {command: [x]}}"));
    assert!(e.to_string().contains("exactly one"), "{e}");
    let e = err(&with("{exec: {command: [x]}, failureThreshold: 0}"));
    assert!(e.to_string().contains("failureThreshold"), "{e}");
}
