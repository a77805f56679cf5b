//! What `dist/kubernetes/` gives a cluster: every YAML document parses and has the basic
//! shape (apiVersion, kind, metadata.name), the workloads are what the README promises, the
//! configurations in the ConfigMaps load through the real binary, and, where
//! kubernetes-validate is installed (scripts/test installs it), every document validates
//! against Kubernetes' own schemas, which that package ships (no network needed).
//!
//! YAML is read by python3's PyYAML rather than by a Rust crate the project would otherwise
//! not need. `SHOAL_TEST_PYTHON` names the python to use (scripts/test points it at the
//! virtualenv that holds kubernetes-validate); `python3` otherwise.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use tempfile::TempDir;

mod common;
use common::finish;

/// Prints every YAML document of the files named as arguments, as one JSON array.
const YAML_TO_JSON: &str = r#"
import json, sys, yaml
docs = []
for path in sys.argv[1:]:
    with open(path) as f:
        docs += [{"file": path, "doc": d} for d in yaml.safe_load_all(f) if d is not None]
json.dump(docs, sys.stdout)
"#;

fn manifests() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    files
}

fn python(args: &[&str], files: &[PathBuf]) -> Option<Output> {
    let python = std::env::var("SHOAL_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    Command::new(python).args(args).args(files).output().ok()
}

/// A python with PyYAML, or why not.
fn documents(files: &[PathBuf]) -> Result<Vec<Value>, String> {
    let out = python(&["-c", YAML_TO_JSON], files).ok_or("python3 is not installed")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("No module named 'yaml'") {
        return Err("python3 has no PyYAML (apt-get install python3-yaml)".into());
    }
    assert!(out.status.success(), "reading the manifests: {stderr}");
    Ok(serde_json::from_slice(&out.stdout).unwrap())
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .map(|d| &d["doc"])
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn manifests_have_the_promised_shape() {
    let files = manifests();
    let docs = match documents(&files) {
        Ok(docs) => docs,
        Err(why) => {
            println!("SKIP: {why}: dist/kubernetes is not checked");
            return;
        }
    };
    let mut seen = std::collections::HashSet::new();
    for entry in &docs {
        let doc = &entry["doc"];
        let (file, kind, name) = (&entry["file"], &doc["kind"], &doc["metadata"]["name"]);
        assert!(doc["apiVersion"].is_string(), "{file}: {doc}");
        assert!(kind.is_string() && name.is_string(), "{file}: {doc}");
        assert!(
            seen.insert(format!("{kind}/{name}")),
            "{file}: {kind} {name} twice"
        );
        if kind != "Namespace" {
            assert_eq!(
                doc["metadata"]["namespace"], "shoal",
                "{file}: {kind} {name}"
            );
        }
    }

    let tracker = find(&docs, "Deployment", "shoal-tracker");
    assert_eq!(tracker["spec"]["replicas"], 2);
    find(&docs, "Service", "shoal-tracker");
    find(&docs, "Deployment", "shoal-redis");
    find(&docs, "Service", "shoal-redis");
    let agent = find(&docs, "DaemonSet", "shoal-agent");
    let pod = &agent["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    let volumes = pod["volumes"].as_array().unwrap();
    assert!(volumes
        .iter()
        .any(|v| v["hostPath"]["path"] == "/var/lib/shoal-agent"));
    assert!(volumes
        .iter()
        .any(|v| v["secret"]["secretName"] == "shoal-agent-token"));

    // Each daemon reads the configuration its ConfigMap holds, and the binary accepts it.
    let dir = TempDir::new().unwrap();
    for (workload, daemon) in [(tracker, "tracker"), (agent, "agent")] {
        let key = format!("{daemon}.toml");
        let container = &workload["spec"]["template"]["spec"]["containers"][0];
        let args: Vec<&str> = container["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(args, [daemon, "--config", &format!("/etc/shoal/{key}")]);
        let config = find(&docs, "ConfigMap", &format!("shoal-{daemon}"));
        let path = dir.path().join(&key);
        std::fs::write(&path, config["data"][&key].as_str().unwrap()).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_shoal"))
            .args([daemon, "--config", path.to_str().unwrap(), "--print-config"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = finish(child);
        assert_eq!(out.code, 0, "{key} from the ConfigMap: {}", out.stderr);
    }
}

#[test]
fn manifests_validate_against_kubernetes_schemas() {
    let files = manifests();
    let probe = python(&["-c", "import kubernetes_validate"], &[]);
    if !probe.is_some_and(|out| out.status.success()) {
        println!(
            "SKIP: kubernetes-validate is not installed (pip install kubernetes-validate; \
             scripts/test installs it): dist/kubernetes is not checked against the schemas"
        );
        return;
    }
    let out = python(
        &["-m", "kubernetes_validate", "--strict", "--quiet"],
        &files,
    )
    .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
